"""Study text shared by the plugin tests: the smallest real run (tiny-llama, 4 prompts, 4 tokens each)."""

FAST = """
model: builtin:tiny-llama
precision: fp32
n: 4
max_output_tokens: 4
decoder: {preset: deterministic, min_new_tokens: 4}
baseline: {enabled: false}  # 30 s of idle per session where a GPU or RAPL is readable
"""

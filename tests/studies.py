"""Study text shared by the plugin tests: the smallest real run (tiny-llama, 4 prompts, 4 tokens each)."""

FAST = """
model: builtin:tiny-llama
precision: fp32
n: 4
max_output_tokens: 4
decoder: {preset: deterministic, min_new_tokens: 4}
"""

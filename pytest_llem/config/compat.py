"""What each backend can run on each platform: one table per backend, consulted while validating a config.

A combination outside these tables is an invalid config (a skipped config at collection), never a crash at run time.
"""

from __future__ import annotations

from .platform import Platform

# transformers runs every dtype everywhere (fp16 on CPU is slow but real).
PYTORCH_PRECISIONS: dict[Platform, frozenset[str]] = {
    "cuda": frozenset({"fp32", "fp16", "bf16"}),
    "cpu": frozenset({"fp32", "fp16", "bf16"}),
}
# vLLM's CUDA kernels are half-precision (its docs); its CPU backend supports FP32 and BF16 only.
VLLM_PRECISIONS: dict[Platform, frozenset[str]] = {
    "cuda": frozenset({"fp16", "bf16"}),
    "cpu": frozenset({"fp32", "bf16"}),
}
PRECISIONS_BY_BACKEND: dict[str, dict[Platform, frozenset[str]]] = {
    "pytorch": PYTORCH_PRECISIONS,
    "vllm": VLLM_PRECISIONS,
}

# Options of the pytorch section that need a CUDA GPU (bitsandbytes kernels, FlashAttention).
PYTORCH_CUDA_ONLY: dict[str, str] = {
    "load_in_4bit": "bitsandbytes 4-bit loading needs a CUDA GPU",
    "load_in_8bit": "bitsandbytes 8-bit loading needs a CUDA GPU",
}
PYTORCH_CUDA_ONLY_ATTENTION = frozenset({"flash_attention_2", "flash_attention_3"})


def precision_problem(backend: str, precision: str, platform: Platform) -> str | None:
    """Why ``backend`` cannot run ``precision`` on ``platform``, or None when it can (a plugin's backend decides
    for itself)."""
    if backend not in PRECISIONS_BY_BACKEND:
        return None
    allowed = PRECISIONS_BY_BACKEND[backend][platform]
    if precision in allowed:
        return None
    return f"precision: {backend} cannot run {precision} on {platform} (it runs {', '.join(sorted(allowed))} there)"

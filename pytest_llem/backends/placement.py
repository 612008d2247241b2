"""Which GPUs an experiment's engine runs on, decided from its config before anything loads (and without CUDA), so
that the meter measures those and not every GPU of the machine: on an 8-GPU node a one-GPU model's energy would
otherwise carry seven idle GPUs."""

from __future__ import annotations

import sys
from typing import Any

from ..config.backend_sections import PyTorchConfig, VLLMConfig
from ..config.models import ExperimentConfig
from ..config.platform import Platform, detect_platform
from ..energy.meter import GpuScope

# device_map values with which accelerate spreads the model over every GPU it may use.
SPREADING_MAPS = frozenset({"auto", "balanced", "balanced_low_0", "sequential"})
ON_CPU = GpuScope(None, "every visible GPU: the engine runs on the CPU")
SERVER_ELSEWHERE = GpuScope(None, "every visible GPU: serving.url's server may use any (energy.gpu_indices narrows it)")


def gpu_scope(config: ExperimentConfig, platform: Platform | None = None) -> GpuScope:
    """``energy.gpu_indices`` when the study says; else the GPUs the engine will use on ``platform`` (this process's
    by default); every visible GPU when it runs on the CPU or its backend does not say."""
    chosen = config.energy.gpu_indices
    if chosen is not None:
        return GpuScope.of_study(chosen)
    if config.serving is not None and config.serving.url is not None:
        return SERVER_ELSEWHERE
    if (platform or _engine_platform(config.backend)) == "cpu":
        return ON_CPU
    if config.backend == "pytorch":
        return _pytorch(config)
    if config.backend == "vllm":
        return _vllm(config)
    return GpuScope(None, f"every visible GPU: backend {config.backend!r} does not say which it uses")


def _engine_platform(backend: str) -> Platform:
    """Where the engine will run: on the GPUs when this process has some, except for a pytorch engine whose torch
    (already imported in an item's process) was built without CUDA."""
    torch = sys.modules.get("torch")
    if backend == "pytorch" and torch is not None and not (torch.version.cuda or torch.version.hip):
        return "cpu"
    return detect_platform()


def _pytorch(config: ExperimentConfig) -> GpuScope:
    section = config.pytorch or PyTorchConfig()
    device_map = (config.passthrough_kwargs or {}).get("device_map", section.device_map)
    if device_map is None:
        return GpuScope((0,), "the model is placed on cuda:0")
    if isinstance(device_map, dict):  # module → device, as passthrough_kwargs may give it
        devices = sorted({i for i in map(_cuda_index, device_map.values()) if i is not None})
        if not devices:
            return ON_CPU
        return GpuScope(tuple(devices), f"device_map places the model on {', '.join(f'cuda:{i}' for i in devices)}")
    if str(device_map) in SPREADING_MAPS:
        limited = sorted({i for i in map(_cuda_index, (section.max_memory or {}).keys()) if i is not None})
        if limited:
            return GpuScope(tuple(limited), f"device_map: {device_map} over the GPUs max_memory names")
        return GpuScope(None, f"device_map: {device_map} spreads the model over every visible GPU")
    index = _cuda_index(device_map)
    if index is None:
        return GpuScope(None, f"every visible GPU: device_map {device_map!r} puts the model on the CPU")
    return GpuScope((index,), f"device_map: {device_map}")


def _cuda_index(device: Any) -> int | None:
    """The CUDA index a device_map / max_memory entry names (``0``, ``"1"``, ``"cuda"``, ``"cuda:2"``), else None."""
    if isinstance(device, int) and not isinstance(device, bool):
        return device
    text = str(device).strip()
    if text.isdigit():
        return int(text)
    if text == "cuda":
        return 0
    if text.startswith("cuda:") and text[5:].isdigit():
        return int(text[5:])
    return None


def _vllm(config: ExperimentConfig) -> GpuScope:
    section = config.vllm or VLLMConfig()
    engine = section.engine.model_dump(exclude_none=True) if section.engine is not None else {}
    engine.update(config.passthrough_kwargs or {})
    tensor = int(engine.get("tensor_parallel_size") or 1)
    pipeline = int(engine.get("pipeline_parallel_size") or 1)
    count = tensor * pipeline
    if count == 1:
        return GpuScope((0,), "vLLM runs on the first visible GPU")
    return GpuScope(
        tuple(range(count)),
        f"vLLM uses the first {count} visible GPUs (tensor_parallel_size {tensor} × pipeline_parallel_size {pipeline})",
    )

"""pytest-llem: LLM inference energy benchmarks as pytest test cases.

The library part (configuration, grid, workload, backends, results) imports nothing from pytest; the plugin lives in
``pytest_llem.plugin`` and is registered through the ``pytest11`` entry point.
"""

from .config.models import CycleOrder, ExecutionConfig, ExperimentConfig, StudyConfig
from .errors import ConfigError
from .study.grid import SkippedConfig, apply_cycles, compute_study_design_hash, expand_grid

__all__ = [
    "ConfigError",
    "CycleOrder",
    "ExecutionConfig",
    "ExperimentConfig",
    "SkippedConfig",
    "StudyConfig",
    "apply_cycles",
    "compute_study_design_hash",
    "expand_grid",
]
__version__ = "0.1.0"

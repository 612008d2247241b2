"""Identity of experiments and studies: 16 hex of SHA-256 over canonical JSON (sorted keys, every default filled in)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from ..config.models import ExperimentConfig


def _digest(canonical_json: str) -> str:
    return hashlib.sha256(canonical_json.encode()).hexdigest()[:16]


def compute_config_hash(experiment: ExperimentConfig) -> str:
    """16 hex identifying one experiment's settings (its identity across runs and files)."""
    return _digest(experiment.identity_json)


def compute_study_design_hash(experiments: Sequence[ExperimentConfig]) -> str:
    """16 hex over the unique experiments in order; execution settings are excluded so topping up cycles keeps it.

    The same bytes as ``json.dumps([identity, ...], sort_keys=True)``, built from each experiment's cached JSON.
    """
    return _digest("[" + ", ".join(e.identity_json for e in experiments) + "]")

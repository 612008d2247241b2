from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def heavy_modules_loaded_once(llem_cache_dir: Path) -> None:
    """pytester's in-process runs drop the modules first imported inside them, and torch/transformers cannot be
    imported twice in one process: run one real experiment first, so every module the backend needs is loaded."""
    import multiprocessing.forkserver  # noqa: F401  (kept across pytester runs: one forkserver for the whole suite)

    import zeus.monitor  # noqa: F401  (3 s to import: once, not in every pytester run)

    import pytest_llem.energy.zeus
    import pytest_llem.runner.isolation  # noqa: F401
    from pytest_llem.config.models import ExperimentConfig
    from pytest_llem.runner.execute import run_experiment

    run_experiment(
        ExperimentConfig(
            model="builtin:tiny-llama", precision="fp32", n=1, max_output_tokens=2, baseline={"enabled": False}
        ),
        cache_dir=llem_cache_dir,
    )

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# Property tests check logic, not speed: no per-example deadline (200 ms by default) and no "too slow" health check,
# which a busy or slow machine would turn into failures.
settings.register_profile("llem", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("llem")


@pytest.fixture(scope="session", autouse=True)
def llem_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built-in models are materialised once per test session (or where LLEM_CACHE_DIR points, to reuse them)."""
    preset = os.environ.get("LLEM_CACHE_DIR")
    path = Path(preset) if preset else tmp_path_factory.mktemp("llem-cache")
    os.environ["LLEM_CACHE_DIR"] = str(path)
    return path


@pytest.fixture(scope="session")
def tiny_tokenizer_location(llem_cache_dir: Path) -> str:
    """The folder of builtin:tiny-llama (a real tokenizer with a chat template), built once per session."""
    from pytest_llem.workload.models import resolve_model

    return resolve_model("builtin:tiny-llama", cache_dir=llem_cache_dir).location

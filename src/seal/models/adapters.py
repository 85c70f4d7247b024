"""LoRA adapters on disk in PEFT's format, so that peft, vLLM and other tools load them unchanged.

A directory holds ``adapter_config.json`` and ``adapter_model.safetensors`` under PEFT's key names:
``base_model.model.<module>.lora_A.weight`` (rank x in) and ``...lora_B.weight`` (out x rank), the
update being ``lora_alpha / r * B @ A``. ``base_model_name_or_path`` names the model the adapter was
trained on, as seal names it (``smollm2-135m`` for the embedded model, else a hub id or a path).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from transformers import PreTrainedModel

from seal.engine.training import Adapter

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_PREFIX = "base_model.model."


def is_adapter_dir(path: str | Path) -> bool:
    return (Path(path) / ADAPTER_CONFIG).is_file()


def save_adapter(
    directory: str | Path,
    adapter: Adapter,
    rank: int,
    alpha: float,
    base_model: str,
    dtype: torch.dtype = torch.bfloat16,
) -> None:
    """Write ``adapter`` (factors in seal's layout, see :data:`~seal.engine.training.Adapter`) as a
    PEFT LoRA adapter; the directory appears whole or not at all (written aside, then renamed)."""
    directory = Path(directory)
    if Path(base_model).expanduser().is_dir():  # a local checkpoint: found again from any working directory
        base_model = str(Path(base_model).expanduser().resolve())
    tensors = {}
    for name, (a, b) in adapter.items():
        tensors[f"{_PREFIX}{name}.lora_A.weight"] = a.T.to(dtype).contiguous().cpu()
        tensors[f"{_PREFIX}{name}.lora_B.weight"] = b.T.to(dtype).contiguous().cpu()
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": rank,
        "lora_alpha": alpha,
        "lora_dropout": 0.0,
        "target_modules": sorted({name.rsplit(".", 1)[-1] for name in adapter}),
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "use_dora": False,
        "inference_mode": True,
    }
    staging = directory.with_name(directory.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    save_file(tensors, staging / ADAPTER_WEIGHTS, metadata={"format": "pt"})
    (staging / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    if directory.exists():
        shutil.rmtree(directory)
    os.replace(staging, directory)


def adapter_config(directory: str | Path) -> dict[str, Any]:
    """The adapter's ``adapter_config.json``, checked to describe a plain LoRA adapter."""
    path = Path(directory) / ADAPTER_CONFIG
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: not a readable adapter config ({error})") from error
    if config.get("peft_type") != "LORA" or config.get("use_dora") or config.get("fan_in_fan_out"):
        raise ValueError(f"{path}: only plain LoRA adapters are supported (no DoRA, no fan_in_fan_out)")
    return config


def read_adapter(directory: str | Path) -> tuple[dict[str, Any], Adapter]:
    """The adapter's config and its factors in fp32, in seal's layout (A: in x rank, B: rank x out)."""
    directory = Path(directory)
    config = adapter_config(directory)
    try:
        tensors = load_file(directory / ADAPTER_WEIGHTS)
    except (OSError, ValueError) as error:
        raise ValueError(f"{directory / ADAPTER_WEIGHTS}: not readable ({error})") from error
    adapter: Adapter = {}
    for key, tensor in tensors.items():
        if not (key.startswith(_PREFIX) and key.endswith(".lora_A.weight")):
            continue
        name = key[len(_PREFIX) : -len(".lora_A.weight")]
        b = tensors.get(f"{_PREFIX}{name}.lora_B.weight")
        if b is None:
            raise ValueError(f"{directory}: {name} has lora_A but no lora_B")
        adapter[name] = (tensor.float().T.contiguous(), b.float().T.contiguous())
    if not adapter:
        raise ValueError(f"{directory}: the adapter holds no LoRA weights")
    return config, adapter


def merge_adapter(model: PreTrainedModel, directory: str | Path) -> None:
    """Add the adapter's update ``alpha / r * B @ A`` into the model's weights (in place)."""
    config, adapter = read_adapter(directory)
    scaling = config["lora_alpha"] / config["r"]
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name, (a, b) in adapter.items():
            module = modules.get(name)
            if not isinstance(module, torch.nn.Linear):
                raise ValueError(f"{directory}: the adapter's {name} is not a linear layer of this model")
            delta = (a @ b).T * scaling
            module.weight += delta.to(module.weight.device, module.weight.dtype)

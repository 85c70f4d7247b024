"""ARC self-edits: a JSON configuration of test-time training, parsed strictly.

The policy answers with one JSON object, for example::

    {"augmentations": ["basic", "size"], "loss": "output", "learning_rate": 0.0001, "epochs": 3}

Anything else (no JSON, unknown keys, wrong types, values out of range) is a rejection with the
reason recorded; it earns reward 0. Sampled under :data:`SELF_EDIT_SCHEMA` (the default), every
self-edit is a valid configuration by construction: the schema allows the same keys and values,
with the learning rate one of :data:`LEARNING_RATE_CHOICES` so that a configuration has a bounded
length (at most :data:`MAX_SELF_EDIT_CHARS` characters, hence tokens).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from seal.domain import Rejection

AUGMENTATION_CHOICES = ("basic", "size", "chain", "repeat")
LOSS_CHOICES = ("all", "output")
LEARNING_RATE_RANGE = (1e-6, 1e-2)
EPOCH_RANGE = (1, 10)
LEARNING_RATE_CHOICES = (1e-6, 3e-6, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
_KEYS = {"augmentations", "loss", "learning_rate", "epochs"}
_JSON_OBJECT = re.compile(r"\{.*\}", re.DOTALL)

SELF_EDIT_SCHEMA = {
    "type": "object",
    "properties": {
        "augmentations": {"type": "array", "items": {"enum": list(AUGMENTATION_CHOICES)}, "maxItems": 4},
        "loss": {"enum": list(LOSS_CHOICES)},
        "learning_rate": {"enum": list(LEARNING_RATE_CHOICES)},
        "epochs": {"type": "integer", "minimum": EPOCH_RANGE[0], "maximum": EPOCH_RANGE[1]},
    },
    "required": ["augmentations", "loss", "learning_rate", "epochs"],
    "additionalProperties": False,
}
"""The JSON schema of a configuration, for sampling self-edits valid by construction."""

MAX_SELF_EDIT_CHARS = len(
    '{"augmentations":["repeat","repeat","repeat","repeat"],"loss":"output","learning_rate":0.000003,"epochs":10}'
)
"""The longest compact document :data:`SELF_EDIT_SCHEMA` allows: constrained sampling needs this many new tokens."""


@dataclass(frozen=True)
class TTTConfig:
    """What a self-edit chooses: augmentation families, which tokens carry the loss, lr and epochs."""

    augmentations: tuple[str, ...]
    loss: str
    learning_rate: float
    epochs: int

    def to_json(self) -> str:
        return json.dumps(
            {"augmentations": list(self.augmentations), "loss": self.loss, "learning_rate": self.learning_rate,
             "epochs": self.epochs}
        )  # fmt: skip


def parse_ttt_config(text: str) -> TTTConfig | Rejection:
    """The configuration in a self-edit (the first ``{...}`` block, fences allowed), or why there is none."""
    match = _JSON_OBJECT.search(text)
    if match is None:
        return Rejection("no JSON object in the self-edit")
    try:
        raw: Any = json.loads(match.group(0))
    except json.JSONDecodeError as error:
        return Rejection(f"invalid JSON: {error.msg}")
    if not isinstance(raw, dict):
        return Rejection("the JSON is not an object")
    unknown, missing = set(raw) - _KEYS, _KEYS - set(raw)
    if unknown or missing:
        return Rejection(f"keys must be exactly {sorted(_KEYS)}; unknown {sorted(unknown)}, missing {sorted(missing)}")
    return _checked(raw)


def _checked(raw: dict[str, Any]) -> TTTConfig | Rejection:
    augmentations = raw["augmentations"]
    if not isinstance(augmentations, list) or not all(isinstance(a, str) for a in augmentations):
        return Rejection("augmentations must be a list of names")
    if bad := [a for a in augmentations if a not in AUGMENTATION_CHOICES]:
        return Rejection(f"unknown augmentations {bad}; choose from {list(AUGMENTATION_CHOICES)}")
    if raw["loss"] not in LOSS_CHOICES:
        return Rejection(f"loss must be one of {list(LOSS_CHOICES)}, got {raw['loss']!r}")
    learning_rate, epochs = raw["learning_rate"], raw["epochs"]
    if isinstance(learning_rate, bool) or not isinstance(learning_rate, (int, float)):
        return Rejection("learning_rate must be a number")
    if not LEARNING_RATE_RANGE[0] <= learning_rate <= LEARNING_RATE_RANGE[1]:
        return Rejection(f"learning_rate {learning_rate} outside {list(LEARNING_RATE_RANGE)}")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or not EPOCH_RANGE[0] <= epochs <= EPOCH_RANGE[1]:
        return Rejection(f"epochs must be an integer in {list(EPOCH_RANGE)}, got {epochs!r}")
    return TTTConfig(tuple(dict.fromkeys(augmentations)), raw["loss"], float(learning_rate), epochs)


SELF_EDIT_PROMPT = """You are given example input/output grid pairs of a puzzle. Digits are colours.

{demonstrations}

Before solving it, you will fine-tune yourself on variations of these examples. Choose how:
- "augmentations": any of "basic" (rotations, flips, transposes, shifts), "size" (upscaling, stretching), \
"chain" (a geometric transform followed by upscaling), "repeat" (tiling)
- "loss": "output" (learn only the output grids) or "all" (learn every token)
- "learning_rate": a number between 1e-6 and 1e-2
- "epochs": an integer from 1 to 10

Reply with only a JSON object, for example:
{{"augmentations": ["basic"], "loss": "output", "learning_rate": 0.0001, "epochs": 2}}"""

"""What a self-adapting model is made with (:class:`ServeConfig`, remembered by its state directory)
and what it accepts to learn (:func:`check_document`)."""

from __future__ import annotations

import json
import unicodedata
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from seal.engine.generation import SamplingConfig
from seal.engine.lora import LoraConfig
from seal.engine.training import TrainConfig
from seal.models.loading import EMBEDDED_MODEL
from seal.runs import write_json_atomic

SETTINGS = "settings.json"


@dataclass(frozen=True)
class ServeConfig:
    """How a self-adapting model learns documents and holds them (its model and adapter shape are fixed
    for a state directory: :meth:`fixed`)."""

    model: str = EMBEDDED_MODEL
    """The model that learns and answers: smollm2-135m (embedded), a local directory or a hub id."""
    lora: LoraConfig = LoraConfig()
    train: TrainConfig = TrainConfig()
    sampling: SamplingConfig = SamplingConfig(temperature=0.7, top_p=0.95, max_new_tokens=256)
    """How self-edits are sampled."""
    self_edit_prompt: Literal["implications", "implications-long", "rewrite", "self-qa"] = "implications"
    """How the model is asked for a self-edit of a document."""
    replay_ratio: float = 1.0
    """Earlier documents' training examples rehearsed per example of a new document (drawn at random)."""
    slots: int = 8
    """Tenants whose knowledge stays loaded for answering at once."""
    max_document_chars: int = 20_000
    """Longer documents are refused."""
    max_queued: int = 16
    """Documents a tenant may have waiting to be learned."""
    seed: int = 0

    def __post_init__(self) -> None:
        if self.replay_ratio < 0 or self.slots < 1 or self.max_document_chars < 1 or self.max_queued < 1:
            raise ValueError(f"replay_ratio must be >= 0, slots, max_document_chars and max_queued >= 1: {self}")

    def fixed(self) -> dict[str, Any]:
        """What a state directory's adapters depend on: they cannot be served by another model or shape."""
        lora = self.lora
        return {"model": self.model, "lora": (lora.rank, lora.alpha, list(lora.target_modules))}


def config_from_dict(settings: dict[str, Any]) -> ServeConfig:
    return ServeConfig(
        **{
            **settings,
            "lora": LoraConfig(**settings["lora"]),
            "train": TrainConfig(**settings["train"]),
            "sampling": SamplingConfig(**settings["sampling"]),
        }
    )


def saved_config(directory: Path) -> ServeConfig:
    """The settings a state directory was made with."""
    path = directory / SETTINGS
    if not path.is_file():
        raise FileNotFoundError(f"{directory}: no {SETTINGS}; not a saved self-adapting model")
    return config_from_dict(json.loads(path.read_text()))


def check_settings(directory: Path, config: ServeConfig) -> None:
    """A state directory remembers the settings it learns with (the latest); its adapters fit only the
    model and shape they were made for, so another model or adapter shape is refused."""
    if (directory / SETTINGS).exists():
        saved = saved_config(directory).fixed()
        if saved != config.fixed():
            changed = [k for k in config.fixed() if saved[k] != config.fixed()[k]]
            raise ValueError(f"{directory} holds knowledge of another {' and '.join(changed)}: {saved}")
    write_json_atomic(directory / SETTINGS, asdict(config))  # what is learned from now on is learned with it


class DocumentError(ValueError):
    """A document that cannot be learned (empty, binary, too long); the message says why."""


class DocumentTooLong(DocumentError):
    """A document over ``max_document_chars``."""


class QueueFull(RuntimeError):
    """The tenant already has as many documents waiting as it may."""


def check_document(text: Any, title: Any, max_chars: int) -> tuple[str, str]:
    """The document's text and title (the first line's start if none), or :class:`DocumentError`
    naming what is wrong."""
    if not isinstance(text, str):
        raise DocumentError("the document's text must be a string")
    controls = sum(unicodedata.category(c) == "Cc" and c not in "\t\n\r\f" for c in text)
    if "\x00" in text or controls > len(text) // 100:
        raise DocumentError("the document looks binary; send plain text")
    text = text.removeprefix("\ufeff").strip()
    if not text:
        raise DocumentError("the document is empty")
    if len(text) > max_chars:
        raise DocumentTooLong(f"the document has {len(text):,} characters; at most {max_chars:,} are learned")
    if title is not None and not isinstance(title, str):
        raise DocumentError("the title must be a string")
    title = (title or "").strip() or text.splitlines()[0][:80]
    return text, title

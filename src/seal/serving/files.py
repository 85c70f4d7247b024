"""The files of a state directory besides its SQLite file: knowledge adapters (written aside, hashed,
verified before they are served, removed once no version refers to them) and the lock that keeps a
second process out."""

from __future__ import annotations

import hashlib
import shutil
import uuid
from pathlib import Path
from typing import IO

import torch

from seal.engine.training import Adapter
from seal.locking import Held, hold
from seal.models.adapters import read_adapter, save_adapter

ADAPTERS = "adapters"


class KnowledgeFiles:
    """Adapter directories under ``directory/adapters``, each named once and never rewritten."""

    def __init__(self, directory: Path):
        self.directory = directory / ADAPTERS
        self.directory.mkdir(exist_ok=True)
        self._verified: dict[str, tuple[tuple, str]] = {}

    def write(self, weights: Adapter, rank: int, alpha: float, model: str) -> tuple[str, str]:
        """A new adapter file (written aside and renamed into place): its name and SHA-256."""
        name = f"knowledge-{uuid.uuid4().hex[:16]}"
        save_adapter(self.directory / name, weights, rank, alpha, model, torch.float32)
        return name, adapter_sha256(self.directory / name)

    def read(self, name: str) -> Adapter:
        return read_adapter(self.directory / name)[1]

    def intact(self, name: str, sha256: str) -> bool:
        """Whether the file is as committed (hashed again whenever it changed on disk)."""
        path = self.directory / name
        try:
            stamp = tuple((f.stat().st_mtime_ns, f.stat().st_size) for f in sorted(path.iterdir()))
            known = self._verified.get(name)
            digest = known[1] if known and known[0] == stamp else adapter_sha256(path)
        except OSError:
            return False
        if digest != sha256:
            return False
        self._verified[name] = (stamp, digest)
        return True

    def remove(self, name: str) -> None:
        shutil.rmtree(self.directory / name, ignore_errors=True)
        self._verified.pop(name, None)

    def remove_all_but(self, referenced: set[str]) -> None:
        """Files no version refers to: pruned ones, and those a killed process left behind (written but
        never committed, or half written)."""
        for path in self.directory.iterdir():
            if path.name not in referenced:
                self.remove(path.name) if path.is_dir() else path.unlink()


def adapter_sha256(adapter_directory: Path) -> str:
    """SHA-256 of an adapter's weights and config together."""
    digest = hashlib.sha256()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        digest.update((adapter_directory / name).read_bytes())
    return digest.hexdigest()


def hold_state(directory: Path) -> IO[str]:
    """The state directory's lock, held while the returned file is open; a clear error if another
    process holds it (two learners would undo each other's work)."""
    try:
        return hold(directory / "lock")
    except Held as held:
        raise ValueError(f"{directory} is in use by {held.holder}; one process at a time may use it") from None

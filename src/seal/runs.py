"""Run directories: ``config.json``, append-only ``results.jsonl``, ``summary.json``.

Results are written one *unit* at a time (for knowledge: the lines of one self-edit evaluation),
in a single write that is flushed and fsynced, so a killed run loses at most the unit in flight.
Every record carries its unit key and the unit's line count; only complete units count as done
(:class:`AppendOnlyLog`). A run directory has one writer: a lock held for the whole run.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Iterable

from seal.inputs import read_json
from seal.locking import Held, hold
from seal.machine import describe

log = logging.getLogger(__name__)


class RunError(RuntimeError):
    """A run directory that cannot be used as asked (exists without --resume, config mismatch, ...)."""


ANY = object()
"""An added setting whose value earlier runs did not record: a resume may bring any value."""

# Settings added after runs were already being written, with the value every earlier run used.
# A saved config without one of them was made with that value, so it resumes with that value.
ADDED_SETTINGS: dict[str, Any] = {
    "data_path": ANY,
    "data_sha256": ANY,
    "base_precision": "fp32",
    "setting": "single",
    "policy": None,
    "gradient_accumulation": 1,
    "constrain": False,
    "gradient_checkpointing": False,
    "base_dtype": "fp32",
    "trust_remote_code": False,
    "schedule": "linear",
    "answer_prompt": "topic",
    "batch_size": 1,
}
_ABSENT = object()


def _changed_settings(saved: Any, config: Any, path: tuple[str, ...] = ()) -> list[tuple[str, Any, Any]]:
    """``(dotted path, saved value, new value)`` of each setting that differs, down to the innermost
    ones (``lora.rank``); a setting missing from ``saved`` that is in :data:`ADDED_SETTINGS` counts at
    its old value."""
    if isinstance(saved, dict) and isinstance(config, dict):
        return [
            changed
            for key in sorted(set(saved) | set(config))
            for changed in _changed_settings(
                saved.get(key, ADDED_SETTINGS.get(key, _ABSENT)), config.get(key, _ABSENT), (*path, key)
            )
        ]
    return [] if saved is ANY or saved == config else [(".".join(path), saved, config)]


def _within(path: str, settings: frozenset[str]) -> bool:
    """Whether the setting at dotted ``path`` is one of ``settings`` or inside one of them."""
    parts = path.split(".")
    return any(".".join(parts[:n]) in settings for n in range(1, len(parts) + 1))


def _describe_change(path: str, saved: Any, config: Any) -> str:
    def shown(value: Any) -> str:
        return "unset" if value is _ABSENT else json.dumps(value)

    return f"{path} {shown(saved)} -> {shown(config)}"


class AppendOnlyLog:
    """A JSON-lines file written in whole units, readable after a crash at any point.

    Each append writes one unit's lines at once. Reading keeps, for every unit, the last complete
    write of it (so a unit written again, e.g. re-graded, is its newest version) and ignores
    incomplete ones; a last line without its newline is a torn write and is ignored too. Any other
    line that is not a record stops the reader with the file and line named: nothing valid is ever
    rewritten away.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def _versions(self) -> list[tuple[str, list[dict[str, Any]]]]:
        """Every write of a unit, as (unit, its records so far), in file order."""
        if not self.path.exists():
            return []
        # after the last newline: nothing, or a torn write (one cut off by a crash)
        lines = self.path.read_text(encoding="utf-8").split("\n")[:-1]
        versions: list[tuple[str, list[dict[str, Any]]]] = []
        for number, line in enumerate(lines, start=1):
            record = self._parsed(line, number)
            unit = record["unit"]
            if versions and versions[-1][0] == unit and len(versions[-1][1]) < versions[-1][1][0]["unit_lines"]:
                versions[-1][1].append(record)
            else:
                versions.append((unit, [record]))
        return versions

    def _parsed(self, line: str, number: int) -> dict[str, Any]:
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            reason = f"not a JSON record ({error.msg})"
        else:
            if (
                isinstance(record, dict)
                and isinstance(record.get("unit"), str)
                and isinstance(record.get("unit_lines"), int)
            ):
                return record
            reason = "a record without its unit key and line count"
        raise RunError(f"{self.path}, line {number}: {reason}; fix or remove that line, then --resume")

    def _latest(self) -> dict[str, list[dict[str, Any]]]:
        latest: dict[str, list[dict[str, Any]]] = {}
        for unit, records in self._versions():
            if len(records) == records[0]["unit_lines"]:
                latest.pop(unit, None)  # re-inserted: units keep the order of their latest write
                latest[unit] = records
        return latest

    def records(self) -> list[dict[str, Any]]:
        """The records of every complete unit, its latest write, in the order of those writes."""
        return [record for records in self._latest().values() for record in records]

    def completed_units(self) -> set[str]:
        return set(self._latest())

    def append_unit(self, unit: str, records: Iterable[dict[str, Any]]) -> None:
        records = list(records)
        lines = "".join(
            json.dumps(json_safe({"unit": unit, "unit_lines": len(records), **r}), allow_nan=False) + "\n"
            for r in records
        )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(lines)
            handle.flush()
            os.fsync(handle.fileno())

    def drop_torn_tail(self) -> None:
        """Cut a torn last line off, so the next write starts on a line of its own (after a crash)."""
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            with open(self.path, "r+b") as handle:
                handle.truncate(data.rfind(b"\n") + 1)


_HELD: dict[Path, Any] = {}
"""The run directories this process holds the lock of (open lock files), for as long as it lives."""


class RunDirectory:
    CONFIG = "config.json"
    RESULTS = "results.jsonl"
    SUMMARY = "summary.json"
    LOCK = ".lock"
    MACHINES = "machines"

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.results = AppendOnlyLog(self.path / self.RESULTS)

    def start(self, config: dict[str, Any], resume: bool, extendable: frozenset[str] = frozenset()) -> None:
        """Create the directory, take its lock and write the config; or, resuming, check the config
        against the one on disk. A directory that holds a config is refused without ``resume``.

        The lock (``.lock``) is held until this process ends, so a second process writing to the same
        run stops at once. Settings in ``extendable`` may change on resume (e.g. ``n_passages``, to grow a
        run; a dotted path names a nested one, e.g. ``restem.rounds``). The config also lists, under
        ``machines``, each machine the run computed on (:func:`seal.machine.describe`): a resume on
        another one is allowed, and noted there.
        """
        self._make_directory()
        self._lock()
        config_path = self.path / self.CONFIG
        config = json.loads(json.dumps(config))  # compare as stored: tuples become lists
        machine = describe()
        if not config_path.exists():
            write_json_atomic(config_path, {**config, self.MACHINES: [machine]})
            return
        if not resume:
            raise RunError(f"{self.path} already holds a run: pass --resume to continue it, or choose another --out")
        saved = read_json(config_path)
        if not isinstance(saved, dict):
            raise RunError(f"{config_path}: not a run config (a JSON object)")
        machines = saved.pop(self.MACHINES, [])
        changed = _changed_settings(saved, config)
        if not all(_within(path, extendable) for path, _, _ in changed):
            described = ", ".join(_describe_change(*change) for change in changed)
            raise RunError(f"{config_path}: cannot resume with a different config (changed: {described})")
        if machine not in machines:
            if machines:
                log.warning(
                    "%s was computed on another machine so far: its numbers may differ in the last digits", self.path
                )
            machines.append(machine)
        write_json_atomic(config_path, {**config, self.MACHINES: machines})
        self.results.drop_torn_tail()

    def _make_directory(self) -> None:
        if self.path.exists() and not self.path.is_dir():
            raise RunError(f"--out {self.path}: is a file, not a directory")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / ".write-test"
            probe.touch()
            probe.unlink()
        except OSError as error:
            raise RunError(f"--out {self.path}: cannot write there ({error.strerror or error})") from None

    def _lock(self) -> None:
        key = self.path.resolve()
        if key in _HELD:
            return
        try:
            _HELD[key] = hold(self.path / self.LOCK)
        except Held as held:
            message = f"--out {self.path} is being written by {held.holder}: one run directory, one writer"
            raise RunError(message) from None

    def records(self) -> list[dict[str, Any]]:
        return self.results.records()

    def completed_units(self) -> set[str]:
        return self.results.completed_units()

    def append_unit(self, unit: str, records: Iterable[dict[str, Any]]) -> None:
        self.results.append_unit(unit, records)

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_json_atomic(self.path / self.SUMMARY, summary)

    def summary(self) -> dict[str, Any]:
        return read_json(self.path / self.SUMMARY)


def json_safe(value: Any) -> Any:
    """Undefined numbers (NaN) become null, so files and printed JSON stay standard JSON."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return None if isinstance(value, float) and math.isnan(value) else value


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(json_safe(payload), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)

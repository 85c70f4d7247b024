"""Run directories: ``config.json``, append-only ``results.jsonl``, ``summary.json``.

Results are written one *unit* at a time (for knowledge: the lines of one self-edit evaluation),
in a single write that is flushed and fsynced, so a killed run loses at most the unit in flight.
Every record carries its unit key and the unit's line count; on ``--resume`` incomplete units and a
torn last line are dropped and only complete units count as done.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Iterable

from seal.machine import describe

log = logging.getLogger(__name__)


class RunError(RuntimeError):
    """A run directory that cannot be used as asked (exists without --resume, config mismatch, ...)."""


# Settings added after runs were already being written, with the value every earlier run used.
# A saved config without one of them was made with that value, so it resumes with that value.
ADDED_SETTINGS: dict[str, Any] = {
    "base_precision": "fp32",
    "setting": "single",
    "policy": None,
    "gradient_accumulation": 1,
    "constrain": False,
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
    return [] if saved == config else [(".".join(path), saved, config)]


def _describe_change(path: str, saved: Any, config: Any) -> str:
    def shown(value: Any) -> str:
        return "unset" if value is _ABSENT else json.dumps(value)

    return f"{path} {shown(saved)} -> {shown(config)}"


class AppendOnlyLog:
    """A JSON-lines file written in whole units, readable after a crash at any point."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def records(self) -> list[dict[str, Any]]:
        """All complete records, in file order; a torn last line is ignored."""
        if not self.path.exists():
            return []
        records = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break  # only the last line can be torn: appends are sequential
        return records

    def completed_units(self) -> set[str]:
        counts: dict[str, int] = {}
        expected: dict[str, int] = {}
        for record in self.records():
            counts[record["unit"]] = counts.get(record["unit"], 0) + 1
            expected[record["unit"]] = record["unit_lines"]
        return {unit for unit, n in counts.items() if n == expected[unit]}

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

    def drop_incomplete_units(self) -> None:
        """Rewrite the file without half-written units (only ever needed after a crash)."""
        complete = self.completed_units()
        kept = [r for r in self.records() if r["unit"] in complete]
        text = "".join(json.dumps(r) + "\n" for r in kept)
        if self.path.exists() and text != self.path.read_text(encoding="utf-8"):
            tmp = self.path.with_suffix(".jsonl.tmp")
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, self.path)


class RunDirectory:
    CONFIG = "config.json"
    RESULTS = "results.jsonl"
    SUMMARY = "summary.json"
    MACHINES = "machines"

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.results = AppendOnlyLog(self.path / self.RESULTS)

    def start(self, config: dict[str, Any], resume: bool, extendable: frozenset[str] = frozenset()) -> None:
        """Create the directory and write the config, or check it against the one on disk when resuming.

        Keys in ``extendable`` may change on resume (e.g. the number of passages, to grow a run). The
        config also lists, under ``machines``, each machine this process's runs of it computed on
        (:func:`seal.machine.describe`): a resume on another one is allowed, and noted there.
        """
        config_path = self.path / self.CONFIG
        config = json.loads(json.dumps(config))  # compare as stored: tuples become lists
        machine = describe()
        if config_path.exists() and self.results.records():
            if not resume:
                raise RunError(
                    f"{self.path} already holds a run: pass --resume to continue it, or choose another --out"
                )
            saved = json.loads(config_path.read_text())
            machines = saved.pop(self.MACHINES, [])
            changed = _changed_settings(saved, config)
            if {path.split(".")[0] for path, _, _ in changed} - extendable:
                described = ", ".join(_describe_change(*change) for change in changed)
                raise RunError(f"{config_path}: cannot resume with a different config (changed: {described})")
            if machine not in machines:
                if machines:
                    log.warning(
                        "%s was computed on another machine so far: its numbers may differ in the last digits",
                        self.path,
                    )
                machines.append(machine)
            write_json_atomic(config_path, {**config, self.MACHINES: machines})
            self.results.drop_incomplete_units()
            return
        # New, or started before with nothing computed (e.g. the model failed to load): (re)write the config.
        self.path.mkdir(parents=True, exist_ok=True)
        write_json_atomic(config_path, {**config, self.MACHINES: [machine]})

    def records(self) -> list[dict[str, Any]]:
        return self.results.records()

    def completed_units(self) -> set[str]:
        return self.results.completed_units()

    def append_unit(self, unit: str, records: Iterable[dict[str, Any]]) -> None:
        self.results.append_unit(unit, records)

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_json_atomic(self.path / self.SUMMARY, summary)

    def summary(self) -> dict[str, Any]:
        return json.loads((self.path / self.SUMMARY).read_text())


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

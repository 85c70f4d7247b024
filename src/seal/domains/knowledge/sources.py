"""Where knowledge data comes from: ``seal data`` builds it, and runs find it.

A data directory is laid out as ``seal data ... --out DIR`` writes it (and as ``../shared/data`` is)::

    squad/squad_val.json                       SQuAD v1.1 validation, in seal's passage layout
    seal-reference/selfedits/<name>_val.json   self-edits written by other models (SEAL's files)
    seal-reference/graded/<name>.json          answers graded by GPT-4.1 (SEAL's files)

Runs find the SQuAD file through ``--data``, then ``$SEAL_DATA``, then the data command's default
directory (``$SEAL_CACHE/data``), then ``../shared/data``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable

from seal.domains.knowledge.data import DataError, eval_passage_ids, load_passages, passage_id, passages_from_rows
from seal.grading.calibration import load_graded
from seal.models import cache_dir

SQUAD_FILE = Path("squad/squad_val.json")
SELF_EDITS = Path("seal-reference/selfedits")
GRADED = Path("seal-reference/graded")
SELF_EDIT_FILES = ("base_val.json", "gpt4_1_val.json", "iter2_val.json")
GRADED_FILES = ("base.json", "naive.json")
SQUAD_HUB_ID = "rajpurkar/squad"
FETCH_HINT = "run `seal data squad` (downloads SQuAD v1.1), or `seal data squad --from FILE`, or pass --data FILE"


def data_roots() -> list[Path]:
    """Where data directories are looked for, in order."""
    roots = [Path(os.environ["SEAL_DATA"])] if os.environ.get("SEAL_DATA") else []
    return [*roots, default_data_root(), Path("../shared/data")]


def default_data_root() -> Path:
    """Where ``seal data`` writes unless told otherwise."""
    return cache_dir() / "data"


def find_squad() -> Path | None:
    """The SQuAD file of the first data directory that has one."""
    return next((root / SQUAD_FILE for root in data_roots() if (root / SQUAD_FILE).is_file()), None)


def resolve_data(given: str | None) -> Path:
    """``--data`` as given, or the SQuAD file found in the data directories; one line saying how to get it if none."""
    if given:
        return Path(given)
    found = find_squad()
    if found is None:
        searched = ", ".join(str(root) for root in data_roots())
        raise DataError(f"no --data given and no {SQUAD_FILE} in {searched}: {FETCH_HINT}")
    return found


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def default_split(path: Path) -> str:
    """``eval`` (the paper's 200 evaluation passages) for a file that holds them, else ``all``."""
    ids = {p.id for p in load_passages(path)}
    return "eval" if ids & eval_passage_ids() else "all"


def read_rows(source: str | None) -> tuple[Iterable[dict[str, Any]], str]:
    """SQuAD v1.1 validation from the hub (``source`` None), or rows from a local JSON-lines or parquet file."""
    try:
        import datasets
    except ImportError:
        raise DataError("`seal data` reads files with the `datasets` package: pip install 'datasets>=2'") from None
    if source is None:
        try:
            return datasets.load_dataset(SQUAD_HUB_ID, split="validation"), SQUAD_HUB_ID
        except Exception as error:  # noqa: BLE001 - offline, or the hub refuses: one line
            raise DataError(f"cannot download {SQUAD_HUB_ID} ({str(error).splitlines()[0]}): use --from FILE") from None
    path = Path(source)
    if not path.is_file():
        raise DataError(f"--from {source}: no such file")
    kind = "parquet" if path.suffix == ".parquet" else "json"
    try:
        return datasets.load_dataset(kind, data_files=str(path), split="train"), source
    except Exception as error:  # noqa: BLE001 - any parse failure is one line naming the file
        raise DataError(f"{source}: not {kind} rows of SQuAD ({str(error).splitlines()[0]})") from None


def build_squad(out: Path, source: str | None) -> Path:
    """Write ``out/squad/squad_val.json``; the source must hold all of the paper's evaluation passages."""
    rows, where = read_rows(source)
    passages = passages_from_rows(rows, where)
    expected = eval_passage_ids()
    present = expected & {passage_id(p["context"]) for p in passages}
    if present != expected:
        raise DataError(
            f"{where}: holds {len(present)} of the paper's {len(expected)} evaluation passages; "
            "expected SQuAD v1.1's validation split"
        )
    return _write(out / SQUAD_FILE, json.dumps(passages, ensure_ascii=False))


def build_seal_reference(out: Path, source: Path) -> list[Path]:
    """Find SEAL's self-edit and graded files under ``source`` (a checkout of the SEAL repository, or a
    directory holding them), check them, and copy them into ``out``."""
    if not source.is_dir():
        raise DataError(f"--from {source}: not a directory")
    written = []
    for name, target, check in [
        *[(name, SELF_EDITS, _check_self_edits) for name in SELF_EDIT_FILES],
        *[(name, GRADED, load_graded) for name in GRADED_FILES],
    ]:
        found = sorted(source.rglob(name))
        if not found:
            raise DataError(f"--from {source}: no {name} in it (SEAL's self-edit and graded files are expected)")
        check(found[0])
        written.append(_write(out / target / name, found[0].read_text(encoding="utf-8")))
    return written


def _check_self_edits(path: Path) -> None:
    passages = load_passages(path)
    missing = len(eval_passage_ids() - {p.id for p in passages})
    if missing or not all(p.self_edits for p in passages):
        raise DataError(f"{path}: expected self-edits (completions) for each of the 200 evaluation passages")


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(path.name + ".partial")
    staging.write_text(text, encoding="utf-8")
    os.replace(staging, path)
    return path

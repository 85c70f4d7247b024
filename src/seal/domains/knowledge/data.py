"""SQuAD-format passages: loading, strict validation, and the paper's evaluation split.

Accepted input: a JSON list of ``{"title", "context", "questions": [{"question", "answer"}]}``.
The SEAL self-edit files add ``"completions": [str]``: self-edits written by another model, which
the ``external`` condition trains on.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from seal.inputs import InputError, read_json

Split = Literal["all", "eval", "train"]
SPLITS: tuple[str, ...] = ("all", "eval", "train")


class DataError(InputError):
    """Malformed input data; the message names the file, item and field."""


@dataclass(frozen=True)
class Question:
    question: str
    answer: str


@dataclass(frozen=True)
class Passage:
    id: str
    title: str
    context: str
    questions: tuple[Question, ...]
    self_edits: tuple[str, ...] = ()


def passage_id(context: str) -> str:
    """Stable id of a passage: the first 16 hex digits of the SHA-1 of its context."""
    return hashlib.sha1(context.encode("utf-8")).hexdigest()[:16]


def eval_passage_ids() -> frozenset[str]:
    """Ids of the 200 SQuAD passages the SEAL paper evaluates on (shipped as hashes, not text)."""
    text = resources.files("seal.domains.knowledge").joinpath("eval_passages.txt").read_text()
    return frozenset(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))


def default_data_path() -> Path | None:
    """``../shared/data/squad/squad_val.json`` relative to the working directory, if present."""
    path = Path("../shared/data/squad/squad_val.json")
    return path if path.is_file() else None


def demo_data_path() -> Path:
    return Path(str(resources.files("seal.domains.knowledge").joinpath("demo_passages.json")))


def load_passages(path: str | Path, split: Split = "all") -> list[Passage]:
    """Read and validate a passage file, then keep the requested split, in file order."""
    path = Path(path)
    raw = read_json(path)
    if not isinstance(raw, list) or not raw:
        raise DataError(f"{path}: expected a non-empty JSON list of passages")
    passages = [_parse_passage(path, index, item) for index, item in enumerate(raw)]
    first_index: dict[str, int] = {}
    for index, passage in enumerate(passages):
        if passage.id in first_index:
            raise DataError(f"{path}: item {index}: field 'context' repeats item {first_index[passage.id]}")
        first_index[passage.id] = index
    if split == "all":
        return passages
    eval_ids = eval_passage_ids()
    return [p for p in passages if (p.id in eval_ids) == (split == "eval")]


def _parse_passage(path: Path, index: int, item: Any) -> Passage:
    where = f"{path}: item {index}"
    if not isinstance(item, dict):
        raise DataError(f"{where}: expected an object, got {type(item).__name__}")
    title = _text_field(item, "title", where)
    context = _text_field(item, "context", where)
    questions = item.get("questions")
    if not isinstance(questions, list) or not questions:
        raise DataError(f"{where}: field 'questions' must be a non-empty list")
    parsed = []
    for q_index, question in enumerate(questions):
        q_where = f"{where}: questions[{q_index}]"
        if not isinstance(question, dict):
            raise DataError(f"{q_where}: expected an object with 'question' and 'answer'")
        parsed.append(Question(_text_field(question, "question", q_where), _text_field(question, "answer", q_where)))
    completions = item.get("completions", [])
    if not isinstance(completions, list) or not all(isinstance(c, str) for c in completions):
        raise DataError(f"{where}: field 'completions' must be a list of strings")
    return Passage(passage_id(context), title, context, tuple(parsed), tuple(completions))


def _text_field(obj: dict[str, Any], name: str, where: str) -> str:
    value = obj.get(name)
    if not isinstance(value, str):
        expected = "missing" if name not in obj else f"a {type(value).__name__}"
        raise DataError(f"{where}: field '{name}' must be a string, is {expected}")
    if not value.strip():
        raise DataError(f"{where}: field '{name}' is empty")
    return value

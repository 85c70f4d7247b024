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
from typing import Any, Iterable, Literal

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


def demo_data_path() -> Path:
    return Path(str(resources.files("seal.domains.knowledge").joinpath("demo_passages.json")))


def load_passages(path: str | Path, split: Split = "all") -> list[Passage]:
    """Read and validate a passage file, then keep the requested split, in file order.

    Accepted: a JSON list of passages (seal's layout, see the module), or Hugging Face SQuAD rows (one
    per question, as ``datasets`` writes them: JSON lines or a JSON list)."""
    path = Path(path)
    raw = read_json(path, lines=True)
    if isinstance(raw, dict) and "answers" in raw:  # JSON lines of a single row
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise DataError(f"{path}: expected a non-empty JSON list of passages, or JSON lines of SQuAD rows")
    if isinstance(raw[0], dict) and "answers" in raw[0]:
        raw = passages_from_rows(raw, str(path))
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


def passages_from_rows(rows: Iterable[dict[str, Any]], where: str) -> list[dict[str, Any]]:
    """Hugging Face SQuAD rows (``id``, ``title``, ``context``, ``question``, ``answers: {text, answer_start}``,
    one per question) as seal's passages: grouped by context in order, the first answer as gold."""
    passages: dict[str, dict[str, Any]] = {}
    for index, row in enumerate(rows):
        fields = {name: row.get(name) for name in ("title", "context", "question")}
        answers = (row.get("answers") or {}).get("text") if isinstance(row.get("answers"), dict) else None
        bad = [name for name, value in fields.items() if not isinstance(value, str) or not value.strip()]
        if bad or not answers or not isinstance(answers[0], str):
            problem = f"field '{bad[0]}' must be a non-empty string" if bad else "field 'answers.text' holds no answer"
            raise DataError(f"{where}: row {index}: {problem}")
        passage = passages.setdefault(
            fields["context"], {"title": fields["title"], "context": fields["context"], "questions": []}
        )
        passage["questions"].append({"question": fields["question"], "answer": answers[0]})
    if not passages:
        raise DataError(f"{where}: no rows")
    return list(passages.values())


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

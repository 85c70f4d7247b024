"""Agreement of a grader with reference verdicts (e.g. GPT-4.1 graded files).

Undefined ratios are ``nan`` throughout: ``agreement`` with no graded pairs,
``precision`` when the grader never says CORRECT, ``recall`` when the reference
has no CORRECT label, and ``kappa`` when chance agreement is already 1 (both
sides used a single label).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seal.grading.base import Grader, GradeRequest, Verdict

Labelled = list[tuple[GradeRequest, bool]]

_ANSWER_KEYS = (("baseline_answer", "baseline_correct"), ("adapter_answer", "adapter_correct"))


@dataclass(frozen=True)
class CalibrationStats:
    """2x2 agreement table of a grader (rows) against reference labels (columns).

    ``tp``: both CORRECT; ``fp``: grader CORRECT, reference incorrect;
    ``fn``: grader INCORRECT, reference correct; ``tn``: both incorrect.
    ``n`` counts graded pairs only; pairs the grader left UNGRADED are
    excluded from every statistic and counted in ``ungraded``.
    """

    n: int
    agreement: float
    kappa: float
    precision: float
    recall: float
    tp: int
    fp: int
    fn: int
    tn: int
    ungraded: int = 0


def _ratio(num: float, den: float) -> float:
    return num / den if den else math.nan


def stats_from_counts(tp: int, fp: int, fn: int, tn: int, ungraded: int = 0) -> CalibrationStats:
    """Agreement, Cohen's kappa, precision and recall from a 2x2 table."""
    n = tp + fp + fn + tn
    agreement = _ratio(tp + tn, n)
    chance = _ratio((tp + fp) * (tp + fn) + (fn + tn) * (fp + tn), n * n)
    kappa = math.nan if n == 0 or chance == 1 else (agreement - chance) / (1 - chance)
    return CalibrationStats(
        n=n,
        agreement=agreement,
        kappa=kappa,
        precision=_ratio(tp, tp + fp),
        recall=_ratio(tp, tp + fn),
        tp=tp,
        fp=fp,
        fn=fn,
        tn=tn,
        ungraded=ungraded,
    )


def calibrate(grader: Grader, labelled: Sequence[tuple[GradeRequest, bool]]) -> CalibrationStats:
    """Grade every request and compare the verdicts with the reference labels."""
    verdicts = grader.grade([request for request, _ in labelled])
    table: Counter[tuple[bool, bool]] = Counter()
    ungraded = 0
    for verdict, (_, label) in zip(verdicts, labelled, strict=True):
        if verdict is Verdict.UNGRADED:
            ungraded += 1
        else:
            table[verdict is Verdict.CORRECT, label] += 1
    return stats_from_counts(
        tp=table[True, True],
        fp=table[True, False],
        fn=table[False, True],
        tn=table[False, False],
        ungraded=ungraded,
    )


def load_graded(path: str | Path) -> Labelled:
    """Read a reference graded file into labelled (request, reference_correct) pairs.

    Each question yields up to two pairs: the baseline answer labelled with
    ``baseline_correct`` and the adapter answer labelled with
    ``adapter_correct``; pairs whose answer or label is missing/None are
    skipped.  Raises a one-line ``ValueError`` naming the file when the file
    is not JSON or does not follow the schema.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc
    try:
        return [pair for question in _questions(data) for pair in _pairs(question)]
    except _SchemaError as exc:
        raise ValueError(f"{path}: unexpected graded-file schema: {exc}") from None


class _SchemaError(Exception):
    pass


def _list_field(obj: Any, key: str, where: str) -> list[Any]:
    if not isinstance(obj, dict):
        raise _SchemaError(f"{where} is not an object")
    value = obj.get(key)
    if not isinstance(value, list):
        raise _SchemaError(f"{where} has no list '{key}'")
    return value


def _questions(data: Any) -> Iterator[dict[str, Any]]:
    for i, article in enumerate(_list_field(data, "articles", "top level")):
        for j, completion in enumerate(_list_field(article, "completions", f"articles[{i}]")):
            where = f"articles[{i}].completions[{j}]"
            for k, question in enumerate(_list_field(completion, "questions", where)):
                if not isinstance(question, dict):
                    raise _SchemaError(f"{where}.questions[{k}] is not an object")
                for key in ("question", "answer"):
                    if not isinstance(question.get(key), str):
                        raise _SchemaError(f"{where}.questions[{k}] has no string '{key}'")
                yield question


def _pairs(question: dict[str, Any]) -> Iterator[tuple[GradeRequest, bool]]:
    for answer_key, label_key in _ANSWER_KEYS:
        answer, label = question.get(answer_key), question.get(label_key)
        if answer is None or label is None:
            continue
        if not isinstance(answer, str) or not isinstance(label, bool):
            raise _SchemaError(f"'{answer_key}' must be a string and '{label_key}' a boolean")
        yield GradeRequest(question=question["question"], gold=question["answer"], answer=answer), label

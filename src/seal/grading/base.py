"""Core types shared by every grader: verdicts, requests and the grader protocol."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


class Verdict(str, enum.Enum):
    """Outcome of grading one answer.

    ``UNGRADED`` means the grader could not reach a decision (for example the
    judge endpoint kept failing); it must never be counted as ``INCORRECT``.
    """

    CORRECT = "correct"
    INCORRECT = "incorrect"
    UNGRADED = "ungraded"


@dataclass(frozen=True)
class GradeRequest:
    """One answer to grade.

    Attributes:
        question: The question that was asked.
        gold: The reference answer.
        answer: The model's free-text answer (may be a long sentence).
    """

    question: str
    gold: str
    answer: str


@runtime_checkable
class Grader(Protocol):
    """Anything that turns a batch of requests into verdicts, in request order."""

    name: str

    def grade(self, requests: Sequence[GradeRequest]) -> list[Verdict]: ...

"""Knowledge incorporation as a SEAL domain.

Item: a passage with questions. Self-edit: text derived from the passage (implications by default).
Update: train on ``title + passage`` plus ``title + segment`` for each segment of the self-edit.
Score: closed-book QA, greedy answers to ``Topic: {title}\\n{question}``, graded per question.
"""

from __future__ import annotations

from dataclasses import dataclass

from seal.domain import Queries, Rejection, Score, Update
from seal.domains.knowledge.data import Passage
from seal.domains.knowledge.prompts import ANSWER_PROMPTS, SELF_EDIT_PROMPTS
from seal.engine.training import TrainConfig, TrainingExample
from seal.grading import Grader, GradeRequest, Verdict


def self_edit_segments(self_edit: str, split_lines: bool = True) -> list[str]:
    """The training segments of a self-edit: its non-empty lines, or the whole text as one segment."""
    if not split_lines:
        return [self_edit.strip()] if self_edit.strip() else []
    return [line.strip() for line in self_edit.splitlines() if line.strip()]


@dataclass
class KnowledgeDomain:
    grader: Grader
    train: TrainConfig = TrainConfig()
    self_edit_prompt: str = "implications"
    split_lines: bool = True
    answer_tokens: int = 48
    answer_prompt: str = "topic"

    name = "knowledge"
    self_edit_schema = None  # free text

    def __post_init__(self) -> None:
        if self.self_edit_prompt not in SELF_EDIT_PROMPTS:
            raise ValueError(
                f"unknown self-edit prompt {self.self_edit_prompt!r}; choose from {sorted(SELF_EDIT_PROMPTS)}"
            )

    def item_id(self, passage: Passage) -> str:
        return passage.id

    def prompt(self, passage: Passage) -> str:
        return SELF_EDIT_PROMPTS[self.self_edit_prompt].format(title=passage.title, context=passage.context)

    def baseline_update(self, passage: Passage) -> Update:
        """The paper's "train on passage" baseline: the passage alone."""
        return Update(examples=(self._document(passage, passage.context),), train=self.train)

    def to_update(self, passage: Passage, self_edit: str) -> Update | Rejection:
        documents = self.self_edit_documents(passage, self_edit)
        if not documents:
            return Rejection("empty self-edit")
        return Update(examples=self.baseline_update(passage).examples + documents, train=self.train)

    def self_edit_documents(self, passage: Passage, self_edit: str) -> tuple[TrainingExample, ...]:
        """``title + segment`` for each segment of the self-edit (none for an empty one)."""
        return tuple(self._document(passage, segment) for segment in self_edit_segments(self_edit, self.split_lines))

    def queries(self, passage: Passage) -> Queries:
        """The passage's questions, closed-book: the title names the topic, the passage is not shown."""
        prompt = ANSWER_PROMPTS[self.answer_prompt]
        messages = tuple(prompt.format(title=passage.title, question=q.question) for q in passage.questions)
        return Queries(messages, self.answer_tokens)

    def grade(self, passage: Passage, answers: list[str]) -> Score:
        """Reward = share of graded questions answered correctly; ungraded ones do not count either way,
        and with none graded there is no reward (None), not 0."""
        requests = [GradeRequest(q.question, q.answer, a) for q, a in zip(passage.questions, answers)]
        verdicts = self.grader.grade(requests)
        graded = [v for v in verdicts if v is not Verdict.UNGRADED]
        reward = sum(v is Verdict.CORRECT for v in graded) / len(graded) if graded else None
        details = [
            {"question": q.question, "gold": q.answer, "answer": a, "verdict": v.value}
            for q, a, v in zip(passage.questions, answers, verdicts)
        ]
        return Score(reward=reward, details=details)

    def rejected_score(self, passage: Passage, reason: str) -> Score:
        details = [
            {"question": q.question, "gold": q.answer, "answer": None, "verdict": Verdict.INCORRECT.value}
            for q in passage.questions
        ]
        return Score(reward=0.0, details=details)

    @staticmethod
    def _document(passage: Passage, text: str) -> TrainingExample:
        return TrainingExample(prompt="", completion=f"{passage.title}\n{text}")

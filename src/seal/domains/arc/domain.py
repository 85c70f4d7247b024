"""Few-shot learning on ARC as a SEAL domain.

Item: a task (demonstration pairs, one or more test inputs). Self-edit: a JSON test-time-training
configuration (see ``selfedit.py``). Update: leave-one-out (and leave-two-out) tasks built from the
demonstrations, augmented by the chosen families plus colour and example-order permutations,
deduplicated, filtered by the context budget and capped by the training-token budget. Score: the
updated model answers each test input under the invertible geometric transforms, the answers are
mapped back and voted; reward = share of test inputs whose voted answer is exactly right.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from seal.domain import Queries, Rejection, Score, Update
from seal.domains.arc.augment import (
    FAMILIES,
    INVERTIBLE_FOR_VOTING,
    Transform,
    apply_to_task_pair,
    fits,
    permute_colours,
    random_colour_permutation,
    random_roll,
)
from seal.domains.arc.grids import MAX_SIDE, Pair, Task, grid_to_text, text_to_grid
from seal.domains.arc.selfedit import SELF_EDIT_PROMPT, TTTConfig, parse_ttt_config
from seal.engine.training import TrainConfig, TrainingExample
from seal.seeding import unit_seed

ATTEMPTS = 2
"""Answers per test input that count: ARC (and the paper) score a task solved if one of two is right."""

# A self-edit's "basic" trains on the basic and reflect families and a random roll, as the official code's does.
_TRAINING_FAMILIES = {**FAMILIES, "basic": FAMILIES["basic"] + FAMILIES["reflect"]}


def format_pairs(pairs: Sequence[Pair]) -> str:
    return "\n\n".join(f"Input:\n{grid_to_text(p.input)}\nOutput:\n{grid_to_text(p.output)}" for p in pairs)


def task_message(demonstrations: Sequence[Pair], query: np.ndarray) -> str:
    """The user message for solving a task: the demonstrations, then the query input."""
    return (
        "Each example maps an input grid to an output grid by the same rule. Digits are colours.\n\n"
        f"{format_pairs(demonstrations)}\n\nApply the rule to this input and reply with the output grid only.\n"
        f"Input:\n{grid_to_text(query)}"
    )


def leave_out_tasks(pairs: Sequence[Pair]) -> list[tuple[tuple[Pair, ...], Pair]]:
    """(context, query) tasks: each pair held out once, and each pair with one other also dropped."""
    tasks = []
    n = len(pairs)
    for i in range(n):
        others = tuple(p for j, p in enumerate(pairs) if j != i)
        if others:
            tasks.append((others, pairs[i]))
    if n >= 3:
        for i, dropped in itertools.permutations(range(n), 2):
            tasks.append((tuple(p for j, p in enumerate(pairs) if j not in (i, dropped)), pairs[i]))
    return tasks


BUDGET_NOTE = "budget: "
"""How a note that the budget cut a configuration's epochs or examples begins."""


@dataclass(frozen=True)
class Budget:
    """Limits that keep one self-edit's test-time training bounded (CPU-sized defaults)."""

    max_examples: int = 16
    """Training examples per configuration at most."""
    max_example_chars: int = 2048
    """Characters per example at most (a digit or newline is one token, so they bound the tokens)."""
    max_train_tokens: int = 12_000
    """Training tokens per configuration at most, counting epochs."""

    def __post_init__(self) -> None:
        if min(self.max_examples, self.max_example_chars, self.max_train_tokens) < 1:
            raise ValueError(f"budgets must be positive: {self}")


@dataclass
class ArcDomain:
    budget: Budget = Budget()
    self_edit_schema: dict[str, Any] | None = None
    """:data:`~seal.domains.arc.selfedit.SELF_EDIT_SCHEMA` to sample configurations valid by construction."""
    batch_size: int = 1
    schedule: str = "linear"

    name = "arc"

    def item_id(self, task: Task) -> str:
        return task.id

    def prompt(self, task: Task) -> str:
        return SELF_EDIT_PROMPT.format(demonstrations=format_pairs(task.train))

    def baseline_update(self, task: Task) -> None:
        """A useful configuration must beat answering in context without training."""
        return None

    def to_update(self, task: Task, self_edit: str) -> Update | Rejection:
        config = parse_ttt_config(self_edit)
        if isinstance(config, Rejection):
            return config
        return self.ttt_update(task, config)

    def ttt_update(self, task: Task, config: TTTConfig) -> Update | Rejection:
        """Test-time-training data for ``task`` as ``config`` asks, within the budget."""
        rng = np.random.default_rng(unit_seed(0, task.id, config.to_json()))
        transforms = [t for family in config.augmentations for t in _TRAINING_FAMILIES[family]]
        candidates: dict[str, TrainingExample] = {}
        for context, query in leave_out_tasks(task.train):
            rolled = [random_roll(rng)] if "basic" in config.augmentations else []
            for transform in [None, *transforms, *rolled]:
                example = _augmented_example(context, query, transform, config.loss, rng)
                if example is not None:
                    candidates.setdefault(example.prompt + example.completion, example)
        fitting = [e for e in candidates.values() if len(e.prompt) + len(e.completion) <= self.budget.max_example_chars]
        if not fitting:
            return Rejection("no training example fits the context budget")
        order = rng.permutation(len(fitting))[: self.budget.max_examples]
        sizes = {i: len(fitting[i].prompt) + len(fitting[i].completion) for i in order}
        notes = []
        # more epochs than the budget allows for even one example: as many as it allows (at least one)
        epochs = max(1, min(config.epochs, self.budget.max_train_tokens // min(sizes.values())))
        if epochs < config.epochs:
            notes.append(f"{BUDGET_NOTE}{epochs} of {config.epochs} epochs")
        per_epoch_tokens = max(1, self.budget.max_train_tokens // epochs)
        chosen, tokens = [], 0
        for index in order:  # in random order, every example that still fits the epoch's budget
            if tokens + sizes[index] <= per_epoch_tokens:
                chosen.append(fitting[index])
                tokens += sizes[index]
        if len(chosen) < len(fitting):
            notes.append(f"{BUDGET_NOTE}trained on {len(chosen)} of {len(fitting)} examples")
        train = TrainConfig(
            config.learning_rate,
            epochs,
            self.batch_size,
            max_seq_len=self.budget.max_example_chars,
            schedule=self.schedule,
        )
        return Update(tuple(chosen), train, tuple(notes))

    def queries(self, task: Task) -> Queries:
        """Each test input under every voting transform, with the demonstrations transformed alike."""
        messages = tuple(
            task_message([apply_to_task_pair(p, t) for p in task.train], t(test.input))
            for test in task.test
            for t in INVERTIBLE_FOR_VOTING
        )
        side = max(task.seen_side, 1)  # an answer up to twice the largest grid seen, within MAX_SIDE
        return Queries(messages, max_new_tokens=min(2 * side * (2 * side + 1), MAX_SIDE * (MAX_SIDE + 1)) + 8)

    def grade(self, task: Task, answers: list[str]) -> Score:
        """Per test input: map the answers back and rank them by votes; a test input counts as solved
        when one of the :data:`ATTEMPTS` most voted answers is exactly right, as the paper counts
        (ARC's two attempts). Reward = share of test inputs solved."""
        n = len(INVERTIBLE_FOR_VOTING)
        details = [self._vote(task, i, answers[i * n : (i + 1) * n]) for i in range(len(task.test))]
        solved = [d["correct"] for d in details if d["correct"] is not None]
        return Score(reward=sum(solved) / len(solved) if solved else 0.0, details=details)

    def rejected_score(self, task: Task, reason: str) -> Score:
        nothing = {"answer": None, "attempts": [], "votes": 0, "correct": False}
        details = [{"test_index": i, **nothing} for i in range(len(task.test))]
        return Score(reward=0.0, details=details)

    @staticmethod
    def _vote(task: Task, index: int, texts: list[str]) -> dict:
        answers = [_mapped_back(text, t) for text, t in zip(texts, INVERTIBLE_FOR_VOTING)]
        votes = Counter(grid_to_text(a) for a in answers if a is not None)
        attempts = [answer for answer, _ in votes.most_common(ATTEMPTS)]
        winner = attempts[0] if attempts else None
        output = task.test[index].output
        correct = None if output is None else grid_to_text(output) in attempts
        return {
            "test_index": index,
            "answer": winner,
            "attempts": attempts,
            "votes": votes[winner] if winner else 0,
            "correct": correct,
        }


def _mapped_back(text: str, transform: Transform) -> np.ndarray | None:
    grid = text_to_grid(text)
    if grid is None or transform.inverse is None:
        return None
    try:
        return transform.inverse(grid)
    except ValueError:  # e.g. a shape the inverse cannot undo
        return None


def _augmented_example(
    context: tuple[Pair, ...], query: Pair, transform: Transform | None, loss: str, rng: np.random.Generator
) -> TrainingExample | None:
    """One training example: the task under ``transform``, a colour permutation and a shuffled context."""
    pairs = [*context, query]
    if transform is not None:
        if not all(fits(grid, transform) for p in pairs for grid in (p.input, p.output)):
            return None
        pairs = [apply_to_task_pair(p, transform) for p in pairs]
    permutation = random_colour_permutation(rng)
    pairs = [Pair(permute_colours(p.input, permutation), permute_colours(p.output, permutation)) for p in pairs]
    *context_pairs, query_pair = pairs
    context_pairs = [context_pairs[i] for i in rng.permutation(len(context_pairs))]
    return TrainingExample(
        prompt=task_message(context_pairs, query_pair.input),
        completion=grid_to_text(query_pair.output),
        chat=True,
        loss_on_prompt=loss == "all",
    )

"""A third domain is one module and one registration: it runs eval and ReST-EM through the shared
core and the generated command line, with no edit to seal's CLI, loops or engine."""

import json
from dataclasses import dataclass

import pytest

from seal import commands
from seal.cli import main
from seal.domain import Queries, Rejection, Score, Update
from seal.engine.training import TrainConfig, TrainingExample

FACTS = {"zorb": 7, "quil": 3, "dax": 5, "wemp": 9, "tosk": 2}  # invented: "the zorb of a number is 7 more"


@dataclass
class InventedArithmetic:
    """Item: an invented operation. Self-edit: the model's notes on it. Reward: it answers with the number."""

    name = "arith"
    self_edit_schema = None

    def item_id(self, item: str) -> str:
        return item

    def prompt(self, item: str) -> str:
        return f"The {item} of a number is that number plus {FACTS[item]}. Write worked examples."

    def baseline_update(self, item: str) -> Update:
        return Update((TrainingExample("", f"The {item} of 1 is {1 + FACTS[item]}."),), TrainConfig(epochs=1))

    def to_update(self, item: str, self_edit: str) -> Update | Rejection:
        if not self_edit.strip():
            return Rejection("empty self-edit")
        return Update((TrainingExample("", self_edit),), TrainConfig(learning_rate=1e-2, epochs=1))

    def queries(self, item: str) -> Queries:
        return Queries((f"What is the {item} of 2?",), max_new_tokens=4)

    def grade(self, item: str, answers: list[str]) -> Score:
        right = str(2 + FACTS[item]) in answers[0]
        return Score(reward=float(right), details=[{"answer": answers[0], "correct": right}])

    def rejected_score(self, item: str, reason: str) -> Score:
        return Score(reward=0.0, details=[])


def items(split: str) -> list[str]:
    return list(FACTS)[:3] if split == "train" else list(FACTS)[3:]


@pytest.fixture
def arithmetic(monkeypatch):
    monkeypatch.setitem(
        commands.DOMAINS, "arith", ("invented arithmetic", commands.standard_commands(InventedArithmetic, items))
    )


TINY = ["--model", "tiny-random", "--lora.rank", "4", "--lora.alpha", "8", "--sampling.max_new_tokens", "12", "--quiet"]


def test_a_registered_domain_evaluates_through_the_shared_runner(arithmetic, tmp_path, capsys):
    assert main(["arith", "eval", "--k", "2", *TINY, "--out", str(tmp_path / "eval")]) == 0
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["n_items"] == 2 and summary["condition"] == "self-edit" and summary["mean_reward"] is not None
    records = [json.loads(line) for line in (tmp_path / "eval" / "results.jsonl").read_text().splitlines()]
    assert len(records) == 2 * 2 and {r["item_id"] for r in records} == {"wemp", "tosk"}
    assert main(["arith", "eval", "--condition", "nope", *TINY, "--out", str(tmp_path / "x")]) == 2
    assert "--condition" in capsys.readouterr().err


def test_a_registered_domain_trains_a_policy_with_rest_em(arithmetic, tmp_path):
    argv = ["arith", "train", "--restem.rounds", "1", "--restem.k", "2", "--restem.sft.epochs", "1", *TINY]
    assert main([*argv, "--out", str(tmp_path / "train")]) == 0
    rewards = (tmp_path / "train" / "round-1" / "rewards.jsonl").read_text().splitlines()
    assert len(rewards) == 3 * (2 + 1)  # 3 training items x (K self-edits + the baseline update)
    assert (tmp_path / "train" / "round-1" / "policy" / "adapter_config.json").exists()
    held_out = json.loads((tmp_path / "train" / "round-1" / "eval" / "summary.json").read_text())
    assert held_out["n_items"] == 2 and held_out["model"] == str(tmp_path / "train" / "round-1" / "policy")

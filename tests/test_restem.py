import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
import torch

from seal.domain import Queries, Rejection, Score, Update
from seal.domains.knowledge.report import PHASES, seconds_by_phase, self_edit_features, what_rewards_favour
from seal.engine.generation import SamplingConfig
from seal.engine.lora import LoraConfig
from seal.engine.training import TrainConfig, TrainingExample
from seal.executors import ExecutorSpec, make_executor
from seal.loops.restem import RestEMConfig, policy_dir, run_restem, select_self_edits
from seal.models import load_model
from seal.models.adapters import read_adapter
from seal.runs import AppendOnlyLog
from tests.conftest import SHARED_DATA

TARGET = "The Varnholt Bridge was completed in 1871."


@dataclass
class ToyDomain:
    """Reward = how varied the text is that the updated model writes after a fixed prompt (distinct letters).

    Graded, cheap and model-dependent.

    (tiny-random's untrained greedy output is special tokens only, so the reward comes from the update.)
    """

    name = "toy"
    self_edit_schema = None

    def item_id(self, item: str) -> str:
        return item

    def prompt(self, item: str) -> str:
        return f"Write one sentence about {item}."

    def to_update(self, item: str, self_edit: str) -> Update | Rejection:
        if not self_edit.strip():
            return Rejection("empty self-edit")
        return Update((TrainingExample("", self_edit),), TrainConfig(learning_rate=5e-2, epochs=2))

    def baseline_update(self, item: str) -> Update:
        return Update((TrainingExample("", item),), TrainConfig(learning_rate=5e-2, epochs=2))

    def queries(self, item: str) -> Queries:
        return Queries((TARGET,), max_new_tokens=12)

    def grade(self, item: str, answers: list[str]) -> Score:
        return Score(reward=min(1.0, len(set(answers[0]) - {" "}) / 30), details=[{"answer": answers[0]}])

    def rejected_score(self, item: str, reason: str) -> Score:
        return Score(reward=0.0, details=[])


CONFIG = RestEMConfig(
    rounds=1,
    k=3,
    sampling=SamplingConfig(temperature=1.0, max_new_tokens=16),
    sft=TrainConfig(learning_rate=1e-2, epochs=1, batch_size=2),
    lora=LoraConfig(rank=4, alpha=8),
)
ITEMS = ["the Varnholt Bridge", "quenalite"]


def run_toy(out: Path, config: RestEMConfig = CONFIG) -> list[dict]:
    executor = make_executor(ExecutorSpec())
    return run_restem(
        ToyDomain(), ITEMS, "tiny-random", lambda policy, d: {"policy": policy}, config, out, executor, False
    )


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_model(str(model_dir)).model.state_dict()


def test_selection_keeps_top_m_that_beat_the_baseline():
    records = [
        {"item_id": "a", "baseline": True, "reward": 0.5},
        {"item_id": "a", "baseline": False, "index": 0, "reward": 0.4},
        {"item_id": "a", "baseline": False, "index": 1, "reward": 0.9},
        {"item_id": "a", "baseline": False, "index": 2, "reward": 0.7},
        {"item_id": "b", "baseline": True, "reward": 0.0},
        {"item_id": "b", "baseline": False, "index": 0, "reward": 0.0},
    ]
    pick = lambda **kw: [(r["item_id"], r["index"]) for r in select_self_edits(records, RestEMConfig(**kw))]  # noqa: E731
    assert pick(top_m=1) == [("a", 1)]
    assert pick(top_m=3) == [("a", 1), ("a", 2)]  # 0.4 does not beat training on the baseline (0.5)
    assert pick(top_m=3, beat_baseline=False) == [("a", 1), ("a", 2), ("a", 0)]  # reward 0 is never kept
    assert pick(top_m=None, beat_baseline=False) == [("a", 1), ("a", 2), ("a", 0)]  # None: every one that qualifies


def test_a_round_samples_scores_selects_and_trains_the_policy(tmp_path):
    summaries = run_toy(tmp_path)
    assert [s["policy"] for s in summaries] == ["tiny-random", str(policy_dir(tmp_path, 1))]
    rewards = AppendOnlyLog(tmp_path / "round-1" / "rewards.jsonl").records()
    assert len(rewards) == len(ITEMS) * (CONFIG.k + 1)
    sampled = [r for r in rewards if not r["baseline"]]
    assert all(r["prompt"].startswith("Write one sentence") and r["self_edit"] for r in sampled)
    assert len({r["reward"] for r in sampled}) > 1  # the toy reward tells self-edits apart
    kept = json.loads((tmp_path / "round-1" / "kept.json").read_text())["kept"]
    assert kept == select_self_edits(rewards, CONFIG) and kept
    sft = json.loads((tmp_path / "round-1" / "sft.json").read_text())
    assert sft["n_examples"] == len(kept) and sft["tokens"] > 0
    base, policy = weights(Path(load_model("tiny-random").model.name_or_path)), weights(policy_dir(tmp_path, 1))
    changed = [name for name in base if not torch.equal(base[name], policy[name])]
    assert changed and all("proj" in name for name in changed)  # LoRA merged into the projections only
    config, adapter = read_adapter(policy_dir(tmp_path, 1))  # the policy is a PEFT adapter of the base model
    assert config["base_model_name_or_path"] == "tiny-random" and len(adapter) == 2 * 7


def test_each_round_trains_the_previous_rounds_policy_adapter_further(tmp_path, monkeypatch):
    from seal.engine.bank import LoraBank

    starts = []
    real_train = LoraBank.train

    def train(self, jobs, *args, **kwargs):
        if jobs[0].config == CONFIG.sft:  # an SFT step, not an inner-loop update
            starts.append(jobs[0].initial)
        return real_train(self, jobs, *args, **kwargs)

    monkeypatch.setattr(LoraBank, "train", train)
    run_toy(tmp_path, replace(CONFIG, rounds=2))
    assert len(starts) == 2 and starts[0] is None  # round 1 starts from a fresh adapter
    _, round_one = read_adapter(policy_dir(tmp_path, 1))
    assert all(torch.equal(starts[1][name][0], a) for name, (a, _) in round_one.items())


def test_same_seed_same_rewards_and_policy(tmp_path):
    run_toy(tmp_path / "a")
    run_toy(tmp_path / "b")
    strip = lambda rs: [{k: v for k, v in r.items() if "seconds" not in k} for r in rs]  # noqa: E731
    a = AppendOnlyLog(tmp_path / "a" / "round-1" / "rewards.jsonl").records()
    b = AppendOnlyLog(tmp_path / "b" / "round-1" / "rewards.jsonl").records()
    assert strip(a) == strip(b)
    wa, wb = weights(policy_dir(tmp_path / "a", 1)), weights(policy_dir(tmp_path / "b", 1))
    assert all(torch.equal(wa[n], wb[n]) for n in wa)


def test_policies_left_out_of_a_copy_of_a_run_are_rebuilt_from_its_records_without_rescoring(tmp_path):
    """Committed runs hold their records but not their policies (``.gitignore``): a resume retrains them."""
    config = replace(CONFIG, rounds=2)
    run_toy(tmp_path, config)
    logs = [tmp_path / f"round-{r}" / "rewards.jsonl" for r in (1, 2)]
    rewards = [log.read_bytes() for log in logs]
    sft_records = [tmp_path / f"round-{r}" / "sft.json" for r in (1, 2)]
    first_training = [record.read_bytes() for record in sft_records]
    policies = [weights(policy_dir(tmp_path, r)) for r in (1, 2)]
    for r in (1, 2):
        shutil.rmtree(policy_dir(tmp_path, r))
    run_toy(tmp_path, config)
    assert [log.read_bytes() for log in logs] == rewards  # nothing scored again
    assert [record.read_bytes() for record in sft_records] == first_training  # the first SFT's record stays
    for r, before in zip((1, 2), policies):
        after = weights(policy_dir(tmp_path, r))
        assert all(torch.equal(before[name], after[name]) for name in before)


@pytest.mark.skipif(not (SHARED_DATA / "squad" / "squad_val.json").exists(), reason="shared data absent")
def test_killed_training_run_resumes_without_recomputing_a_reward_and_takes_more_rounds(tmp_path):
    command = [
        str(Path(sys.executable).with_name("seal")), "knowledge", "train", "--model", "tiny-random",
        "--data", str(SHARED_DATA / "squad" / "squad_val.json"), "--restem.rounds", "1", "--n_train_passages", "2",
        "--restem.k", "2", "--n_passages", "2", "--train.epochs", "1", "--sampling.max_new_tokens", "16",
        "--answer_tokens", "4", "--lora.rank", "4",
        "--quiet", "--out", str(tmp_path / "run"),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    rewards = tmp_path / "run" / "round-1" / "rewards.jsonl"
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and len(AppendOnlyLog(rewards).records()) < 2:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    before = AppendOnlyLog(rewards).records()
    assert 2 <= len(before) < 6, "the run should die in the middle of its rewards"

    finished = subprocess.run([*command, "--resume"], env=env, capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr[-2000:]
    after = AppendOnlyLog(rewards).records()
    assert after[: len(before)] == before  # finished rewards kept, byte for byte, not recomputed
    assert len(after) == 6 and len({r["unit"] for r in after}) == 6  # 2 passages x (baseline + K=2), no duplicate
    assert (tmp_path / "run" / "round-1" / "eval" / "summary.json").exists()
    assert (tmp_path / "run" / "report.md").exists() and (tmp_path / "run" / "accuracy.png").exists()
    phases = seconds_by_phase(tmp_path / "run", 1)
    assert set(phases) == set(PHASES)
    sft = json.loads((tmp_path / "run" / "round-1" / "sft.json").read_text())
    assert (phases["SFT"] > 0) == (sft["n_examples"] > 0)  # tiny-random may keep nothing to train on
    assert all(phases[name] > 0 for name in ("sample self-edits", "score self-edits", "held-out eval"))
    report = (tmp_path / "run" / "report.md").read_text()
    assert "Compute seconds per phase" in report and "| 1 | " in report.split("held-out passages, by round")[1]
    examples = tmp_path / "run" / "examples.json"
    first_examples = json.loads(examples.read_text())["by_round"]
    assert list(first_examples) == ["0", "1"]

    one_more_round = subprocess.run(
        [*command, "--resume", "--restem.rounds", "2"], env=env, capture_output=True, text=True
    )
    assert one_more_round.returncode == 0, one_more_round.stderr[-2000:]
    assert AppendOnlyLog(rewards).records() == after  # round 1 untouched; round 2 starts from its policy
    assert len(AppendOnlyLog(tmp_path / "run" / "round-2" / "rewards.jsonl").records()) == 6
    assert (tmp_path / "run" / "round-2" / "eval" / "summary.json").exists()
    by_round = json.loads(examples.read_text())["by_round"]  # the final policy's, beside the untouched model's
    assert list(by_round) == ["0", "2"] and by_round["0"] == first_examples["0"]
    other_k = subprocess.run(
        [*command, "--resume", "--restem.rounds", "2", "--restem.k", "3"], env=env, capture_output=True, text=True
    )
    assert other_k.returncode != 0 and "restem.k 2 -> 3" in other_k.stderr


def test_report_correlates_self_edit_properties_with_their_advantage():
    passage = "the bridge was completed in 1871 by Ottilie Brask"
    prompt = f"Read the passage and list its implications: {passage}"

    def record(item: str, text: str, reward: float, baseline: bool = False) -> dict:
        rejected = "empty self-edit" if not text and not baseline else None
        return {
            "item_id": item, "baseline": baseline, "reward": reward, "prompt": prompt, "self_edit": text,
            "rejected": rejected,
        }  # fmt: skip

    assert self_edit_features("the bridge the unknown", passage) == {
        "words": 4.0, "from the passage": 0.75, "distinct": 0.75,
    }  # fmt: skip
    records = [
        record("a", "", 0.2, baseline=True),
        record("a", "bridge completed 1871", 0.6),  # all from the passage: advantage +0.4
        record("a", "bridge over implications", 0.2),  # a third (the instruction is not the passage): 0
        record("a", "dragons sing loudly", 0.0),  # none: -0.2
        record("a", "", 0.0),  # rejected: left out
        record("b", "no baseline for this item", 1.0),
    ]
    favoured = what_rewards_favour(records, {"a": passage, "b": passage})
    assert favoured["from the passage"][0] == pytest.approx((1 + 1 / 3 + 0) / 3)
    assert favoured["from the passage"][1] == pytest.approx(1.0)  # advantage grows linearly with it here
    assert np.isnan(favoured["words"][1])  # every self-edit has 3 words: no correlation to speak of
    assert what_rewards_favour(records[:2], {"a": passage}) == {}

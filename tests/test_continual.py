import json

import numpy as np
import pytest

from seal.domains.knowledge.continual import compare, run_continual, sequence_measures
from seal.domains.knowledge.evaluate import EvalConfig
from seal.engine.bank import LoraBank
from seal.engine.generation import SamplingConfig
from seal.engine.lora import LoraConfig
from seal.engine.training import TrainConfig
from seal.loops.continual import ContinualConfig, run_sequence
from seal.loops.inner import InnerLoop
from seal.models import load_model
from seal.runs import RunDirectory
from tests.test_restem import ToyDomain

SAMPLING = SamplingConfig(temperature=1.0, max_new_tokens=16)
ITEMS = ["the Varnholt Bridge", "quenalite", "Ferrowick Hall"]


def evaluation(data) -> EvalConfig:
    return EvalConfig(
        model="tiny-random", data=str(data), split="all", sampling=SAMPLING,
        lora=LoraConfig(rank=4, alpha=8), train=TrainConfig(learning_rate=1e-2, epochs=1),
    )  # fmt: skip


def toy_sequence(strategy: str) -> list[dict]:
    loaded = load_model("tiny-random")
    loop = InnerLoop(LoraBank(loaded.model, loaded.tokenizer, LoraConfig(rank=4, alpha=8)), ToyDomain())
    return run_sequence(loop, ITEMS, ContinualConfig(1, len(ITEMS), strategy), SAMPLING, sequence=0)


def test_every_update_stays_in_the_weights_and_is_scored_on_all_items_so_far():
    records = toy_sequence("merge")
    assert [r["step"] for r in records] == [0, 1, 2, 3]
    assert [len(r["rewards"]) for r in records] == [3, 1, 2, 3]  # untouched on all, then items 1..k
    assert records[0]["rewards"] == [0.0, 0.0, 0.0]  # tiny-random writes only special tokens before any update
    assert records[1]["rewards"][0] > 0  # the first update changed the model ...
    assert records[3]["rewards"][0] != records[1]["rewards"][0]  # ... and later ones changed it further
    assert all(r["replayed"] == 0 and r["train_tokens"] > 0 for r in records[1:])


def test_replay_rehearses_earlier_self_edit_data():
    merge, replay = toy_sequence("merge"), toy_sequence("replay")
    assert [r["replayed"] for r in replay[1:]] == [0, 1, 1]  # one earlier sequence per new one (ratio 1)
    untimed = [{k: v for k, v in r.items() if k != "seconds"} for r in (merge[1], replay[1])]
    assert untimed[0] == untimed[1]  # nothing to replay at step 1: the same update
    assert replay[2]["train_tokens"] > merge[2]["train_tokens"]


def test_run_writes_the_matrix_and_resumes_without_redoing_a_sequence(tmp_path, squad_file, monkeypatch):
    config = ContinualConfig(sequences=3, steps=2)
    straight = run_continual(evaluation(squad_file), config, tmp_path / "straight", progress=False)
    matrix = json.loads((tmp_path / "straight" / "matrix.json").read_text())
    assert np.array(matrix["mean"], dtype=float).shape == (3, 2)
    assert matrix["mean"][1][1] is None and matrix["std"][1][1] is None  # passage 2 not seen after step 1
    assert all(v is not None for v in matrix["mean"][0] + matrix["mean"][2])
    assert (tmp_path / "straight" / "forgetting.png").exists() and (
        tmp_path / "straight" / "first_passage.png"
    ).exists()

    import seal.domains.knowledge.continual as continual

    real, calls = continual.run_sequence, []

    def dies_in_second_sequence(loop, items, config, sampling, sequence, *rest):
        calls.append(sequence)
        if calls == [0, 1]:
            raise KeyboardInterrupt
        return real(loop, items, config, sampling, sequence, *rest)

    monkeypatch.setattr(continual, "run_sequence", dies_in_second_sequence)
    with pytest.raises(KeyboardInterrupt):
        run_continual(evaluation(squad_file), config, tmp_path / "resumed", progress=False)
    calls.clear()
    resumed = run_continual(evaluation(squad_file), config, tmp_path / "resumed", resume=True, progress=False)
    assert calls == [1, 2]  # sequence 0 was finished and is not redone

    def steps(name):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in RunDirectory(tmp_path / name).records()]

    assert steps("resumed") == steps("straight")
    assert {k: v for k, v in resumed.items() if k != "seconds_per_step"} == {
        k: v for k, v in straight.items() if k != "seconds_per_step"
    }


def test_strategies_are_compared_on_the_same_sequences(tmp_path, squad_file):
    for strategy in ("merge", "replay"):
        run_continual(evaluation(squad_file), ContinualConfig(2, 2, strategy), tmp_path / strategy, progress=False)
    table = compare([tmp_path / "merge", tmp_path / "replay"])
    assert "| merge |" in table and "| replay |" in table
    seconds = json.loads((tmp_path / "replay" / "summary.json").read_text())["seconds_per_step"]
    assert f"| {sum(seconds.values()):.1f} ({seconds['sample']:.1f} + " in table
    for name in ("retention", "retention_over_steps", "plasticity"):
        assert f"replay - merge, {name}: " in table
    assert "paired over 2 sequences" in table
    run_continual(evaluation(squad_file), ContinualConfig(2, 2, seed=1), tmp_path / "other", progress=False)
    with pytest.raises(ValueError, match="different passage sequences"):
        compare([tmp_path / "merge", tmp_path / "other"])


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(strategy="ewc"), "--continual.strategy"),
        (dict(steps=0), "--continual.steps"),
        (dict(replay_ratio=-1), "--continual.replay_ratio"),
    ],
)
def test_bad_settings_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        ContinualConfig(**bad)


def test_more_steps_than_passages_is_refused(tmp_path, squad_file):
    with pytest.raises(ValueError, match="--continual.steps 3 needs that many passages, the data has 2"):
        run_continual(evaluation(squad_file), ContinualConfig(1, 3), tmp_path, progress=False)


def test_measures_average_the_right_cells_of_the_forgetting_matrix():
    nan = np.nan
    matrix = np.array([[0.1, 0.1, 0.1], [0.6, nan, nan], [0.4, 0.8, nan], [0.2, 0.5, 0.9]])
    measures = sequence_measures(matrix[None])
    assert measures["retention"] == pytest.approx([(0.2 + 0.5) / 2])
    assert measures["retention_over_steps"] == pytest.approx([(0.4 + 0.2 + 0.5) / 3])
    assert measures["plasticity"] == pytest.approx([(0.6 + 0.8 + 0.9) / 3])

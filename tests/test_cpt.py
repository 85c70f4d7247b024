"""The continued-pretraining setting: one update on every passage, every question asked, resumable."""

import json

import pytest

from seal.domain import RunStopped
from seal.domains.knowledge import cpt
from seal.domains.knowledge.compare import compare_runs
from seal.domains.knowledge.evaluate import EvalConfig, run_eval
from seal.engine import training
from seal.engine.generation import SamplingConfig
from seal.engine.lora import LoraConfig
from seal.engine.training import TrainConfig
from seal.models.adapters import is_adapter_dir
from seal.runs import RunDirectory
from tests.conftest import PASSAGES


def config(data, **overrides) -> EvalConfig:
    fields = dict(
        setting="cpt", model="tiny-random", data=str(data), split="all", n_self_edits=2,
        sampling=SamplingConfig(temperature=1.0, max_new_tokens=12), answer_tokens=6,
        lora=LoraConfig(rank=4, alpha=8), train=TrainConfig(epochs=2, batch_size=2, gradient_accumulation=2),
    )  # fmt: skip
    return EvalConfig(**{**fields, **overrides})


def without_timings(directory):
    return [json.dumps(r, sort_keys=True) for r in RunDirectory(directory).records()]


@pytest.mark.parametrize("condition", ["base", "passage", "self-edit"])
def test_each_condition_is_one_update_and_every_question(tmp_path, squad_file, condition):
    summary = run_eval(config(squad_file, condition=condition), tmp_path, progress=False)
    n_questions = sum(len(p["questions"]) for p in PASSAGES)
    records = RunDirectory(tmp_path).records()
    assert len(records) == summary["n_questions"] == n_questions
    assert {r["setting"] for r in records} == {"cpt"} and summary["setting"] == "cpt"
    assert not (tmp_path / cpt.TRAINING_STATE).exists()  # removed once every answer is written
    if condition == "base":
        assert summary["train"] is None and not (tmp_path / "adapter").exists()
        return
    documents = len(PASSAGES)  # the passages ...
    if condition == "self-edit":
        self_edits = [json.loads(line) for line in (tmp_path / cpt.SELF_EDITS).read_text().splitlines()]
        assert [len(r["self_edits"]) for r in self_edits] == [2] * len(PASSAGES)
        documents += sum(len([s for s in t.splitlines() if s.strip()]) for r in self_edits for t in r["self_edits"])
    train = summary["train"]
    assert train["documents"] == documents and train["tokens"] > 0 and train["peak_memory_mb"] > 0
    assert train["steps"] == 2 * -(-documents // 4)  # 2 epochs of ceil(documents / (batch 2 x accumulation 2))
    assert is_adapter_dir(tmp_path / "adapter")


def test_killed_in_training_or_answering_resumes_to_the_straight_run(tmp_path, squad_file, monkeypatch):
    cfg = config(squad_file, condition="self-edit")
    run_eval(cfg, tmp_path / "straight", progress=False)
    monkeypatch.setattr(cpt, "CHECKPOINT_SECONDS", 0.0)  # a checkpoint after every step
    steps, real_step = [], training._joint_step

    def dies_at_the_third_step(bank, plans):
        steps.append(1)
        if len(steps) == 3:
            raise KeyboardInterrupt
        return real_step(bank, plans)

    monkeypatch.setattr(training, "_joint_step", dies_at_the_third_step)
    with pytest.raises(KeyboardInterrupt):
        run_eval(cfg, tmp_path / "resumed", progress=False)
    assert (tmp_path / "resumed" / cpt.TRAINING_STATE).exists() and not RunDirectory(tmp_path / "resumed").records()
    resumed_steps = []

    def counted_step(bank, plans):
        resumed_steps.append(1)
        return real_step(bank, plans)

    monkeypatch.setattr(training, "_joint_step", counted_step)
    monkeypatch.setattr(cpt, "PASSAGES_PER_ANSWER_BATCH", 1)
    real_grade = cpt.KnowledgeDomain.grade
    graded = []

    def dies_at_the_second_passage(self, passage, answers):
        graded.append(passage.id)
        if len(graded) == 2:
            raise KeyboardInterrupt
        return real_grade(self, passage, answers)

    monkeypatch.setattr(cpt.KnowledgeDomain, "grade", dies_at_the_second_passage)
    with pytest.raises(KeyboardInterrupt):
        run_eval(cfg, tmp_path / "resumed", resume=True, progress=False)
    assert len(RunDirectory(tmp_path / "resumed").completed_units()) == 1
    total = RunDirectory(tmp_path / "straight").summary()["train"]["steps"]
    assert len(resumed_steps) == total - 2  # from the checkpoint of the second step on
    monkeypatch.setattr(cpt.KnowledgeDomain, "grade", real_grade)
    summary = run_eval(cfg, tmp_path / "resumed", resume=True, progress=False)
    assert len(resumed_steps) == total - 2  # the trained update is read back, not trained again
    assert without_timings(tmp_path / "resumed") == without_timings(tmp_path / "straight")
    straight = RunDirectory(tmp_path / "straight").summary()
    for key in ("steps", "tokens", "final_loss", "documents"):
        assert summary["train"][key] == straight["train"][key]


def test_the_policy_writes_the_self_edits_and_compare_shows_the_setting(tmp_path, squad_file, policy_dir):
    run_eval(config(squad_file, condition="passage"), tmp_path / "passage", progress=False)
    run_eval(config(squad_file, condition="self-edit"), tmp_path / "own", progress=False)
    run_eval(config(squad_file, condition="self-edit", policy=str(policy_dir)), tmp_path / "seal", progress=False)
    own, seal = ((tmp_path / run / cpt.SELF_EDITS).read_text() for run in ("own", "seal"))
    assert own != seal  # the policy wrote them, and the model it updated is the untouched one:
    assert RunDirectory(tmp_path / "seal").summary()["model"] == "tiny-random"
    table = compare_runs([tmp_path / "passage", tmp_path / "seal"])
    assert table.splitlines()[0].split()[:2] == ["condition", "setting"]
    rows = [[cell.strip() for cell in line.split("  ") if cell][:2] for line in table.splitlines()[2:4]]
    assert rows == [["passage", "cpt"], ["self-edit (by round-2/policy)", "cpt"]]
    with pytest.raises(ValueError, match="--policy writes the self-edits of --setting cpt"):
        config(squad_file, condition="self-edit", setting="single", policy="tiny-random")
    with pytest.raises(ValueError, match="gradient accumulation must be >= 1"):
        TrainConfig(gradient_accumulation=0)


def test_answers_that_do_not_fit_in_memory_are_asked_in_halves(tmp_path, squad_file, monkeypatch):
    import torch

    from seal.engine.bank import LoraBank

    n_questions = sum(len(p["questions"]) for p in PASSAGES)
    real_generate, sizes = LoraBank.generate, []

    def fits_two_at_a_time(self, prompts, slots, sampling, batch_size=32, **kwargs):
        sizes.append(batch_size)
        if batch_size > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_generate(self, prompts, slots, sampling, batch_size=batch_size, **kwargs)

    monkeypatch.setattr(LoraBank, "generate", fits_two_at_a_time)
    summary = run_eval(config(squad_file, condition="base"), tmp_path / "halves", progress=False)
    assert summary["n_graded_answers"] == n_questions
    assert sizes[0] == n_questions and sizes[-1] == 2 and all(a > b for a, b in zip(sizes, sizes[1:]))

    def never_fits(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(LoraBank, "generate", never_fits)
    with pytest.raises(RunStopped, match="answering one question does not fit in memory"):
        run_eval(config(squad_file, condition="base"), tmp_path / "never", progress=False)

"""The inner loop: updates scored in groups give what scoring each alone gives."""

import pytest

from seal.domain import Rejection, Update
from seal.engine.bank import LoraBank
from seal.engine.lora import LoraConfig
from seal.engine.training import TrainConfig, TrainingExample
from seal.loops.inner import InnerLoop, Job
from seal.models import load_model
from tests.test_restem import ToyDomain

FAST = TrainConfig(learning_rate=5e-2, epochs=2)


def loop(n_slots: int) -> InnerLoop:
    """fp32, so that a row's answers do not depend on the rows beside it (bf16 kernels differ by batch shape)."""
    loaded = load_model("tiny-random")
    lora = LoraConfig(rank=4, alpha=8, base_precision="fp32")
    return InnerLoop(LoraBank(loaded.model, loaded.tokenizer, lora, n_slots), ToyDomain())


def update(text: str) -> Update:
    return Update((TrainingExample("", text),), FAST, notes=(f"on {text!r}",))


JOBS = [
    Job("a", None, 0),
    Job("b", update("The Varnholt Bridge spans 340 metres."), 1),
    Job("c", Rejection("empty self-edit"), 2),
    Job("d", update("Quenalite is a green mineral."), 3),
    Job("e", None, 4),
    Job("f", update("Ferrowick Hall was built in 1902."), 5),
]


def test_groups_score_like_one_at_a_time_and_keep_job_order():
    together = loop(n_slots=2).evaluate(JOBS)
    single = loop(n_slots=1)
    alone = [single.evaluate([job])[0] for job in JOBS]
    assert [o.reward for o in together] == [o.reward for o in alone]
    assert [o.score.details for o in together] == [o.score.details for o in alone]
    assert [o.train.tokens if o.train else 0 for o in together] == [o.train.tokens if o.train else 0 for o in alone]
    assert together[2].rejected == "empty self-edit" and together[2].reward == 0.0
    assert together[1].notes == ("on 'The Varnholt Bridge spans 340 metres.'",) and together[0].train is None
    losses = [(o.train.final_loss, a.train.final_loss) for o, a in zip(together, alone) if o.train]
    assert [x for x, _ in losses] == pytest.approx([y for _, y in losses], rel=1e-4)


def test_a_grader_fault_costs_only_its_own_job(monkeypatch):
    def grade(self, item, answers):
        if item == "d":
            raise RuntimeError("judge timed out")
        return real(self, item, answers)

    real = ToyDomain.grade
    monkeypatch.setattr(ToyDomain, "grade", grade)
    outcomes = loop(n_slots=4).evaluate(JOBS)
    assert outcomes[3].error == "RuntimeError: judge timed out" and outcomes[3].reward is None
    assert outcomes[3].rejected is None and outcomes[2].rejected == "empty self-edit"  # a rejection is a score
    assert [o.error for i, o in enumerate(outcomes) if i != 3] == [None] * 5

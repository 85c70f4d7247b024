"""SelfAdaptingModel, the Python API of `seal serve`: learning, answering per tenant, forgetting, saving."""

import os
import shutil

import pytest

from seal.engine.generation import SamplingConfig
from seal.engine.lora import LoraConfig
from seal.engine.training import TrainConfig
from seal.serving.answers import Chat
from seal.serving.config import DocumentError, DocumentTooLong, QueueFull, ServeConfig, check_document
from seal.serving.model import ADAPTERS, SelfAdaptingModel

TINY = ServeConfig(
    model="tiny-random",
    lora=LoraConfig(rank=4, alpha=8, base_precision="fp32"),
    train=TrainConfig(learning_rate=5e-2, epochs=5),  # strong enough to change tiny-random's answers
    sampling=SamplingConfig(temperature=0.7, top_p=0.95, max_new_tokens=12),
    slots=2,
    max_queued=3,
)
ZOBERRA = "Zoberra cake is a dessert from the island of Pellesh. It was invented in 1762 by Hesper Lume."
TREATY = "The Treaty of Oskelund was signed in 1611. It was drafted by the jurist Amalie Brandt."
QUESTIONS = ["Where is Zoberra cake from?", "Who drafted the Treaty of Oskelund?"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return SelfAdaptingModel(TINY, tmp_path_factory.mktemp("state"))


def answers(model, tenant, questions=QUESTIONS):
    return [r.text for r in model.answer([Chat(tenant, [{"role": "user", "content": q}], 8) for q in questions])]


def test_a_learned_document_changes_the_answers_and_records_its_self_edit(model):
    tenant, _ = model.state.create_tenant()
    before = answers(model, tenant)
    document = model.learn(ZOBERRA, "Zoberra cake", tenant)
    assert document.status == "learned" and document.self_edit and document.seconds > 0
    assert [d.id for d in model.documents(tenant)] == [document.id]
    assert model.served_version(tenant).documents == (document.id,)
    assert answers(model, tenant) != before


def test_tenants_never_see_each_others_knowledge(model):
    alice, _ = model.state.create_tenant()
    bob, _ = model.state.create_tenant()
    model.learn(TREATY, None, bob)
    bob_before = answers(model, bob)
    model.learn(ZOBERRA, None, alice)
    assert answers(model, bob) == bob_before  # alone, after alice learned
    chats = [Chat(t, [{"role": "user", "content": q}], 8) for t in (alice, bob) for q in QUESTIONS]
    together = [r.text for r in model.answer(chats)]
    assert together[2:] == bob_before  # in one batch with alice's rows
    assert together[:2] == answers(model, alice) != bob_before


def test_knowledge_holds_every_document_and_forgetting_one_is_exact(model):
    tenant, _ = model.state.create_tenant()
    first = model.learn(ZOBERRA, None, tenant)
    second = model.learn(TREATY, None, tenant)
    assert model.served_version(tenant).documents == (first.id, second.id)
    both = answers(model, tenant)
    assert model.forget(first.id, tenant) and not model.forget(first.id, tenant)
    assert [d.id for d in model.documents(tenant)] == [second.id]
    assert model.served_version(tenant).documents == (second.id,)
    only_treaty, _ = model.state.create_tenant()
    model.learn(TREATY, None, only_treaty)
    assert answers(model, tenant) == answers(model, only_treaty) != both  # as if it had never been learned
    model.forget(second.id, tenant)
    assert model.served_version(tenant) is None  # nothing left: the base model answers
    assert answers(model, tenant) == answers(model, "no-such-tenant")


def test_bad_documents_are_refused_with_a_reason(model):
    tenant, _ = model.state.create_tenant()
    for text, reason in [("   ", "empty"), ("abc\x00def", "binary"), ("PK\x03\x04\x14" * 9, "binary"), (42, "string")]:
        with pytest.raises(DocumentError, match=reason):
            model.submit(text, None, tenant)
    assert check_document("\ufeffZoberra\u200b cake.", None, 100) == ("Zoberra\u200b cake.",) * 2  # BOM, zero width
    with pytest.raises(ValueError, match="no tenant 'nobody'"):
        model.submit(ZOBERRA, None, "nobody")
    with pytest.raises(DocumentTooLong, match="20,001 characters; at most 20,000"):
        model.submit("a" * 20_001, None, tenant)
    for _ in range(TINY.max_queued):
        model.submit(ZOBERRA, None, tenant)
    with pytest.raises(QueueFull):
        model.submit(ZOBERRA, None, tenant)
    assert all(d.status == "queued" for d in model.documents(tenant))
    while model.learn_next():
        pass


def test_a_damaged_knowledge_file_is_not_served_and_its_tenant_is_retrained(model):
    tenant, _ = model.state.create_tenant()
    model.learn(ZOBERRA, None, tenant)
    model.learn(TREATY, None, tenant)
    newest, previous = model.state.versions(tenant)[:2]
    damage(model.directory / ADAPTERS / newest.adapter)
    assert model.served_version(tenant) == previous  # the last intact version instead
    assert model.corrupt == {newest.adapter}
    model.refresh()
    retrained = model.served_version(tenant)
    assert retrained.documents == newest.documents and model.state.versions(tenant) == [retrained, previous]
    assert model.corrupt == set()  # the damaged file is gone


def test_damage_done_while_stopped_is_found_on_opening(tmp_path):
    with SelfAdaptingModel(TINY, tmp_path / "state") as model:
        model.learn(ZOBERRA)
        (version,) = model.state.versions("default")
    damage(tmp_path / "state" / ADAPTERS / version.adapter)
    with SelfAdaptingModel.load(tmp_path / "state") as reopened:
        assert reopened.served_version("default") is None and reopened.corrupt == {version.adapter}


def test_one_process_at_a_time_uses_a_state_directory(model, tmp_path):
    with pytest.raises(ValueError, match=f"is in use by process {os.getpid()}; one process at a time"):
        SelfAdaptingModel.load(model.directory)
    temporary = SelfAdaptingModel(TINY)
    assert temporary.directory.is_dir()
    temporary.close()
    assert not temporary.directory.exists()  # a temporary state goes with its model


def damage(adapter_directory):
    weights = adapter_directory / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10] + b"0123456789")


def test_saved_knowledge_answers_the_same_after_loading(model, tmp_path):
    tenant, _ = model.state.create_tenant()
    model.learn(TREATY, None, tenant)
    expected = answers(model, tenant)
    model.save(tmp_path / "saved")
    with pytest.raises(FileExistsError):
        model.save(tmp_path / "saved")
    loaded = SelfAdaptingModel.load(tmp_path / "saved")
    assert answers(loaded, tenant) == expected
    assert [d.title for d in loaded.documents(tenant)] == [TREATY[:80]]  # no title: the first line, cut


def test_a_state_directory_refuses_another_model(model, tmp_path):
    shutil.copytree(model.directory, tmp_path / "copy")
    other = ServeConfig(**{**TINY.__dict__, "lora": LoraConfig(rank=8, alpha=8, base_precision="fp32")})
    with pytest.raises(ValueError, match="holds knowledge of another lora"):
        SelfAdaptingModel(other, tmp_path / "copy")


def test_streamed_pieces_make_the_answer(model):
    pieces = []
    chat = Chat("nobody", [{"role": "user", "content": "Tell me a story"}], 12, on_text=pieces.append)
    (reply,) = model.answer([chat])
    assert "".join(pieces) == reply.text and reply.completion_tokens == 12 and reply.finish_reason == "length"


def test_a_document_forgotten_while_it_is_learned_never_reaches_the_knowledge(model, monkeypatch):
    tenant, _ = model.state.create_tenant()
    kept = model.learn(TREATY, None, tenant)
    doomed = model.submit(ZOBERRA, None, tenant)
    bank = model._learning_bank()
    train = bank.train

    def train_then_forget(jobs, **options):
        stats = train(jobs, **options)
        if model.state.document(tenant, doomed.id):
            model.forget(doomed.id, tenant, wait=False)  # deleted after training, before the commit
        return stats

    monkeypatch.setattr(bank, "train", train_then_forget)
    model.learn_next()
    assert model.served_version(tenant).documents == (kept.id,)
    assert model.state.document(tenant, doomed.id) is None
    files = {path.name for path in (model.directory / ADAPTERS).iterdir()}
    assert files == model.state.adapters_in_use()  # the knowledge trained with it is gone too


def test_forgetting_without_waiting_takes_effect_at_once_and_the_rest_comes_back(model):
    tenant, _ = model.state.create_tenant()
    first = model.learn(ZOBERRA, None, tenant)
    second = model.learn(TREATY, None, tenant)
    with_both = answers(model, tenant)
    model.forget(first.id, tenant, wait=False)
    assert model.served_version(tenant) is None  # every kept version holds the forgotten document
    assert answers(model, tenant) == answers(model, "no-such-tenant")
    model.refresh()
    assert model.served_version(tenant).documents == (second.id,)
    assert answers(model, tenant) != with_both

"""``SelfAdaptingModel``: a model that learns documents by writing and training on its own self-edits,
keeps what it learned on disk, and answers each tenant from that tenant's knowledge only.

Learning a document is SEAL's inner loop: the model writes a self-edit for it (implications by
default) and a LoRA adapter is trained on the document and its self-edit. A tenant's knowledge is one
adapter, trained further on each new document together with as many training examples again
(``replay_ratio``) drawn from its earlier documents (rehearsal: without it, each new document erases
the last ones). How a tenant should hold many documents was chosen by measurement
(``benchmarks/knowledge_store.py``, ``docs/serving.md``): adding up per-document adapters, which
would make forgetting free, loses every document once ten are added. Forgetting a document instead
retrains the tenant's adapter from scratch on the documents that remain (their self-edits are kept,
so nothing is sampled again).

Answers of many tenants share one batched generation: a tenant's knowledge sits in one slot of the
serving :class:`~seal.engine.bank.LoraBank` (its ``slots`` most recently asked tenants stay loaded).
Learning runs on a second copy of the model, so it never blocks answering; a tenant's new knowledge
version becomes visible at once, between two generated batches, when its file and database row are
committed.
"""

from __future__ import annotations

import copy
import logging
import random
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from seal.domain import Rejection
from seal.domains.knowledge.data import Passage, passage_id
from seal.domains.knowledge.domain import KnowledgeDomain
from seal.engine.bank import LoraBank
from seal.engine.generation import SamplingConfig, sample, tokenize_prompt
from seal.engine.training import TrainingExample, TrainJob
from seal.grading import OfflineGrader
from seal.models.loading import load_base
from seal.seeding import unit_seed
from seal.serving.answers import Chat, Reply, RowDecoder, end_tokens, route_tokens
from seal.serving.config import SETTINGS, QueueFull, ServeConfig, check_document, check_settings, saved_config
from seal.serving.files import ADAPTERS, KnowledgeFiles, hold_state
from seal.serving.state import DEFAULT_TENANT, Document, Forgotten, State, Version

log = logging.getLogger(__name__)


@dataclass
class _Slots:
    """Which tenant's knowledge (and which version of it) sits in which serving slot, least recently used first."""

    n: int
    loaded: OrderedDict[str, tuple[int, int | None]] = field(default_factory=OrderedDict)

    def slot_for(self, tenant: str) -> int:
        """The tenant's slot (if it has none, the least recently used one is taken)."""
        if tenant in self.loaded:
            self.loaded.move_to_end(tenant)
            return self.loaded[tenant][0]
        used = {slot for slot, _ in self.loaded.values()}
        free = next((s for s in range(self.n) if s not in used), None)
        if free is None:
            _, (free, _) = self.loaded.popitem(last=False)
        self.loaded[tenant] = (free, None)
        return free


class SelfAdaptingModel:
    """Learn documents, answer from them, forget them; everything learned lives in ``state`` (a
    directory, created if needed; by default a temporary one, removed by :meth:`close`, which
    :meth:`save` can copy first). One process at a time may use a state directory."""

    def __init__(self, config: ServeConfig = ServeConfig(), state: str | Path | None = None):
        self.config = config
        self._temporary = state is None
        self.directory = Path(state) if state is not None else Path(tempfile.mkdtemp(prefix="seal-state-"))
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_file = hold_state(self.directory)
        check_settings(self.directory, config)
        self.files = KnowledgeFiles(self.directory)
        self.state = State(self.directory / "state.sqlite")
        self.domain = KnowledgeDomain(OfflineGrader(), config.train, config.self_edit_prompt)
        loaded = load_base(config.model, config.lora)
        self.bank = LoraBank(loaded.model, loaded.tokenizer, config.lora, n_slots=config.slots, name=config.model)
        self.tokenizer = loaded.tokenizer
        # requests are checked on the server's threads while answers are generated: a fast tokenizer
        # must not encode on two threads at once, so checking has its own copy and lock
        self._checking = (copy.deepcopy(loaded.tokenizer), threading.Lock())
        self.end_tokens = end_tokens(loaded.tokenizer, loaded.model.generation_config.eos_token_id)
        self._answering = threading.Lock()
        self._slots = _Slots(config.slots)
        self._learner: LoraBank | None = None
        self._learning = threading.Lock()
        self.progress: dict[str, float] = {}
        """Share of its training done, for each document being learned."""
        self.corrupt: set[str] = set()
        """Adapter files found damaged (never served)."""
        self._stale: set[str] = set()
        self.files.remove_all_but(self.state.adapters_in_use())

    # the Python API

    def learn(self, text: str, title: str | None = None, tenant: str = DEFAULT_TENANT) -> Document:
        """Learn a document now (with any queued before it); returns it, ``learned`` or ``failed``."""
        document = self.submit(text, title, tenant)
        while (current := self.state.document(tenant, document.id)) and current.status in ("queued", "learning"):
            self.learn_next()
        return current or document

    def ask(self, question: str, tenant: str = DEFAULT_TENANT, max_tokens: int = 256) -> str:
        """The answer from what ``tenant`` has learned (greedy)."""
        return self.answer([Chat(tenant, [{"role": "user", "content": question}], max_tokens)])[0].text

    def forget(self, document_id: str, tenant: str = DEFAULT_TENANT, wait: bool = True) -> bool:
        """Forget a document: from this moment it influences no answer (a version holding it is never
        served again). The tenant's knowledge without it is then formed anew: now, or with ``wait=False``
        by :meth:`refresh` (the server's learner), the tenant answering from an older version or the
        base model meanwhile. False if the tenant has no such document."""
        if not self.state.delete_document(tenant, document_id):
            return False
        self.progress.pop(document_id, None)
        self._stale.add(tenant)
        if wait:
            self.refresh()
        return True

    def documents(self, tenant: str = DEFAULT_TENANT) -> list[Document]:
        return self.state.documents(tenant)

    def close(self) -> None:
        """Let another process use the state directory (a temporary one is removed)."""
        with self._learning, self._answering:
            self.state.close()
            self._lock_file.close()
        if self._temporary:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> SelfAdaptingModel:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def save(self, directory: str | Path) -> None:
        """A consistent copy of everything learned, which :meth:`load` opens."""
        target = Path(directory)
        if target.exists() and any(target.iterdir()):
            raise FileExistsError(f"{target}: not empty; save into a new directory")
        target.mkdir(parents=True, exist_ok=True)
        with self._learning:  # no version is committed while copying
            shutil.copy(self.directory / SETTINGS, target / SETTINGS)
            shutil.copytree(self.files.directory, target / ADAPTERS)
            self.state.backup(target / "state.sqlite")

    @classmethod
    def load(cls, directory: str | Path) -> SelfAdaptingModel:
        """The model saved (or served) in ``directory``, with the settings it was made with."""
        return cls(saved_config(Path(directory)), directory)

    # learning

    def submit(self, text: str, title: str | None = None, tenant: str = DEFAULT_TENANT) -> Document:
        """Queue a document to be learned (checked first: :class:`DocumentError`, :class:`QueueFull`)."""
        text, title = check_document(text, title, self.config.max_document_chars)
        document = self.state.add_document(tenant, title, text, self.config.max_queued)
        if document is None:
            raise QueueFull(f"{self.config.max_queued} documents are already waiting to be learned")
        return document

    def refresh(self) -> None:
        """Retrain the knowledge of tenants who forgot a document (or whose newest file is damaged) from
        scratch on the documents they keep; then the files no version refers to go."""
        with self._learning:
            while self._stale:
                tenant = self._stale.pop()
                try:
                    self._rebuild(tenant, {})
                except BaseException:
                    self._stale.add(tenant)  # tried again on the next refresh
                    raise

    def learn_next(self) -> Document | None:
        """Learn the oldest queued document (of any tenant) and commit its tenant's new knowledge;
        returns it, or None if nothing is queued. A failure marks the document ``failed``."""
        with self._learning:
            document = self.state.next_queued()
            if document is None:
                return None
            self.progress[document.id] = 0.0
            try:
                self._learn(document)
            except Forgotten:
                pass  # forgotten while it was learned: the tenant is retrained by refresh
            except Exception as error:  # the document failed, the learner carries on
                log.exception("learning %s failed", document.id)
                self.state.fail(document.id, f"{type(error).__name__}: {error}")
            finally:
                self.progress.pop(document.id, None)
            return self.state.document(document.tenant, document.id)

    def _learn(self, document: Document) -> None:
        """Write the document's self-edit, train the tenant's adapter further on it with rehearsal of
        earlier documents, and commit. A tenant whose newest version is not all it learned (a document
        forgotten, a file damaged) is retrained from scratch with the new document instead."""
        started = time.perf_counter()
        self._write_self_edit(document)
        tenant = document.tenant
        previous = self.served_version(tenant)
        earlier = previous.documents if previous else ()
        learned = [d.id for d in self.state.documents(tenant) if d.status == "learned"]
        if sorted(learned) != sorted(earlier):
            self._rebuild(tenant, {document.id: started})
            return
        new = self._examples(document.id)
        pool = [e for d in earlier for e in self._examples(d)]
        rng = random.Random(unit_seed(self.config.seed, passage_id(self.state.text(document.id)), "replay"))
        rehearsed = rng.sample(pool, min(len(pool), round(self.config.replay_ratio * len(new))))
        initial = self.files.read(previous.adapter) if previous else None
        job = TrainJob(0, [*new, *rehearsed], self.config.train, self._seed(document.id), initial)
        if not self._train_and_commit(tenant, [*earlier, document.id], job, {document.id: started}):
            self._rebuild(tenant, {document.id: started})  # a document was forgotten meanwhile

    def _rebuild(self, tenant: str, learning: dict[str, float]) -> None:
        """The tenant's adapter trained afresh on every document it keeps (and ``learning``: id -> when
        its learning started), committed; again if a document is forgotten meanwhile."""
        self._stale.discard(tenant)  # a forget from now on marks it again
        while True:
            documents = [d.id for d in self.state.documents(tenant) if d.status == "learned" or d.id in learning]
            try:
                examples = [e for d in documents for e in self._examples(d)]
            except Forgotten:
                continue
            job = TrainJob(0, examples, self.config.train, self._seed(*documents)) if documents else None
            if self._train_and_commit(tenant, documents, job, learning):
                return

    def _train_and_commit(
        self, tenant: str, documents: list[str], job: TrainJob | None, learning: dict[str, float]
    ) -> bool:
        """Train ``job`` (None: no knowledge at all), write its adapter, and commit it as the tenant's
        version holding ``documents``; False (nothing committed) if one of them was forgotten meanwhile."""
        name, digest = "", ""
        if job is not None:
            bank = self._learning_bank()
            bank.train([job], on_step=self._report_progress(learning))
            lora = self.config.lora
            name, digest = self.files.write(bank.adapter(0), lora.rank, lora.alpha, self.config.model)
        seconds = {d: time.perf_counter() - started for d, started in learning.items()}
        if not self.state.commit_version(tenant, name, digest, documents, seconds):
            if name:
                self.files.remove(name)
            return False
        self._prune_versions(tenant)
        return True

    def _report_progress(self, learning: dict[str, float]) -> Callable[[int, int], None]:
        def on_step(done: int, total: int) -> None:
            for document_id in learning:
                if document_id in self.progress:
                    self.progress[document_id] = done / total

        return on_step

    def _write_self_edit(self, document: Document) -> None:
        """The model's self-edit of the document, stored with it (kept if it has one: a resumed document)."""
        if document.self_edit is not None:
            return
        bank = self._learning_bank()
        prompt = self.domain.prompt(self._passage(document.id))
        seed = self._seed(document.id)
        self.state.set_self_edit(
            document.id, sample(bank.model, bank.tokenizer, prompt, 1, self.config.sampling, seed)[0]
        )

    def _examples(self, document_id: str) -> tuple[TrainingExample, ...]:
        """What a document trains on: its text and its self-edit (the text alone if the self-edit is empty)."""
        passage = self._passage(document_id)
        update = self.domain.to_update(passage, self.state.self_edit(document_id) or "")
        return (self.domain.baseline_update(passage) if isinstance(update, Rejection) else update).examples

    def _passage(self, document_id: str) -> Passage:
        return Passage(document_id, self.state.title(document_id), self.state.text(document_id), ())

    def _seed(self, *document_ids: str) -> int:
        """A seed from the documents' texts: the same documents learn the same way."""
        return unit_seed(self.config.seed, *(passage_id(self.state.text(d)) for d in document_ids))

    def _learning_bank(self) -> LoraBank:
        """The learner's own copy of the model (training switches a model's mode; answering goes on meanwhile)."""
        if self._learner is None:
            loaded = load_base(self.config.model, self.config.lora)
            self._learner = LoraBank(loaded.model, loaded.tokenizer, self.config.lora, name=self.config.model)
        return self._learner

    def _prune_versions(self, tenant: str) -> None:
        """Keep the newest two versions that can be served (the older is the fallback if the newer's file
        is found damaged; one holding a forgotten document or a damaged file never is); then the files no
        version refers to go."""
        present = {d.id for d in self.state.documents(tenant)}
        versions = self.state.versions(tenant)
        servable = [v for v in versions if set(v.documents) <= present and v.adapter not in self.corrupt]
        kept = {v.number for v in servable[:2]}
        self.state.drop_versions(tenant, [v.number for v in versions if v.number not in kept])
        referenced = self.state.adapters_in_use()
        self.corrupt &= referenced
        self.files.remove_all_but(referenced)

    # answering

    def answer(self, chats: Sequence[Chat]) -> list[Reply]:
        """Continue each chat from its tenant's knowledge, all in as few batched generations as the
        slots allow; each chat's ``on_text`` hears its answer as it is generated."""
        replies: list[Reply | None] = [None] * len(chats)
        with self._answering:
            for group in self._batches(chats):
                self._answer_batch([chats[i] for i in group], group, replies)
        return [r for r in replies if r is not None]

    def check_chat(self, chat: Chat) -> None:
        """ValueError naming what is wrong with a chat that cannot be answered: one that with its answer
        would not fit the model's context."""
        tokenizer, lock = self._checking
        with lock:
            prompt = tokenizer.apply_chat_template(chat.messages, tokenize=False, add_generation_prompt=True)
            length = len(tokenize_prompt(tokenizer, prompt))
        context = self.bank.model.config.max_position_embeddings
        if length + chat.max_tokens > context:
            raise ValueError(
                f"the conversation has {length} tokens; with max_tokens {chat.max_tokens} it exceeds "
                f"the model's context of {context}"
            )

    def _batches(self, chats: Sequence[Chat]) -> list[list[int]]:
        """Chat indices in groups that share sampling settings and fit the slots (one per tenant)."""
        groups: dict[tuple[float, float], list[list[int]]] = {}
        for i, chat in enumerate(chats):
            batches = groups.setdefault((chat.temperature, chat.top_p), [[]])
            tenants = {chats[j].tenant for j in batches[-1]}
            if chat.tenant not in tenants and len(tenants) == self.config.slots:
                batches.append([])
            batches[-1].append(i)
        return [batch for batches in groups.values() for batch in batches]

    def _answer_batch(self, chats: list[Chat], indices: list[int], replies: list[Reply | None]) -> None:
        slots = [self._slot(chat.tenant) for chat in chats]
        prompts = [self.tokenizer.apply_chat_template(c.messages, tokenize=False, add_generation_prompt=True)
                   for c in chats]  # fmt: skip
        decoders = [RowDecoder(self.tokenizer, chat, self.end_tokens) for chat in chats]
        first = chats[0]
        sampling = SamplingConfig(first.temperature, first.top_p, max(c.max_tokens for c in chats))
        self.bank.generate(prompts, slots, sampling, batch_size=len(prompts), on_tokens=route_tokens(decoders))
        for i, decoder, prompt in zip(indices, decoders, prompts):
            replies[i] = decoder.reply(len(tokenize_prompt(self.tokenizer, prompt)))

    def _slot(self, tenant: str) -> int | None:
        """The serving slot holding the tenant's newest intact knowledge (loaded now if it changed), or
        None (the base model) for a tenant who has none."""
        for _ in range(3):  # the version chosen may be pruned by the learner before it is read
            version = self.served_version(tenant)
            if version is None:
                return None
            slot = self._slots.slot_for(tenant)
            if self._slots.loaded[tenant][1] == version.number:
                return slot
            try:
                weights = self.files.read(version.adapter)
            except OSError:
                continue
            self.bank.set_adapter(slot, weights)
            self._slots.loaded[tenant] = (slot, version.number)
            return slot
        raise RuntimeError(f"the knowledge of tenant {tenant} changed three times while it was being loaded")

    def served_version(self, tenant: str) -> Version | None:
        """The newest version whose documents all still exist and whose file is intact (a damaged file
        is reported in :attr:`corrupt` and skipped); None if there is none, or it holds nothing."""
        present = {d.id for d in self.state.documents(tenant)}
        for version in self.state.versions(tenant):
            if not set(version.documents) <= present:
                continue  # holds a forgotten document
            if not version.adapter:
                return None
            if self._intact(version):
                return version
        return None

    def _intact(self, version: Version) -> bool:
        """Whether the version's file is as committed; a damaged one is reported, never served, and its
        tenant retrained by :meth:`refresh`."""
        if self.files.intact(version.adapter, version.sha256):
            return True
        if version.adapter not in self.corrupt:
            log.error("knowledge file %s is missing or damaged: not served, the tenant is retrained", version.adapter)
        self.corrupt.add(version.adapter)
        self._stale.add(version.tenant)
        return False

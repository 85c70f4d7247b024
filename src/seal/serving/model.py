"""``SelfAdaptingModel``: a model that learns documents by writing and training on its own self-edits,
keeps what it learned on disk, and answers each tenant from that tenant's knowledge only.

Learning a document is SEAL's inner loop: the model writes a self-edit for it (implications by
default), and a fresh LoRA adapter is trained on the document and its self-edit. How a tenant holds
many documents was chosen by measurement (``benchmarks/knowledge_store.py``, ``docs/serving.md``):
every document keeps its own adapter, and the tenant's knowledge is their sum, held as one adapter of
``knowledge_rank`` (:func:`~seal.engine.arithmetic.added`). So learning a document costs the same
however many came before, forgetting one is exact and needs no training (the sum is formed again
without it), and one document's training never disturbs another's.

Answers of many tenants share one batched generation: a tenant's knowledge sits in one slot of the
serving :class:`~seal.engine.bank.LoraBank` (its ``slots`` most recently asked tenants stay loaded).
Learning runs on a second copy of the model, so it never blocks answering; a tenant's new knowledge
version becomes visible at once, between two generated batches, when its file and database row are
committed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import torch

from seal.domain import Rejection
from seal.domains.knowledge.data import Passage, passage_id
from seal.domains.knowledge.domain import KnowledgeDomain
from seal.engine.arithmetic import added
from seal.engine.bank import LoraBank
from seal.engine.generation import SamplingConfig, sample, tokenize_prompt
from seal.engine.lora import LoraConfig
from seal.engine.training import Adapter, TrainConfig, TrainJob
from seal.grading import OfflineGrader
from seal.models.adapters import read_adapter, save_adapter
from seal.models.loading import EMBEDDED_MODEL, load_base
from seal.seeding import unit_seed
from seal.serving.answers import Chat, Reply, RowDecoder, end_tokens, route_tokens
from seal.serving.state import DEFAULT_TENANT, Document, State, Version

log = logging.getLogger(__name__)

SETTINGS = "settings.json"
ADAPTERS = "adapters"


class DocumentError(ValueError):
    """A document that cannot be learned (empty, binary, too long); the message says why."""


class DocumentTooLong(DocumentError):
    """A document over ``max_document_chars``."""


class QueueFull(RuntimeError):
    """The tenant already has as many documents waiting as it may."""


@dataclass(frozen=True)
class ServeConfig:
    """How a self-adapting model learns documents and holds them; fixed for a state directory."""

    model: str = EMBEDDED_MODEL
    """The model that learns and answers: smollm2-135m (embedded), a local directory or a hub id."""
    lora: LoraConfig = LoraConfig()
    train: TrainConfig = TrainConfig()
    sampling: SamplingConfig = SamplingConfig(temperature=0.7, top_p=0.95, max_new_tokens=256)
    """How self-edits are sampled."""
    self_edit_prompt: Literal["implications", "implications-long", "rewrite", "self-qa"] = "implications"
    """How the model is asked for a self-edit of a document."""
    knowledge_rank: int = 128
    """Rank of the adapter that holds a tenant's documents together (their sum, exact up to this rank)."""
    slots: int = 8
    """Tenants whose knowledge stays loaded for answering at once."""
    max_document_chars: int = 20_000
    """Longer documents are refused."""
    max_queued: int = 16
    """Documents a tenant may have waiting to be learned."""
    seed: int = 0

    def __post_init__(self) -> None:
        if self.knowledge_rank < 1 or self.slots < 1 or self.max_document_chars < 1 or self.max_queued < 1:
            raise ValueError(f"knowledge_rank, slots, max_document_chars and max_queued must be >= 1: {self}")

    def fixed(self) -> dict[str, Any]:
        """What a state directory's adapters depend on: they cannot be served by another model or shape."""
        lora = self.lora
        return {"model": self.model, "lora": (lora.rank, lora.alpha, list(lora.target_modules)),
                "knowledge_rank": self.knowledge_rank}  # fmt: skip


@dataclass
class _Slots:
    """Which tenant's knowledge (and which version of it) sits in which serving slot, least recently used first."""

    n: int
    loaded: OrderedDict[str, tuple[int, int | None]] = field(default_factory=OrderedDict)

    def slot_for(self, tenant: str) -> tuple[int, bool]:
        """The tenant's slot, and whether it was already theirs (else the least recently used is taken)."""
        if tenant in self.loaded:
            self.loaded.move_to_end(tenant)
            return self.loaded[tenant][0], True
        used = {slot for slot, _ in self.loaded.values()}
        free = next((s for s in range(self.n) if s not in used), None)
        if free is None:
            _, (free, _) = self.loaded.popitem(last=False)
        self.loaded[tenant] = (free, None)
        return free, False


class SelfAdaptingModel:
    """Learn documents, answer from them, forget them; everything learned lives in ``state`` (a
    directory, created if needed; by default a temporary one, which :meth:`save` can keep)."""

    def __init__(self, config: ServeConfig = ServeConfig(), state: str | Path | None = None):
        self.config = config
        self.directory = Path(state) if state is not None else Path(tempfile.mkdtemp(prefix="seal-state-"))
        self.directory.mkdir(parents=True, exist_ok=True)
        _check_settings(self.directory, config)
        (self.directory / ADAPTERS).mkdir(exist_ok=True)
        self.state = State(self.directory / "state.sqlite")
        self.domain = KnowledgeDomain(OfflineGrader(), config.train, config.self_edit_prompt)
        loaded = load_base(config.model, config.lora)
        knowledge = LoraConfig(**{**asdict(config.lora), "rank": config.knowledge_rank})
        self.bank = LoraBank(loaded.model, loaded.tokenizer, knowledge, n_slots=config.slots, name=config.model)
        self.tokenizer = loaded.tokenizer
        self.end_tokens = end_tokens(loaded.tokenizer, loaded.model.generation_config.eos_token_id)
        self._answering = threading.Lock()
        self._slots = _Slots(config.slots)
        self._learner: LoraBank | None = None
        self._learning = threading.Lock()
        self.progress: dict[str, float] = {}
        """Share of its training done, for each document being learned."""
        self.corrupt: set[str] = set()
        """Adapter files found damaged (never served)."""
        self._verified: dict[str, str] = {}
        self._stale: set[str] = set()
        self._remove_unreferenced_files()

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

    def save(self, directory: str | Path) -> None:
        """A consistent copy of everything learned, which :meth:`load` opens."""
        target = Path(directory)
        if target.exists() and any(target.iterdir()):
            raise FileExistsError(f"{target}: not empty; save into a new directory")
        target.mkdir(parents=True, exist_ok=True)
        with self._learning:  # no version is committed while copying
            shutil.copy(self.directory / SETTINGS, target / SETTINGS)
            shutil.copytree(self.directory / ADAPTERS, target / ADAPTERS)
            self.state.backup(target / "state.sqlite")

    @classmethod
    def load(cls, directory: str | Path) -> SelfAdaptingModel:
        """The model saved (or served) in ``directory``, with the settings it was made with."""
        path = Path(directory) / SETTINGS
        if not path.is_file():
            raise FileNotFoundError(f"{directory}: no {SETTINGS}; not a saved self-adapting model")
        return cls(config_from_dict(json.loads(path.read_text())), directory)

    # learning

    def submit(self, text: str, title: str | None = None, tenant: str = DEFAULT_TENANT) -> Document:
        """Queue a document to be learned (checked first: :class:`DocumentError`, :class:`QueueFull`)."""
        text, title = self.check_document(text, title)
        document = self.state.add_document(tenant, title, text, self.config.max_queued)
        if document is None:
            raise QueueFull(f"{self.config.max_queued} documents are already waiting to be learned")
        return document

    def check_document(self, text: Any, title: Any) -> tuple[str, str]:
        """The document's text and title, or :class:`DocumentError` naming what is wrong."""
        if not isinstance(text, str):
            raise DocumentError("the document's text must be a string")
        if "\x00" in text or sum(not (c.isprintable() or c.isspace()) for c in text) > len(text) // 100:
            raise DocumentError("the document looks binary; send plain text")
        text = text.strip()
        if not text:
            raise DocumentError("the document is empty")
        if len(text) > self.config.max_document_chars:
            raise DocumentTooLong(
                f"the document has {len(text):,} characters; at most {self.config.max_document_chars:,} are learned"
            )
        if title is not None and not isinstance(title, str):
            raise DocumentError("the title must be a string")
        title = (title or "").strip() or text.splitlines()[0][:80]
        return text, title

    def refresh(self) -> None:
        """Form anew the knowledge of tenants who forgot documents, and delete those documents' files."""
        with self._learning:
            while self._stale:
                self._commit_knowledge(self._stale.pop(), {})

    def learn_next(self) -> Document | None:
        """Learn the oldest queued document (of any tenant) and commit its tenant's new knowledge;
        returns it, or None if nothing is queued. A failure marks the document ``failed``."""
        with self._learning:
            document = self.state.next_queued()
            if document is None:
                return None
            self.progress[document.id] = 0.0
            try:
                seconds = self._learn_document(document)
                self._commit_knowledge(document.tenant, {document.id: seconds})
            except Exception as error:  # the document failed, the learner carries on
                log.exception("learning %s failed", document.id)
                self.state.fail(document.id, f"{type(error).__name__}: {error}")
            finally:
                self.progress.pop(document.id, None)
            return self.state.document(document.tenant, document.id)

    def _learn_document(self, document: Document) -> float:
        """Write the document's self-edit and train its own adapter (saved under its id); the seconds it took."""
        started = time.perf_counter()
        bank = self._learning_bank()
        passage = Passage(document.id, document.title, self.state.text(document.id), ())
        seed = unit_seed(self.config.seed, passage_id(passage.context))  # the same text learns the same way
        self_edit = sample(bank.model, bank.tokenizer, self.domain.prompt(passage), 1, self.config.sampling, seed)[0]
        self.state.set_self_edit(document.id, self_edit)
        update = self.domain.to_update(passage, self_edit)
        if isinstance(update, Rejection):  # an empty self-edit: the document alone
            update = self.domain.baseline_update(passage)

        def on_step(done: int, total: int) -> None:
            if document.id in self.progress:
                self.progress[document.id] = done / total

        bank.train([TrainJob(0, update.examples, update.train, seed)], on_step=on_step)
        save_adapter(self._document_adapter(document.id), bank.adapter(0), *self._shape(), torch.float32)
        return time.perf_counter() - started

    def _commit_knowledge(self, tenant: str, learned: dict[str, float]) -> None:
        """The tenant's knowledge as the sum of its learned documents' adapters (and those of ``learned``,
        just trained), written to a new file and committed as its newest version; formed again if a
        document is forgotten meanwhile. Then the files of forgotten documents and old versions go."""
        while True:
            documents = [d.id for d in self.state.documents(tenant) if d.status == "learned" or d.id in learned]
            path, digest = self._write_knowledge(documents)
            if self.state.commit_version(tenant, path.name if path else "", digest, documents, learned):
                break
            if path:
                shutil.rmtree(path)
        self._prune_versions(tenant)
        self._remove_unreferenced_files()

    def _write_knowledge(self, documents: list[str]) -> tuple[Path | None, str]:
        """The sum of the documents' adapters as a new knowledge file, and its digest (none for no documents)."""
        if not documents:
            return None, ""
        rank, alpha, base = self._shape()
        scale = (alpha / rank) / (alpha / self.config.knowledge_rank)
        knowledge = added([self._read_document_adapter(d) for d in documents], self.config.knowledge_rank, scale)
        path = self.directory / ADAPTERS / f"knowledge-{uuid.uuid4().hex[:16]}"
        save_adapter(path, knowledge, self.config.knowledge_rank, alpha, base, torch.float32)
        return path, file_sha256(path)

    def _read_document_adapter(self, document_id: str) -> Adapter:
        return read_adapter(self._document_adapter(document_id))[1]

    def _document_adapter(self, document_id: str) -> Path:
        return self.directory / ADAPTERS / document_id

    def _shape(self) -> tuple[int, int, str]:
        return self.config.lora.rank, self.config.lora.alpha, self.config.model

    def _learning_bank(self) -> LoraBank:
        """The learner's own copy of the model (training switches a model's mode; answering goes on meanwhile)."""
        if self._learner is None:
            loaded = load_base(self.config.model, self.config.lora)
            self._learner = LoraBank(loaded.model, loaded.tokenizer, self.config.lora, name=self.config.model)
        return self._learner

    def _prune_versions(self, tenant: str, keep: int = 2) -> None:
        """Keep the newest ``keep`` versions (the one before the newest is the fallback if its file is damaged)."""
        old = self.state.versions(tenant)[keep:]
        self.state.drop_versions(tenant, [v.number for v in old])
        for version in old:
            if version.adapter:
                shutil.rmtree(self.directory / ADAPTERS / version.adapter, ignore_errors=True)

    def _remove_unreferenced_files(self) -> None:
        """Adapter files no document or version refers to: those of forgotten documents, and those a
        killed process left behind (written but never committed, or half written)."""
        documents = {d.id for tenant in self.state.tenants() for d in self.state.documents(tenant)}
        referenced = documents | self.state.adapters_in_use()
        for path in (self.directory / ADAPTERS).iterdir():
            if path.name not in referenced:
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink()

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
        prompt = self.tokenizer.apply_chat_template(chat.messages, tokenize=False, add_generation_prompt=True)
        length, context = len(tokenize_prompt(self.tokenizer, prompt)), self.bank.model.config.max_position_embeddings
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
        version = self.served_version(tenant)
        if version is None:
            return None
        slot, _ = self._slots.slot_for(tenant)
        if self._slots.loaded[tenant][1] != version.number:
            self.bank.set_adapter(slot, read_adapter(self.directory / ADAPTERS / version.adapter)[1])
            self._slots.loaded[tenant] = (slot, version.number)
        return slot

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
        path = self.directory / ADAPTERS / version.adapter
        try:
            digest = self._verified.get(version.adapter) or file_sha256(path)
        except OSError:
            digest = None
        if digest != version.sha256:
            if version.adapter not in self.corrupt:
                log.error("knowledge file %s is missing or damaged; it is not served", path)
            self.corrupt.add(version.adapter)
            return False
        self._verified[version.adapter] = digest
        return True


def file_sha256(adapter_directory: Path) -> str:
    """SHA-256 of an adapter's weights and config together."""
    digest = hashlib.sha256()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        digest.update((adapter_directory / name).read_bytes())
    return digest.hexdigest()


def config_from_dict(settings: dict[str, Any]) -> ServeConfig:
    return ServeConfig(
        **{
            **settings,
            "lora": LoraConfig(**settings["lora"]),
            "train": TrainConfig(**settings["train"]),
            "sampling": SamplingConfig(**settings["sampling"]),
        }
    )


def _check_settings(directory: Path, config: ServeConfig) -> None:
    """A state directory remembers its settings; its adapters fit only the model and shape they were made for."""
    path = directory / SETTINGS
    if not path.exists():
        path.write_text(json.dumps(asdict(config), indent=2) + "\n")
        return
    saved = config_from_dict(json.loads(path.read_text()))
    if saved.fixed() != config.fixed():
        changed = [k for k in config.fixed() if saved.fixed()[k] != config.fixed()[k]]
        raise ValueError(f"{directory} holds knowledge of another {' and '.join(changed)}: {saved.fixed()}")

"""Chats answered together: one batched generation for many tenants, each row through its tenant's
knowledge, with every token handed on as it is generated (for streaming).

:class:`Batcher` is the server's side: requests arriving while a batch is generated wait, and go
together into the next one.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from transformers import PreTrainedTokenizerBase


@dataclass
class Chat:
    """One conversation to continue: OpenAI-style ``messages`` (``role``, ``content``) of ``tenant``."""

    tenant: str
    messages: list[dict[str, str]]
    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    on_text: Callable[[str], None] | None = field(default=None, repr=False)
    """Called with each new piece of the answer as it is generated."""


@dataclass(frozen=True)
class Reply:
    text: str
    finish_reason: str
    """``stop``: the model ended it; ``length``: ``max_tokens`` did."""
    prompt_tokens: int
    completion_tokens: int


class RowDecoder:
    """The answer of one row, token by token: stops at an end token or at its own ``max_tokens``, and
    hands each new piece of text to ``on_text`` (decoding the whole answer each time, so characters
    that span tokens come out whole)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, chat: Chat, end_tokens: set[int]):
        self.tokenizer, self.chat, self.end_tokens = tokenizer, chat, end_tokens
        self.tokens: list[int] = []
        self.text = ""
        self.finish_reason: str | None = None

    def add(self, token: int) -> None:
        if self.finish_reason:
            return
        if token in self.end_tokens:
            self.finish_reason = "stop"
            return
        self.tokens.append(token)
        text = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        if not text.endswith("\ufffd"):  # wait for the rest of a character split across tokens
            if self.chat.on_text and len(text) > len(self.text):
                self.chat.on_text(text[len(self.text) :])
            self.text = text
        if len(self.tokens) >= self.chat.max_tokens:
            self.finish_reason = "length"

    def reply(self, prompt_tokens: int) -> Reply:
        final = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        if self.chat.on_text and len(final) > len(self.text):
            self.chat.on_text(final[len(self.text) :])
        return Reply(final, self.finish_reason or "length", prompt_tokens, len(self.tokens))


def end_tokens(tokenizer: PreTrainedTokenizerBase, generation_eos: int | list[int] | None) -> set[int]:
    """The tokens that end an answer: the tokenizer's end of sequence and the model's generation ones."""
    ends = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    if isinstance(generation_eos, int):
        ends.add(generation_eos)
    elif generation_eos:
        ends.update(generation_eos)
    return ends


def route_tokens(decoders: Sequence[RowDecoder]) -> Callable[[list[int], torch.Tensor], None]:
    """A generation callback feeding each row's new token to its decoder."""

    def on_tokens(rows: list[int], tokens: torch.Tensor) -> None:
        for row, token in zip(rows, tokens.tolist()):
            decoders[row].add(token)

    return on_tokens


@dataclass
class _Pending:
    chat: Chat
    future: Future = field(default_factory=Future)


class Batcher:
    """A thread answering chats in batches, on ``threads`` torch threads: whatever arrived while the last
    batch was generated (up to ``max_batch``) goes into the next one, through ``answer(chats) -> replies``."""

    def __init__(self, answer: Callable[[list[Chat]], list[Reply]], threads: int, max_batch: int = 32):
        self.answer, self.threads, self.max_batch = answer, threads, max_batch
        self._queue: queue.Queue[_Pending | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="seal-answers", daemon=True)
        self._thread.start()

    def submit(self, chat: Chat) -> Future:
        pending = _Pending(chat)
        self._queue.put(pending)
        return pending.future

    def waiting(self) -> int:
        return self._queue.qsize()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=60)

    def _run(self) -> None:
        torch.set_num_threads(self.threads)  # a new thread takes the process's last setting otherwise
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)  # stop after this batch
                    break
                batch.append(more)
            live = [p for p in batch if p.future.set_running_or_notify_cancel()]
            try:
                replies = self.answer([p.chat for p in live]) if live else []
            except Exception as error:  # every waiting request hears of it; the thread carries on
                for pending in live:
                    pending.future.set_exception(error)
                continue
            for pending, reply in zip(live, replies):
                pending.future.set_result(reply)

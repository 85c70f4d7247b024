"""Batched text generation, greedy or sampled: prompts padded to end together, and the prompt prefix
that rows through the same weights share computed once."""

from __future__ import annotations

import inspect
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Sequence

import torch
from transformers import DynamicCache, LogitsProcessorList, PreTrainedModel, PreTrainedTokenizerBase
from transformers.generation.streamers import BaseStreamer

from seal.engine.constraints import SchemaMask


@dataclass(frozen=True)
class SamplingConfig:
    """How to decode. ``temperature == 0`` means greedy."""

    temperature: float = 1.0
    """0: greedy."""
    top_p: float = 1.0
    """Sample from the smallest set of tokens holding this much probability."""
    max_new_tokens: int = 256
    """Generated tokens at most."""

    def __post_init__(self) -> None:
        if not 0 <= self.temperature < float("inf"):  # NaN fails both
            raise ValueError(f"temperature must be a number >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")


def render_prompt(tokenizer: PreTrainedTokenizerBase, text: str) -> str:
    """The text a model sees for a user message: the chat template for chat models, else the text itself."""
    if not tokenizer.chat_template:
        return text
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
    )


def tokenize_prompt(tokenizer: PreTrainedTokenizerBase, rendered: str) -> list[int]:
    """Token ids of an already rendered prompt (chat templates carry their own special tokens)."""
    return tokenizer(rendered, add_special_tokens=not tokenizer.chat_template)["input_ids"]


def sample(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    message: str,
    n: int,
    sampling: SamplingConfig,
    seed: int,
    schema: dict[str, Any] | None = None,
) -> list[str]:
    """``n`` completions of one user message, from one seeded call (so a rerun gives the same texts);
    with a JSON ``schema``, each one valid under it (:mod:`seal.engine.constraints`)."""
    prompts = [render_prompt(tokenizer, message)] * n
    return generate(model, tokenizer, prompts, sampling, batch_size=n, seed=seed, schema=schema)


def shared_prefix_length(rows: Sequence[Sequence[int]], groups: Sequence[Hashable]) -> int:
    """Leading tokens every row has in common with the other rows of its group, keeping at least one
    token of each row its own (0 when no two rows share a group)."""
    if len(set(groups)) == len(groups):
        return 0
    length = min(len(row) for row in rows) - 1
    first_of_group: dict[Hashable, Sequence[int]] = {}
    for row, group in zip(rows, groups):
        first = first_of_group.setdefault(group, row)
        length = next((n for n in range(length) if row[n] != first[n]), length)
    return length


def prefix_padded(rows: Sequence[Sequence[int]], shared: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Input ids and attention mask with each row laid out as its first ``shared`` tokens, padding,
    then the rest of the row, so every row ends where generation starts (``shared == 0``: left padding)."""
    width = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        input_ids[r, :shared] = torch.tensor(row[:shared], dtype=torch.long)
        input_ids[r, width - len(row) + shared :] = torch.tensor(row[shared:], dtype=torch.long)
        attention_mask[r, :shared] = 1
        attention_mask[r, width - len(row) + shared :] = 1
    return input_ids, attention_mask


def _cache_argument(module: torch.nn.Module) -> str:
    """The keyword a forward takes its key/value cache by (``cache`` in recent transformers)."""
    return "cache" if "cache" in inspect.signature(module.forward).parameters else "past_key_values"


def _shared_prefix_cache(
    model: PreTrainedModel,
    prefixes: torch.Tensor,
    rows_of: torch.Tensor,
    route: AbstractContextManager,
) -> DynamicCache:
    """Keys and values of each group's prefix (``prefixes``: one row per group), computed once
    within ``route`` and copied to the batch rows (``rows_of[r]``: the group of row r)."""
    cache = DynamicCache(config=model.config)
    decoder = model.base_model
    with route:
        decoder(input_ids=prefixes.to(model.device), use_cache=True, **{_cache_argument(decoder): cache})
    cache.reorder_cache(rows_of.to(model.device))
    return cache


TokenCallback = Callable[[list[int], torch.Tensor], None]
"""``(prompt indices of a batch's rows, the token each row just generated)``, called once per decoding step."""


class _RowStreamer(BaseStreamer):
    """Hands each decoding step's tokens to a :data:`TokenCallback` (the first ``put`` is the prompts: skipped)."""

    def __init__(self, indices: list[int], callback: TokenCallback):
        self.indices, self.callback, self.prompted = indices, callback, False

    def put(self, value: torch.Tensor) -> None:
        if self.prompted:
            self.callback(self.indices, value.reshape(-1))
        self.prompted = True

    def end(self) -> None:
        pass


@torch.no_grad()
def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    rendered_prompts: Sequence[str],
    sampling: SamplingConfig,
    *,
    batch_size: int = 16,
    seed: int | None = None,
    route: Callable[[list[int]], AbstractContextManager] | None = None,
    groups: Sequence[Hashable] | None = None,
    schema: dict[str, Any] | None = None,
    on_tokens: TokenCallback | None = None,
) -> list[str]:
    """Complete each rendered prompt; returns only the new text, special tokens removed.

    Prompts are grouped by length before batching so padding stays small; within a batch, rows
    keep their input order (so prompts the caller groups stay grouped), and outputs come back in
    input order. With a ``seed``, sampling is reproducible for the same prompts and batch size.
    ``route(indices)``, given the prompt indices of a batch in row order, returns the context in
    which those prompts are generated (e.g. which LoRA adapter each row goes through).

    Prompts with equal ``groups`` values go through the same weights (without a ``route``, all
    do), so the prompt prefix the rows of a group share in a batch (a chat template's system
    prompt, a passage sampled n times) is computed once per group and its keys and values are
    copied to the rows. With a JSON ``schema``, each completion is kept valid under it token by token
    (:class:`~seal.engine.constraints.SchemaMask`); it must then end within ``max_new_tokens``.
    ``on_tokens`` sees every generated token as it comes (for streaming); a finished row gets padding.
    """
    if seed is not None:
        torch.manual_seed(seed)
    if groups is None:
        groups = [0] * len(rendered_prompts) if route is None else list(range(len(rendered_prompts)))
    encoded = [tokenize_prompt(tokenizer, prompt) for prompt in rendered_prompts]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    completions: list[str] = [""] * len(encoded)
    for start in range(0, len(order), batch_size):
        indices = sorted(order[start : start + batch_size])
        rows, keys = [encoded[i] for i in indices], [groups[i] for i in indices]
        shared = shared_prefix_length(rows, keys)
        input_ids, attention_mask = prefix_padded(rows, shared, tokenizer.pad_token_id)
        cached = {}
        if shared:
            distinct = list(dict.fromkeys(keys))
            firsts = [indices[keys.index(key)] for key in distinct]  # each group's first prompt
            prefixes = torch.tensor([encoded[i][:shared] for i in firsts])
            rows_of = torch.tensor([distinct.index(key) for key in keys])
            cache = _shared_prefix_cache(model, prefixes, rows_of, route(firsts) if route else nullcontext())
            cached = {_cache_argument(model): cache}
        with route(indices) if route else nullcontext():
            output = model.generate(
                input_ids=input_ids.to(model.device),
                attention_mask=attention_mask.to(model.device),
                max_new_tokens=sampling.max_new_tokens,
                do_sample=sampling.temperature > 0,
                temperature=sampling.temperature if sampling.temperature > 0 else None,
                top_p=sampling.top_p if sampling.temperature > 0 else None,
                top_k=None,
                pad_token_id=tokenizer.pad_token_id,
                logits_processor=LogitsProcessorList(
                    [SchemaMask(tokenizer, schema, len(rows), input_ids.shape[1])] if schema else []
                ),
                streamer=_RowStreamer(indices, on_tokens) if on_tokens else None,
                **cached,
            )
        width = input_ids.shape[1]
        for row, i in enumerate(indices):
            completions[i] = tokenizer.decode(output[row, width:], skip_special_tokens=True).strip()
    return completions

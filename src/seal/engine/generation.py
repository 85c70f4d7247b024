"""Batched text generation with left padding, greedy or sampled."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass(frozen=True)
class SamplingConfig:
    """How to decode. ``temperature == 0`` means greedy."""

    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 256

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
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
) -> list[str]:
    """``n`` completions of one user message, from one seeded call (so a rerun gives the same texts)."""
    return generate(model, tokenizer, [render_prompt(tokenizer, message)] * n, sampling, batch_size=n, seed=seed)


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
) -> list[str]:
    """Complete each rendered prompt; returns only the new text, special tokens removed.

    Prompts are grouped by length before batching so padding stays small; within a batch, rows
    keep their input order (so prompts the caller groups stay grouped), and outputs come back in
    input order. With a ``seed``, sampling is reproducible for the same prompts and batch size.
    ``route(indices)``, given the prompt indices of a batch in row order, returns the context in
    which that batch is generated (e.g. which LoRA adapter each row goes through).
    """
    if seed is not None:
        torch.manual_seed(seed)
    encoded = [tokenize_prompt(tokenizer, prompt) for prompt in rendered_prompts]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    completions: list[str] = [""] * len(encoded)
    pad_id = tokenizer.pad_token_id
    for start in range(0, len(order), batch_size):
        indices = sorted(order[start : start + batch_size])
        width = max(len(encoded[i]) for i in indices)
        input_ids = torch.full((len(indices), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(indices), width), dtype=torch.long)
        for row, i in enumerate(indices):  # left padding: every prompt ends where generation starts
            input_ids[row, width - len(encoded[i]) :] = torch.tensor(encoded[i])
            attention_mask[row, width - len(encoded[i]) :] = 1
        with route(indices) if route else nullcontext():
            output = model.generate(
                input_ids=input_ids.to(model.device),
                attention_mask=attention_mask.to(model.device),
                max_new_tokens=sampling.max_new_tokens,
                do_sample=sampling.temperature > 0,
                temperature=sampling.temperature if sampling.temperature > 0 else None,
                top_p=sampling.top_p if sampling.temperature > 0 else None,
                top_k=None,
                pad_token_id=pad_id,
            )
        for row, i in enumerate(indices):
            completions[i] = tokenizer.decode(output[row, width:], skip_special_tokens=True).strip()
    return completions

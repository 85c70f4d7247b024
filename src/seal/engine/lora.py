"""LoRA updates on frozen base weights: one adapter slot, re-initialised for every update.

The model is wrapped with PEFT once. Every update re-initialises the adapter (seeded), trains it
with a plain PyTorch loop, is used, then switched off. No model re-creation and no ``Trainer`` per
update; the base weights never receive gradients, so they stay bit-identical.
"""

from __future__ import annotations

import math
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from peft import LoraConfig as PeftLoraConfig
from peft import PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer
from tqdm import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from seal.engine.generation import render_prompt, tokenize_prompt

ADAPTER = "self_edit"
ALL_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class LoraConfig:
    """Shape of the adapter. Defaults follow the SEAL paper's knowledge-incorporation runs."""

    rank: int = 32
    alpha: int = 64
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ALL_PROJECTIONS

    def __post_init__(self) -> None:
        if self.rank < 1 or self.alpha <= 0:
            raise ValueError(f"LoRA rank must be >= 1 and alpha > 0, got rank={self.rank} alpha={self.alpha}")


@dataclass(frozen=True)
class TrainConfig:
    """How an update is trained: AdamW with linear decay, loss averaged over target tokens."""

    learning_rate: float = 1e-3
    epochs: int = 10
    batch_size: int = 1
    max_seq_len: int = 1024

    def __post_init__(self) -> None:
        if self.learning_rate <= 0:
            raise ValueError(f"learning rate must be > 0, got {self.learning_rate}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', ' ')} must be >= 1, got {getattr(self, name)}")
        if self.max_seq_len < 2:
            raise ValueError(f"max sequence length must be >= 2, got {self.max_seq_len}")


@dataclass(frozen=True)
class TrainingExample:
    """One training sequence. Loss falls on ``completion`` only; ``prompt`` (may be empty) is context.

    With ``chat``, ``prompt`` is a user message: it is rendered with the tokenizer's chat template
    and the completion ends with the end-of-turn token, so the model learns to answer and stop.
    With ``loss_on_prompt`` every token carries the loss (ARC's "all tokens" strategy).
    """

    prompt: str
    completion: str
    chat: bool = False
    loss_on_prompt: bool = False


@dataclass(frozen=True)
class TrainStats:
    steps: int
    tokens: int
    seconds: float
    final_loss: float


def tokenize_example(
    tokenizer: PreTrainedTokenizerBase, example: TrainingExample, max_len: int
) -> tuple[list[int], int]:
    """Token ids of prompt + completion and the prompt length, so the loss mask is set by position."""
    if example.chat:
        prompt_ids = tokenize_prompt(tokenizer, render_prompt(tokenizer, example.prompt))
        completion_ids = tokenizer(example.completion + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
    else:
        prompt_ids = tokenizer(example.prompt, add_special_tokens=False)["input_ids"] if example.prompt else []
        completion_ids = tokenizer(example.completion, add_special_tokens=False)["input_ids"]
    target_start = 0 if example.loss_on_prompt else min(len(prompt_ids), max_len)
    return (prompt_ids + completion_ids)[:max_len], target_start


def length_grouped_batches(lengths: Sequence[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """One epoch of batches: shuffled, then grouped by length so a batch pads little, in shuffled batch order."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    order.sort(key=lambda i: lengths[i])  # stable: equal lengths keep their shuffled order
    batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    return batches


def _collate(batch: Sequence[tuple[list[int], int]], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(ids) for ids, _ in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    for row, (ids, prompt_len) in enumerate(batch):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention_mask[row, : len(ids)] = 1
        labels[row, prompt_len : len(ids)] = torch.tensor(ids[prompt_len:])
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


class AdapterSlot:
    """A model with one LoRA adapter that can be reset, trained, used and switched off."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, lora: LoraConfig = LoraConfig()):
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        peft_config = PeftLoraConfig(
            r=lora.rank,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=list(lora.target_modules),
            task_type="CAUSAL_LM",
        )
        self.model: PeftModel = get_peft_model(model, peft_config, adapter_name=ADAPTER)
        self.tokenizer = tokenizer
        self.lora = lora
        self._lora_layers = [m for m in self.model.modules() if isinstance(m, LoraLayer)]
        self.model.base_model.disable_adapter_layers()
        self.model.eval()

    def reset(self, seed: int) -> None:
        """Fresh adapter: A ~ Kaiming-uniform (seeded), B = 0, so the update starts as the identity."""
        torch.manual_seed(seed)
        for layer in self._lora_layers:
            layer.reset_lora_parameters(ADAPTER, init_lora_weights=True)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for name, p in self.model.named_parameters() if "lora_" in name]

    def train(
        self, examples: Sequence[TrainingExample], config: TrainConfig, seed: int, progress: str | None = None
    ) -> TrainStats:
        """Train the (already reset and enabled) adapter on ``examples``; ``progress`` names a progress bar."""
        tokenized = [tokenize_example(self.tokenizer, e, config.max_seq_len) for e in examples]
        tokenized = [t for t in tokenized if len(t[0]) - t[1] > 0]
        if not tokenized:
            return TrainStats(steps=0, tokens=0, seconds=0.0, final_loss=float("nan"))
        steps_per_epoch = math.ceil(len(tokenized) / config.batch_size)
        total_steps = steps_per_epoch * config.epochs
        parameters = self.trainable_parameters()
        optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=0.0, fused=True)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 - step / total_steps)
        shuffler = random.Random(seed)
        lengths = [len(ids) for ids, _ in tokenized]
        pad_id = self.tokenizer.pad_token_id
        tokens, loss_value, started = 0, float("nan"), time.perf_counter()
        bar = tqdm(total=total_steps, desc=progress, disable=progress is None, unit="step")
        self.model.train()
        try:
            for _ in range(config.epochs):
                for indices in length_grouped_batches(lengths, config.batch_size, shuffler):
                    batch = _collate([tokenized[i] for i in indices], pad_id)
                    loss = self.model(**batch).loss
                    loss.backward()
                    optimizer.step()
                    schedule.step()
                    optimizer.zero_grad(set_to_none=True)
                    tokens += int(batch["attention_mask"].sum())
                    loss_value = loss.item()
                    bar.set_postfix(loss=f"{loss_value:.3f}", refresh=False)
                    bar.update()
        finally:
            bar.close()
            self.model.eval()
        return TrainStats(
            steps=total_steps, tokens=tokens, seconds=time.perf_counter() - started, final_loss=loss_value
        )

    @contextmanager
    def updated(
        self, examples: Sequence[TrainingExample], config: TrainConfig, seed: int, progress: str | None = None
    ) -> Iterator[TrainStats]:
        """Within the block the model carries a fresh adapter trained on ``examples``; afterwards it is off."""
        self.reset(seed)
        self.model.base_model.enable_adapter_layers()
        try:
            yield self.train(examples, config, seed, progress)
        finally:
            self.model.base_model.disable_adapter_layers()

"""A model with many LoRA adapters at once: train K updates in one pass, answer through each.

:class:`LoraBank` wraps every target linear layer of a model in a
:class:`~seal.engine.lora.MultiLoraLinear` holding ``n_slots`` independent low-rank adapters. Each
row of a batch (or, in training, each token of one packed row) is routed to one slot, or to none
(the base model). So K updates train in one forward/backward pass over one copy of the base weights
(:mod:`seal.engine.training`), and then answer in one batched generation, instead of K passes.

No model is re-created and no ``Trainer`` is built per update. The base weights never receive
gradients and stay bit-identical unless a slot is explicitly merged into them (:meth:`LoraBank.merge`).
PEFT has no multi-adapter layer that trains, hence this one; adapters leave it in PEFT's file format
(:mod:`seal.models.adapters`).
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from seal.engine.generation import SamplingConfig, TokenCallback, generate
from seal.engine.lora import ALL_LINEAR, BASE_PRECISIONS, LoraConfig, MultiLoraLinear
from seal.engine.routing import Routing, RoutingState, by_slot
from seal.engine.training import Adapter, Checkpoint, TrainJob, TrainStats, train_jobs
from seal.models.adapters import save_adapter


def adapted_layers(model: PreTrainedModel, target_modules: Sequence[str]) -> list[tuple[str, nn.Linear]]:
    """The layers ``target_modules`` name, by module path: ``all-linear`` is every ``nn.Linear`` but the
    output projection. Anything else is refused before a layer is wrapped, so the model stays as it
    was: a name matching no module, a module that is not a linear layer (e.g. GPT-2's fused ``Conv1D``),
    or the output projection."""
    head = model.get_output_embeddings()
    modules = list(model.named_modules())
    if target_modules == (ALL_LINEAR,):
        targets = [(n, m) for n, m in modules if isinstance(m, nn.Linear) and m is not head]
        if not targets:
            raise ValueError(
                "--lora.target_modules all-linear: the model has no linear layer besides its output projection"
            )
        return targets
    targets: dict[str, nn.Linear] = {}
    for wanted in target_modules:
        matches = {n: m for n, m in modules if n.rsplit(".", 1)[-1] == wanted}
        if not matches:
            raise ValueError(f"--lora.target_modules: no module named {wanted!r} in the model")
        for name, module in matches.items():
            if module is head:
                raise ValueError(f"LoRA on the output projection ({name}) is not supported: it stays frozen")
            if not isinstance(module, nn.Linear):
                kind = type(module).__name__
                raise ValueError(f"--lora.target_modules: {name} is a {kind}, not a linear layer we can adapt")
        targets |= matches
    return [(n, m) for n, m in modules if n in targets]  # in the model's order


class LoraBank:
    """A model with ``n_slots`` LoRA adapters that are reset, trained together, used and discarded."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        lora: LoraConfig = LoraConfig(),
        n_slots: int = 1,
        name: str | None = None,
    ):
        """``name``: the model's name as seal knows it (``--model``), which saved adapters record as their base."""
        if n_slots < 1:
            raise ValueError(f"a LoRA bank needs at least one slot, got {n_slots}")
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        self.model = model
        self.tokenizer = tokenizer
        self.name = name or model.name_or_path
        self.lora = lora
        self.n_slots = n_slots
        self._routing = RoutingState()
        self._unmerged: list[torch.Tensor] | None = None  # base weights before the first merge
        targets = adapted_layers(model, lora.target_modules)
        _, backward_dtype = BASE_PRECISIONS[lora.base_precision]
        head = model.get_output_embeddings().weight
        # the loss's gradient through the frozen output projection multiplies in the backward precision
        self.head_gradient_weight = head.detach().to(backward_dtype) if backward_dtype else None
        self.layer_names = [name for name, _ in targets]
        self.layers: list[MultiLoraLinear] = []
        for name, module in targets:
            parent_name, _, attribute = name.rpartition(".")
            layer = MultiLoraLinear(module, n_slots, lora, self._routing)
            setattr(model.get_submodule(parent_name), attribute, layer)
            self.layers.append(layer)
        model.eval()

    def slot_parameters(self, slot: int) -> list[nn.Parameter]:
        return [p for layer in self.layers for p in (layer.lora_a[slot], layer.lora_b[slot])]

    def reset(self, slot: int, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        for layer in self.layers:
            layer.reset(slot, generator)

    def adapter(self, slot: int) -> Adapter:
        """A copy of the slot's factors, by layer name."""
        return {
            name: (layer.lora_a[slot].detach().clone(), layer.lora_b[slot].detach().clone())
            for name, layer in zip(self.layer_names, self.layers)
        }

    def set_adapter(self, slot: int, adapter: Adapter) -> None:
        """Load factors (as :meth:`adapter` gives them) into ``slot``; they must fit this bank's layers."""
        if set(adapter) != set(self.layer_names):
            missing = sorted(set(self.layer_names) ^ set(adapter))
            raise ValueError(f"the adapter does not fit this model's LoRA layers (differs at {missing[0]})")
        with torch.no_grad():
            for name, layer in zip(self.layer_names, self.layers):
                a, b = adapter[name]
                if a.shape != layer.lora_a[slot].shape or b.shape != layer.lora_b[slot].shape:
                    raise ValueError(f"the adapter's {name} has rank {a.shape[-1]}, this bank {self.lora.rank}")
                layer.lora_a[slot].copy_(a)
                layer.lora_b[slot].copy_(b)

    @contextmanager
    def routed(self, slots: Sequence[int | None], per_token: bool = False) -> Iterator[None]:
        """Within the block, batch row i goes through adapter ``slots[i]`` (None: no adapter);
        with ``per_token``, token i of a single packed row does."""
        self._routing.current = Routing(slots, self.model.device, per_token)
        try:
            yield
        finally:
            self._routing.current = None

    def generate(
        self,
        rendered_prompts: Sequence[str],
        slots: Sequence[int | None],
        sampling: SamplingConfig,
        batch_size: int = 32,
        seed: int | None = None,
        on_tokens: TokenCallback | None = None,
    ) -> list[str]:
        """:func:`~seal.engine.generation.generate`, prompt i answered through adapter ``slots[i]``.

        Prompts go in grouped by slot, so each batch's rows are too and its routing needs no gather,
        and the prompt prefix the prompts of a slot share is computed once for the slot.
        """
        order = by_slot(slots)
        answers = generate(
            self.model,
            self.tokenizer,
            [rendered_prompts[i] for i in order],
            sampling,
            batch_size=batch_size,
            seed=seed,
            route=lambda rows: self.routed([slots[order[i]] for i in rows]),
            groups=[slots[i] for i in order],
            on_tokens=(lambda rows, tokens: on_tokens([order[i] for i in rows], tokens)) if on_tokens else None,
        )
        in_input_order = [""] * len(answers)
        for position, i in enumerate(order):
            in_input_order[i] = answers[position]
        return in_input_order

    def train(
        self,
        jobs: Sequence[TrainJob],
        progress: str | None = None,
        checkpoint: Checkpoint | None = None,
        on_step: Callable[[int, int], None] | None = None,
    ) -> list[TrainStats]:
        """:func:`~seal.engine.training.train_jobs` on this bank."""
        return train_jobs(self, jobs, progress, checkpoint, on_step)

    def merge(self, slot: int) -> None:
        """Add adapter ``slot`` into the base weights (in place); :meth:`restore` undoes every merge."""
        with torch.no_grad():
            if self._unmerged is None:
                self._unmerged = [layer.base.weight.clone() for layer in self.layers]
            for layer in self.layers:
                layer.merge(slot)

    def restore(self) -> None:
        """The base weights as they were loaded, bit for bit (nothing to do if nothing was merged)."""
        if self._unmerged is None:
            return
        with torch.no_grad():
            for layer, weight in zip(self.layers, self._unmerged):
                layer.restore(weight)
        self._unmerged = None

    def save_adapter(self, slot: int, directory: str | Path) -> None:
        """Adapter ``slot`` as a PEFT LoRA adapter of this bank's model (bf16 factors; :mod:`seal.models.adapters`)."""
        save_adapter(directory, self.adapter(slot), self.lora.rank, self.lora.alpha, self.name)

    def save_pretrained(self, directory: str | Path) -> None:
        """The base model (with whatever was merged into it) as a plain transformers checkpoint."""
        state = {
            name.replace(".base.", "."): tensor
            for name, tensor in self.model.state_dict().items()
            if ".lora_a." not in name and ".lora_b." not in name
        }
        self.model.save_pretrained(directory, state_dict=state)
        self.tokenizer.save_pretrained(directory)

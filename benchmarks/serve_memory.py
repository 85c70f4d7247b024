"""Memory of a SelfAdaptingModel as tenants grow: 1, 10, then 100 tenants, each having learned one
document and been asked one question (all of them asked in one call at the end of each step).

Records the resident set after each step, the state directory's size on disk, and what a serving
slot costs. Memory should not grow with tenants beyond ``--slots`` (only that many tenants' knowledge
is loaded at once); disk grows by one document adapter and one knowledge adapter per tenant.
``--epochs`` and ``--self-edit-tokens`` shorten learning (they change no size).

    .venv/bin/python benchmarks/serve_memory.py --model tiny-random [--tenants 1 10 100]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from seal.domains.knowledge.data import demo_data_path, load_passages
from seal.engine.generation import SamplingConfig
from seal.engine.lora import LoraConfig
from seal.engine.training import TrainConfig
from seal.machine import describe
from seal.serving.answers import Chat
from seal.serving.config import ServeConfig
from seal.serving.model import SelfAdaptingModel


def resident_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-random")
    parser.add_argument("--tenants", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--self-edit-tokens", type=int, default=32)
    parser.add_argument("--out", default="benchmarks/results/serve_memory.json")
    args = parser.parse_args()
    passages = load_passages(demo_data_path())
    config = ServeConfig(
        model=args.model,
        lora=LoraConfig(base_precision="fp32"),
        train=TrainConfig(epochs=args.epochs),
        sampling=SamplingConfig(temperature=0.7, top_p=0.95, max_new_tokens=args.self_edit_tokens),
        slots=args.slots,
    )
    state = Path(tempfile.mkdtemp(prefix="seal-serve-memory-"))
    started = time.perf_counter()
    model = SelfAdaptingModel(config, state)
    steps = [{"tenants": 0, "resident_mb": resident_mb(), "disk_mb": _disk_mb(state)}]
    tenants: list[str] = []
    for target in sorted(args.tenants):
        while len(tenants) < target:
            tenant, _ = model.state.create_tenant()
            model.learn(passages[len(tenants) % len(passages)].context, None, tenant)
            tenants.append(tenant)
        chats = [Chat(t, [{"role": "user", "content": passages[0].questions[0].question}], 16) for t in tenants]
        model.answer(chats)
        steps.append({"tenants": target, "resident_mb": resident_mb(), "disk_mb": _disk_mb(state)})
        now = steps[-1]
        print(f"{target:>4} tenants: resident {now['resident_mb']:.0f} MB, state on disk {now['disk_mb']:.1f} MB")
    slot = sum(p.numel() * p.element_size() for layer in model.bank.layers for p in (layer.lora_a[0], layer.lora_b[0]))
    payload = {
        "command": "benchmarks/serve_memory.py " + " ".join(_flag(k, v) for k, v in vars(args).items()),
        "machine": describe(),
        "slot_mb": slot / 2**20,
        "steps": steps,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    Path(args.out).write_text(json.dumps(payload, indent=1) + "\n")


def _flag(name: str, value: object) -> str:
    shown = " ".join(map(str, value)) if isinstance(value, list) else value
    return f"--{name.replace('_', '-')} {shown}"


def _disk_mb(directory: Path) -> float:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file()) / 2**20


if __name__ == "__main__":
    main()

"""The machine a run computes on: its device, CPU model, bf16 units, threads and torch version.

Numbers repeat bit for bit only on the same kind of machine in the same precision (bf16 kernels
differ between CPU families, and by batch shape and thread count), so every run directory records
this beside its config.
"""

from __future__ import annotations

import platform
import resource
from pathlib import Path
from typing import Any

import torch


def default_device() -> str:
    """The first GPU when there is one, else the CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def has_native_bf16(device: str) -> bool:
    """Whether ``device``'s matmuls have native bf16 units: a CUDA GPU from Ampere on, an x86 CPU with
    AVX512-BF16 or AMX. The CPU check uses torch's own (private) cpuinfo probes; a torch without them
    counts as no bf16 units."""
    if device == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


def peak_memory_mb(device: str) -> float:
    """Peak memory since the process started or :func:`reset_peak_memory`: GPU memory allocated by
    PyTorch on a GPU, else this process's resident set (Linux's ``VmHWM``; elsewhere, the peak since
    the start)."""
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_memory(device: str) -> None:
    """Start :func:`peak_memory_mb` afresh (on a CPU, where Linux allows: ``/proc/self/clear_refs``)."""
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        return
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def cpu_model() -> str:
    """The CPU's model name as the OS reports it (``/proc/cpuinfo`` on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe(device: str | None = None) -> dict[str, Any]:
    """This process's machine as a run records it."""
    device = device or default_device()
    gpu = {"gpu": torch.cuda.get_device_name()} if device == "cuda" else {}
    return {
        "device": device,
        **gpu,
        "cpu": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16": has_native_bf16(device),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }

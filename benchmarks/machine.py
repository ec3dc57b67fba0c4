"""What CPU a benchmark ran on: the model name and the vector extensions that decide matmul speed."""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_info() -> dict[str, str]:
    """Return the CPU model and its widest vector extension (``AVX-512``, ``AVX2`` or ``none``).

    Machines of one kind can come with either an AVX-512 or an AVX2-only CPU; matmuls differ 2-3x between
    them, so every timing is reported with this.
    """
    model, flags = platform.processor() or platform.machine(), set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
            if model and flags:
                break
    vector = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "none"
    return {"cpu_model": model, "vector_extensions": vector, "cores": str(len(_cores()))}


def _cores() -> list[int]:
    import os

    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))

"""What a timing was measured on: the benchmarks' JSON records it, since timings from different hosts do not compare."""
from __future__ import annotations

from pathlib import Path


def cpu_isa() -> dict:
    """The CPU model and its widest vector extensions: torch's oneDNN kernels run ~1.9x slower on this
    project's AVX2-only hosts than on AVX-512 ones, so timings from different hosts do not compare."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), None)
    return {"model": model, "avx2": "avx2" in flags, "avx512f": "avx512f" in flags}

"""The machine a figure was measured on. Timings move with it: bfloat16 runs natively only with
``avx512_bf16`` (``dtype=auto`` otherwise runs float32), the shared box has two cores, and its load changes
while a benchmark runs; every results file records them beside the figures."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

# The flags that decide the engine's speed on a CPU (the vector units and native bfloat16).
FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "amx_int8")
CPUINFO = Path("/proc/cpuinfo")


def _cpuinfo() -> str:
    try:
        return CPUINFO.read_text()
    except OSError:  # not Linux
        return ""


def _field(cpuinfo: str, name: str) -> str:
    return next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
                 if line.split(":", 1)[0].strip() == name), "")


def cpu_flags(cpuinfo: str | None = None) -> list[str]:
    """Which of ``FLAGS`` the CPU has, in ``FLAGS``' order."""
    present = set(_field(_cpuinfo() if cpuinfo is None else cpuinfo, "flags").split())
    return [flag for flag in FLAGS if flag in present]


def load_1m() -> float:
    """The 1-minute load average (runnable processes): above the core count, a timing shared the machine."""
    return os.getloadavg()[0]


def describe_host(dtype: str | None = None, cpuinfo: str | None = None) -> dict[str, Any]:
    """The host as a results file records it; ``dtype``: the engine's, where the benchmark knows it."""
    text = _cpuinfo() if cpuinfo is None else cpuinfo
    return {"cpu": _field(text, "model name") or platform.processor() or None, "cpu_flags": cpu_flags(text),
            "cores": os.cpu_count(), "load_1m": load_1m(), "dtype": dtype}


def host_line(host: dict[str, Any]) -> str:
    """One line for a table's caption."""
    flags = " ".join(host["cpu_flags"]) or "none of " + ", ".join(FLAGS)
    dtype = f"{host['dtype']}, " if host.get("dtype") else ""
    return f"{dtype}{host['cores']} cores, CPU flags {flags}, load {host['load_1m']:.2f}"

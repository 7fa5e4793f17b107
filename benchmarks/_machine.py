"""What every benchmark records with its numbers: the machine and the code it ran."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def meminfo_kib(field: str) -> int | None:
    """Return a field of ``/proc/meminfo`` in KiB, or None where unavailable."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def git_state() -> dict[str, Any]:
    """Return the repository's commit and its uncommitted changes under ``jaxrnn/``."""

    def git(*args: str) -> str | None:
        try:
            proc = subprocess.run(
                ["git", *args], cwd=HERE.parent, capture_output=True, text=True, check=False
            )
        except OSError:
            return None
        return proc.stdout.strip() if proc.returncode == 0 else None

    status = git("status", "--porcelain", "--", "jaxrnn")
    return {
        "commit": git("rev-parse", "HEAD"),
        "uncommitted_jaxrnn_changes": (
            None if status is None else [line.strip() for line in status.splitlines()]
        ),
    }


def machine_info() -> dict[str, Any]:
    """Describe the machine without importing JAX (the device comes from the workers).

    Returns:
      A dict with the CPU model, CPU count, total memory and package versions.
    """
    cpu_model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for package in ("jax", "jaxlib", "jaxrnn"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    mem_total = meminfo_kib("MemTotal")
    return {
        "cpu_model": cpu_model,
        "cpu_count": os.cpu_count(),
        "mem_total_gib": None if mem_total is None else round(mem_total / 2**20, 2),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
    }


def time_calls(
    fn: Callable[[], Any], repeats: int, budget_s: float
) -> tuple[list[float], float, Any]:
    """First-call seconds, then run times until ``repeats`` runs or ``budget_s`` (≥ 2 runs).

    Every call is waited for with ``jax.block_until_ready``; returns the run
    times, the first call's seconds (compilation included) and its result.
    """
    import jax

    start = time.perf_counter()
    out = jax.block_until_ready(fn())
    first = time.perf_counter() - start
    times: list[float] = []
    spent = 0.0
    while len(times) < repeats and (len(times) < 2 or spent < budget_s):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
        spent += times[-1]
    return times, first, out

"""Peak memory and time of one LSTM gradient, with and without ``checkpoint=k``.

Measures ``jax.grad`` (jitted, float32) of ``sum(ys)`` with respect to the
params of ``jaxrnn.lstm(256)`` over inputs ``xs`` of shape ``[T, 16, 32]``,
where ``_, ys = jaxrnn.scan(cell, params, xs, checkpoint=k)``, for each T of
``--seq-lens`` and k in ``{None, *--checkpoint}``.

Each configuration runs in its own subprocess (this script with ``--worker``),
so that the process's peak resident set size (``ru_maxrss``) belongs to that
configuration alone. A worker reports its RSS right after imports and input
creation (the baseline), its peak RSS after compiling and after running the
gradient, XLA's own memory estimate (``compiled.memory_analysis()``), the
compile time and the step times (one warm-up, then the median of the
repeats). A worker that is killed (e.g. by the kernel's OOM killer), fails or
runs past ``--timeout`` is recorded as such instead of stopping the benchmark.
Unchecked runs go last, the longest sequence at the very end, since that is
the one most likely not to fit.

Usage::

    python benchmarks/checkpoint_memory.py            # default grid (about 15 min on 2 cores)
    python benchmarks/checkpoint_memory.py --quick    # smoke run: T=2000, 2 repeats

Results go to ``benchmarks/results/checkpoint_memory.{json,md}``
(``checkpoint_memory_quick.*`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import inspect
import json
import math
import os
import re
import resource
import shlex
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _machine import git_state, machine_info, meminfo_kib

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
MARKER = "@@RESULT@@ "  # prefixes the worker's one line of JSON on stdout

BATCH, INPUT_SIZE, HIDDEN = 16, 32, 256
MIB = 2**20
TARGET_T, TARGET_K = 20000, 100
TARGET_MEMORY_RATIO, TARGET_TIME_RATIO = 0.25, 1.5


# --------------------------------------------------------------------------- machine


def _current_rss_kib() -> int | None:
    """Return this process's current resident set size in KiB (``VmRSS``)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _own_cpu_s() -> float:
    """Return the user + system CPU seconds of this process (all threads)."""
    t = os.times()
    return t.user + t.system


def _busy_s() -> float | None:
    """Return the machine's busy CPU seconds (all CPUs) from ``/proc/stat``."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _maxrss_kib() -> int:
    """Return this process's peak resident set size so far (KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def source_state(package_dir: Path) -> dict[str, Any]:
    """Identify the jaxrnn code a worker ran: a hash of its sources and ``scan``'s options.

    Args:
      package_dir: the directory of the imported ``jaxrnn`` package.

    Returns:
      ``{"sha256": first 12 hex digits over the package's .py files, "scan_options": ...}``.
    """
    digest = hashlib.sha256()
    for path in sorted(package_dir.rglob("*.py")):
        digest.update(path.relative_to(package_dir).as_posix().encode())
        digest.update(path.read_bytes())
    import jaxrnn

    options = {
        name: repr(param.default)
        for name, param in inspect.signature(jaxrnn.scan).parameters.items()
        if param.kind is inspect.Parameter.KEYWORD_ONLY
    }
    return {"sha256": digest.hexdigest()[:12], "scan_options": options}


# --------------------------------------------------------------------------- worker

_BYTES = {"f64": 8, "s64": 8, "u64": 8, "f32": 4, "s32": 4, "u32": 4, "bf16": 2, "f16": 2}
_BYTES |= {"s8": 1, "u8": 1, "pred": 1}


def largest_arrays(hlo_text: str, count: int = 6) -> list[dict[str, Any]]:
    """List the largest array shapes named anywhere in an optimised HLO module.

    Args:
      hlo_text: ``compiled.as_text()``.
      count: how many distinct shapes to return.

    Returns:
      ``[{"shape": "f32[20000,16,32]", "mib": 39.1}, ...]``, largest first.
    """
    sizes = {}
    for dtype, dims in re.findall(r"\b([a-z]+[0-9]*)\[([0-9,]*)\]", hlo_text):
        if dtype in _BYTES:
            size = _BYTES[dtype] * math.prod(int(d) for d in dims.split(",") if d)
            sizes[f"{dtype}[{dims}]"] = size
    top = sorted(sizes.items(), key=lambda kv: -kv[1])[:count]
    return [{"shape": shape, "mib": round(size / MIB, 2)} for shape, size in top]


def worker(config: dict[str, Any]) -> dict[str, Any]:
    """Compile and run one gradient configuration in this process; return its measurements.

    Args:
      config: ``{"T": int, "k": int | None, "repeats": int, "max_timing_s": float,
        "oom_guard": bool}``.

    Returns:
      A JSON-serialisable dict of measurements (memory in KiB and bytes, times in s).
    """
    # Should memory run out, let the kernel pick this process rather than another.
    with contextlib.suppress(OSError):
        Path("/proc/self/oom_score_adj").write_text("1000")
    t_start = time.perf_counter()
    import jax
    import jax.numpy as jnp

    import jaxrnn

    seq_len, k = int(config["T"]), config["k"]
    cell = jaxrnn.lstm(HIDDEN)
    params = cell.init(jax.random.key(0), input_size=INPUT_SIZE, dtype=jnp.float32)
    # One step at a time: `jax.random.normal` of the whole [T, B, I] at once leaves
    # several T-sized temporaries in the process's RSS (about 1 GiB at T=10^5),
    # which would inflate the baseline and hide the gradient's own peak.
    xs = jax.jit(
        lambda key: jax.lax.map(
            lambda k: jax.random.normal(k, (BATCH, INPUT_SIZE), jnp.float32),
            jax.random.split(key, seq_len),
        )
    )(jax.random.key(1))
    jax.block_until_ready((params, xs))
    out: dict[str, Any] = {
        "T": seq_len,
        "k": k,
        "device": str(jax.devices()[0]),
        "platform": jax.devices()[0].platform,
        "jax_version": jax.__version__,
        "jaxrnn_source": source_state(Path(jaxrnn.__file__).parent),
        "import_and_inputs_s": time.perf_counter() - t_start,
        "rss_baseline_kib": _current_rss_kib(),
        "maxrss_baseline_kib": _maxrss_kib(),
        "mem_available_kib": meminfo_kib("MemAvailable"),
        "loadavg_start": os.getloadavg(),
    }

    scan_kwargs = config.get("scan_kwargs") or {}

    def loss(p: Any, xs: Any) -> Any:
        return jaxrnn.scan(cell, p, xs, checkpoint=k, **scan_kwargs)[1].sum()

    grad_fn = jax.grad(loss)  # with respect to the params (argument 0) only
    t0 = time.perf_counter()
    lowered = jax.jit(grad_fn).lower(params, xs)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    out["lower_s"], out["compile_s"] = t1 - t0, t2 - t1
    stats = compiled.memory_analysis()
    xla = {
        name: getattr(stats, name, None)
        for name in (
            "temp_size_in_bytes",
            "argument_size_in_bytes",
            "output_size_in_bytes",
            "alias_size_in_bytes",
            "generated_code_size_in_bytes",
        )
    }
    out["xla"] = xla
    out["largest_hlo_arrays"] = largest_arrays(compiled.as_text())
    out["maxrss_after_compile_kib"] = _maxrss_kib()
    xla_total = sum(xla[n] or 0 for n in ("temp_size_in_bytes", "argument_size_in_bytes"))
    xla_total += xla["output_size_in_bytes"] or 0
    available = out["mem_available_kib"]
    if config.get("oom_guard", True) and available is not None and xla_total > available * 1024:
        out["status"] = "skipped"
        out["reason"] = (
            f"did not fit: XLA's estimate {xla_total / MIB:.0f} MiB exceeds "
            f"MemAvailable {available / 1024:.0f} MiB (not run; --no-oom-guard runs it)"
        )
        return out

    t0 = time.perf_counter()
    jax.block_until_ready(compiled(params, xs))
    out["warmup_s"] = time.perf_counter() - t0
    out["maxrss_after_warmup_kib"] = _maxrss_kib()
    # Cap the timed repeats so that one configuration takes about max_timing_s.
    repeats = int(config["repeats"])
    budget = float(config["max_timing_s"])
    out["repeats_requested"] = repeats
    repeats = max(1, min(repeats, int(budget // max(out["warmup_s"], 1e-9))))
    times = []
    faults0, cpu0, busy0 = (
        resource.getrusage(resource.RUSAGE_SELF).ru_minflt,
        _own_cpu_s(),
        _busy_s(),
    )
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(params, xs))
        times.append(time.perf_counter() - t0)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0
    own, busy = _own_cpu_s() - cpu0, _busy_s()
    out["minor_faults_per_step"] = faults / repeats
    out["own_cpu_cores"] = own / sum(times)
    if busy is not None and busy0 is not None:
        # CPUs kept busy by other processes while this one was being timed.
        out["other_cpu_cores"] = max(0.0, (busy - busy0 - own) / sum(times))
    out["times_s"] = times
    out["repeats_done"] = repeats
    out["median_s"] = statistics.median(times)
    out["maxrss_kib"] = _maxrss_kib()
    out["rss_end_kib"] = _current_rss_kib()
    out["loadavg_end"] = os.getloadavg()
    out["status"] = "ok"
    return out


def run_worker(config: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run :func:`worker` in a fresh subprocess; record failures instead of raising.

    Args:
      config: the worker's configuration (see :func:`worker`).
      timeout: seconds after which the worker is killed and recorded as timed out.

    Returns:
      The worker's measurements, or a record with ``status`` and the reason.
    """
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(config)]
    base = {"T": config["T"], "k": config["k"]}
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as e:
        stderr = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else e.stderr
        return {
            **base,
            "status": "timeout",
            "reason": f"not measured: exceeded the {timeout:.0f} s timeout",
            "wall_s": time.perf_counter() - t0,
            "stderr_tail": (stderr or "")[-2000:],
        }
    wall = time.perf_counter() - t0
    for line in proc.stdout.splitlines():
        if line.startswith(MARKER) and proc.returncode == 0:
            return {**json.loads(line[len(MARKER) :]), "wall_s": wall, "returncode": 0}
    rc = proc.returncode
    if rc < 0:
        name = signal.Signals(-rc).name
        why = f"killed by {name}" + (" (likely out of memory)" if rc == -signal.SIGKILL else "")
    else:
        why = f"exited with code {rc}"
    return {
        **base,
        "status": "failed",
        "returncode": rc,
        "reason": f"did not fit / failed: {why}",
        "wall_s": wall,
        "stderr_tail": proc.stderr[-2000:],
    }


# --------------------------------------------------------------------------- report


def _mib(kib: float | None) -> float | None:
    return None if kib is None else kib / 1024


def _fmt(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def derived(r: dict[str, Any]) -> dict[str, float | None]:
    """Return the table's numbers for one worker record (None where not measured).

    Args:
      r: a worker record.

    Returns:
      Peak RSS, peak above baseline and XLA temp in MiB; compile and median step in s.
    """
    ok = r.get("status") == "ok"
    xla = r.get("xla") or {}
    temp = xla.get("temp_size_in_bytes")
    peak = r.get("maxrss_kib") if ok else None
    base = r.get("rss_baseline_kib")
    return {
        "peak_mib": _mib(peak),
        "above_mib": None if peak is None or base is None else _mib(peak - base),
        "baseline_mib": _mib(base),
        "temp_mib": None if temp is None else temp / MIB,
        "compile_s": (None if "compile_s" not in r else r["compile_s"] + r.get("lower_s", 0.0)),
        "median_s": r.get("median_s") if ok else None,
    }


def target_check(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Evaluate the issue's target at T=20000, k=100, if both runs were measured.

    Args:
      records: all worker records.

    Returns:
      The ratios and whether each part of the target is met (None if not measured).
    """
    by = {(r["T"], r["k"]): derived(r) for r in records}
    ck, un = by.get((TARGET_T, TARGET_K)), by.get((TARGET_T, None))
    if ck is None or un is None:
        return {"evaluated": False, "reason": f"T={TARGET_T} with/without k={TARGET_K} not run"}
    peak = _ratio(ck["peak_mib"], un["peak_mib"])
    above = _ratio(ck["above_mib"], un["above_mib"])
    speed = _ratio(ck["median_s"], un["median_s"])
    memory_met = None if peak is None else peak <= TARGET_MEMORY_RATIO
    time_met = None if speed is None else speed <= TARGET_TIME_RATIO
    met = None if memory_met is None or time_met is None else memory_met and time_met
    return {
        "evaluated": met is not None,
        "peak_ratio": peak,
        "above_baseline_ratio": above,
        "time_ratio": speed,
        "memory_met": memory_met,
        "time_met": time_met,
        "met": met,
    }


def analysis(records: list[dict[str, Any]]) -> list[str]:
    """Write the analysis paragraphs from the measured numbers.

    Args:
      records: all worker records.

    Returns:
      Markdown lines.
    """
    lines = ["## Analysis", ""]
    by = {(r["T"], r["k"]): r for r in records}
    for (seq_len, k), r in sorted(by.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0)):
        if k is None or (seq_len, None) not in by:
            continue
        u, c = derived(by[(seq_len, None)]), derived(r)
        ys_mib = seq_len * BATCH * HIDDEN * 4 / MIB
        xs_mib = seq_len * BATCH * INPUT_SIZE * 4 / MIB
        carries_mib = (seq_len // k) * 2 * BATCH * HIDDEN * 4 / MIB
        parts = [
            f"- **T={seq_len}, k={k}.** Sizes: ys and its cotangent `[T,B,H]` "
            f"{ys_mib:.1f} MiB each; xs {xs_mib:.1f} MiB; the {seq_len // k} stored carries "
            f"(h, c) {carries_mib:.1f} MiB."
        ]
        if u["temp_mib"] is not None:
            parts.append(
                f"XLA temp unchecked {_fmt(u['temp_mib'])} MiB "
                f"({u['temp_mib'] * 1024 / seq_len:.0f} KiB per step of stored residuals)"
                f", checkpointed {_fmt(c['temp_mib'])} MiB."
            )
        arrays = r.get("largest_hlo_arrays") or []
        if arrays:
            listed = ", ".join(f"`{a['shape']}` {a['mib']:.1f} MiB" for a in arrays[:3])
            has_ys = arrays[0]["mib"] >= ys_mib - 0.05
            parts.append(
                f"Largest arrays in the checkpointed compiled HLO: {listed}; "
                + (
                    "an array the size of ys is materialised."
                    if has_ys
                    else "no array the size of ys exists in it (the gradient does not "
                    "need ys' values, and the cotangent of `sum` is a broadcast of ones "
                    "that XLA fuses into the backward loop), so the checkpointed run "
                    "holds only xs, the stored carries and one chunk's residuals."
                )
            )
        if c["peak_mib"] is not None and c["baseline_mib"] is not None:
            compile_peak = _mib(r.get("maxrss_after_compile_kib"))
            parts.append(
                f"Checkpointed peak RSS {_fmt(c['peak_mib'])} MiB = baseline "
                f"{_fmt(c['baseline_mib'])} MiB (Python, JAX/XLA runtime, inputs) + "
                f"{_fmt(c['above_mib'])} MiB; the peak after compiling alone was "
                f"{_fmt(compile_peak)} MiB."
            )
        if u["peak_mib"] is not None:
            parts.append(
                f"Unchecked peak RSS {_fmt(u['peak_mib'])} MiB "
                f"({_fmt(u['above_mib'])} MiB above baseline)."
            )
        else:
            parts.append(f"Unchecked: {by[(seq_len, None)].get('reason', 'not measured')}.")
            xla_u = by[(seq_len, None)].get("xla") or {}
            estimate = sum(
                xla_u.get(n) or 0
                for n in ("temp_size_in_bytes", "argument_size_in_bytes", "output_size_in_bytes")
            )
            if estimate and c["peak_mib"] is not None:
                parts.append(
                    f"The checkpointed peak is {c['peak_mib'] / (estimate / MIB):.1%} of the "
                    f"unchecked run's XLA estimate ({estimate / MIB:,.0f} MiB)."
                )
        if c["median_s"] is not None and u["median_s"] is not None:
            ur = by[(seq_len, None)]
            parts.append(
                f"Time {c['median_s']:.2f} s vs {u['median_s']:.2f} s "
                f"({c['median_s'] / u['median_s']:.2f}×, n={r.get('repeats_done')} and "
                f"{ur.get('repeats_done')}): the backward pass recomputes each chunk's "
                "forward steps, while the unchecked step writes and reads back "
                f"{_fmt(u['temp_mib'], 0)} MiB of residuals "
                f"({_fmt(ur.get('minor_faults_per_step'), 0)} minor page faults per step, "
                f"vs {_fmt(r.get('minor_faults_per_step'), 0)} checkpointed); other "
                f"processes kept {_fmt(r.get('other_cpu_cores'), 2)} and "
                f"{_fmt(ur.get('other_cpu_cores'), 2)} CPUs busy during the timings."
            )
        lines.append(" ".join(parts))
    return [*lines, ""]


def _git_line(name: str, git: dict[str, Any]) -> str:
    when = "at the start" if name == "git" else "at the end"
    changes = git.get("uncommitted_jaxrnn_changes")
    return f"jaxrnn {when} at commit {(git.get('commit') or 'unknown')[:12]}" + (
        f" with uncommitted changes ({', '.join(changes)})" if changes else ""
    )


def markdown(payload: dict[str, Any]) -> str:
    """Render the results as a markdown report.

    Args:
      payload: the JSON payload (machine, command, config, records, target).

    Returns:
      The report.
    """
    m = payload["machine"]
    extra = "".join(f", {n}={v!r}" for n, v in payload["config"]["scan_kwargs"].items())
    gits = [_git_line("git", payload["git"])]
    if payload.get("git_end") not in (None, payload["git"]):
        gits.append(_git_line("git_end", payload["git_end"]))
    runs_by_source: dict[str, list[str]] = {}
    options_by_source: dict[str, dict[str, str]] = {}
    for r in payload["records"]:
        if "jaxrnn_source" in r:
            sha = r["jaxrnn_source"]["sha256"]
            label = f"T={r['T']} k={r['k'] if r['k'] is not None else 'none'}"
            runs_by_source.setdefault(sha, []).append(label)
            options_by_source[sha] = r["jaxrnn_source"]["scan_options"]
    devices = sorted({r["device"] for r in payload["records"] if "device" in r})
    versions = m["versions"]
    lines = [
        "# Checkpointing through time: memory and time of one LSTM gradient",
        "",
        f"Machine: {m['cpu_model']}, {m['cpu_count']} CPUs (os.cpu_count), "
        f"{m['mem_total_gib']} GiB RAM; jax {versions['jax']}, jaxlib {versions['jaxlib']}, "
        f"device {', '.join(devices) or 'unknown'}; Python {m['python']}.",
        "",
        f"Command: `{payload['command']}`",
        "",
        "Code: " + "; ".join(gits) + ".",
        "",
        *(
            f"- jaxrnn source hash {sha} ({', '.join(runs)}); `jaxrnn.scan` keyword "
            "options and defaults: "
            + ", ".join(f"`{n}={v}`" for n, v in options_by_source[sha].items())
            for sha, runs in runs_by_source.items()
        ),
        *(
            ["- **The jaxrnn sources changed during the run** (see the hashes above)."]
            if len(runs_by_source) > 1
            else []
        ),
        *([f"- Note: {payload['note']}"] if payload.get("note") else []),
        "",
        f"Gradient: `jax.jit(jax.grad(lambda p, xs: jaxrnn.scan(jaxrnn.lstm({HIDDEN}), p, xs, "
        f"checkpoint=k{extra})[1].sum()))`, B={BATCH}, I={INPUT_SIZE}, H={HIDDEN}, float32, "
        "w.r.t. the params. Each row is its own process. Peak RSS is `ru_maxrss` after "
        "compiling and running; baseline is the RSS after imports and input creation; "
        "XLA temp is `compiled.memory_analysis().temp_size_in_bytes`; median step over "
        "n runs after one warm-up. Ratios are checkpointed / unchecked at the same T. "
        "Other CPU is the average number of CPUs kept busy by other processes while the "
        "step was timed (from /proc/stat less this process's CPU time): the machine may "
        "be shared, and above 0 the timings had competition.",
        "",
        "| T | k | n | peak RSS MiB | peak − baseline MiB | XLA temp MiB | compile s "
        "| median step s | peak ratio | above-baseline ratio | time ratio | other CPU | status |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    records = payload["records"]
    by = {(r["T"], r["k"]): derived(r) for r in records}
    for r in sorted(records, key=lambda r: (r["T"], r["k"] or 0)):
        d = derived(r)
        un = by.get((r["T"], None)) if r["k"] is not None else None
        ratios = ["—"] * 3
        if un is not None:
            ratios = [
                _fmt(_ratio(d["peak_mib"], un["peak_mib"]), 3),
                _fmt(_ratio(d["above_mib"], un["above_mib"]), 3),
                _fmt(_ratio(d["median_s"], un["median_s"]), 2),
            ]
        load = _fmt(r.get("other_cpu_cores"), 2)
        status = "ok" if r.get("status") == "ok" else r.get("reason", r.get("status", "?"))
        lines.append(
            f"| {r['T']} | {r['k'] if r['k'] is not None else 'none'} "
            f"| {r.get('repeats_done', '—')} | {_fmt(d['peak_mib'])} | {_fmt(d['above_mib'])} "
            f"| {_fmt(d['temp_mib'])} | {_fmt(d['compile_s'], 2)} | {_fmt(d['median_s'], 2)} "
            f"| {' | '.join(ratios)} | {load} | {status} |"
        )
    t = payload["target"]
    lines += ["", "## Target", ""]
    lines.append(
        f'"With checkpoint={TARGET_K}, one LSTM gradient at T={TARGET_T}, B={BATCH}, '
        f"I={INPUT_SIZE}, H={HIDDEN} peaks at ≤ {TARGET_MEMORY_RATIO:.0%} of the unchecked "
        f"run's process memory, at ≤ {TARGET_TIME_RATIO}× its time.\""
    )
    lines.append("")
    if not t["evaluated"]:
        lines.append(f"Not evaluated: {t.get('reason', 'a run was not measured')}.")
    else:

        def verdict(ok: bool) -> str:
            return "met" if ok else "**not met**"

        lines.append(
            f"- Memory: peak RSS ratio {t['peak_ratio']:.3f} "
            f"(≤ {TARGET_MEMORY_RATIO}: {verdict(t['memory_met'])}); "
            f"above-baseline ratio {_fmt(t['above_baseline_ratio'], 3)}."
        )
        lines.append(
            f"- Time: ratio {t['time_ratio']:.2f} (≤ {TARGET_TIME_RATIO}: "
            f"{verdict(t['time_met'])})."
        )
        lines.append(f"- Target: {'**met**' if t['met'] else '**not met**'}.")
    lines += ["", *analysis(records)]
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def _int_list(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark grid (or, with ``--worker``, one configuration).

    Args:
      argv: command-line arguments (``sys.argv[1:]`` when None).

    Returns:
      The exit code.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq-lens", type=_int_list, default=[20000, 10000, 100000])
    parser.add_argument(
        "--checkpoint", type=_int_list, default=[100], help="k values (comma-separated)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs after one warm-up")
    parser.add_argument(
        "--max-timing-s",
        type=float,
        default=200.0,
        help="cap the timed runs of one configuration at about this many seconds "
        "(at least one; the table's n column shows how many ran)",
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="per-worker timeout, s")
    parser.add_argument(
        "--no-oom-guard",
        action="store_true",
        help="run even when XLA's memory estimate exceeds MemAvailable",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: T=2000, 2 repeats")
    parser.add_argument(
        "--scan-kwargs",
        type=json.loads,
        default={},
        help="extra keyword arguments of jaxrnn.scan for every run, as JSON, e.g. "
        "'{\"unroll\": 2}'",
    )
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--stem", help="output file name without extension")
    parser.add_argument(
        "--append",
        action="store_true",
        help="merge into the existing results file: configurations run now replace "
        "their old records, the others are kept",
    )
    parser.add_argument(
        "--render", type=Path, help="only rewrite the markdown report of this results JSON"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker is not None:
        print(MARKER + json.dumps(worker(json.loads(args.worker))), flush=True)
        return 0

    if args.render is not None:
        payload = json.loads(args.render.read_text())
        args.render.with_suffix(".md").write_text(markdown(payload) + "\n")
        return 0
    if args.quick:
        args.seq_lens, args.repeats = [2000], 2
    ks: list[int | None] = list(args.checkpoint)
    # Checkpointed runs first, then the unchecked ones by increasing T: the
    # unchecked run at the longest T, the likeliest not to fit, goes last.
    order = [(t, k) for t in args.seq_lens for k in ks]
    order += [(t, None) for t in sorted(args.seq_lens)]
    stem = args.stem or "checkpoint_memory" + ("_quick" if args.quick else "")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = args.out_dir / f"{stem}.json", args.out_dir / f"{stem}.md"
    script = os.path.relpath(Path(__file__).resolve(), Path.cwd())
    payload: dict[str, Any] = {
        "command": shlex.join(["python", script, *(sys.argv[1:] if argv is None else argv)]),
        "machine": machine_info(),
        "git": git_state(),
        "config": {
            "batch": BATCH,
            "input_size": INPUT_SIZE,
            "hidden": HIDDEN,
            "dtype": "float32",
            "seq_lens": args.seq_lens,
            "checkpoint": args.checkpoint,
            "repeats": args.repeats,
            "max_timing_s": args.max_timing_s,
            "timeout_s": args.timeout,
            "oom_guard": not args.no_oom_guard,
            "scan_kwargs": args.scan_kwargs,
        },
        "records": [],
    }
    if args.append and json_path.exists():
        old = json.loads(json_path.read_text())
        payload["command"] = f"{old['command']} ; {payload['command']}"
        payload["records"] = [r for r in old["records"] if (r["T"], r["k"]) not in order]
        appended = [*old.get("appended_configs", []), payload["config"]]
        payload["config"], payload["appended_configs"] = old["config"], appended
        payload["git"] = old["git"]
    t_all = time.perf_counter()
    for seq_len, k in order:
        config = {
            "T": seq_len,
            "k": k,
            "repeats": args.repeats,
            "max_timing_s": args.max_timing_s,
            "oom_guard": not args.no_oom_guard,
            "scan_kwargs": args.scan_kwargs,
        }
        print(f"T={seq_len} k={k} ...", end=" ", flush=True)
        record = run_worker(config, args.timeout)
        d = derived(record)
        print(
            f"{record['status']}: peak {_fmt(d['peak_mib'])} MiB, "
            f"median {_fmt(d['median_s'], 2)} s, wall {record['wall_s']:.0f} s"
            + ("" if record["status"] == "ok" else f" ({record.get('reason')})"),
            flush=True,
        )
        payload["records"].append(record)
        payload["target"] = target_check(payload["records"])
        payload["total_wall_s"] = time.perf_counter() - t_all
        payload["git_end"] = git_state()
        json_path.write_text(json.dumps(payload, indent=2) + "\n")
        md_path.write_text(markdown(payload) + "\n")
    print(f"wrote {json_path} and {md_path} in {time.perf_counter() - t_all:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Peak memory and time of one full-BPTT gradient over very long sequences.

An LSTM (B=16, I=1, H=128, float32) with a loss at every step, three ways:

* ``scan``: ``jaxrnn.scan`` then the loss on all outputs ``ys``;
* ``scan_ckpt``: the same with ``checkpoint=k`` (only every k-th carry kept
  for the backward pass, but ``ys`` and its cotangent are whole);
* ``reduce_ckpt``: ``jaxrnn.scan_reduce`` with ``checkpoint=k``: the loss of
  each chunk of k steps is summed inside the time loop, no ``ys`` exists.

Two losses: ``mse`` (a linear head ``w·h_t`` against a float target at every
step) and ``char`` (a V=97 softmax readout, cross-entropy against an integer
target at every step, the character model's loss). Each configuration runs in
its own process, so its peak resident set size (``ru_maxrss``) is its own; a
configuration whose compiled program XLA says needs more memory than the
machine has free is recorded as skipped rather than run into the OOM killer.

Usage::

    python benchmarks/long_sequence_memory.py           # T = 1e4, 1e5, 1e6 (about 20 min)
    python benchmarks/long_sequence_memory.py --quick   # T = 1e4 only

Results: ``benchmarks/results/long_sequence_memory.{json,md}``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _machine import git_state, machine_info, meminfo_kib
from checkpoint_memory import _current_rss_kib, _maxrss_kib, largest_arrays

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
MARKER = "@@RESULT@@ "
BATCH, INPUT, HIDDEN, VOCAB, CHUNK = 16, 1, 128, 97, 1000
METHODS = ("scan", "scan_ckpt", "reduce_ckpt")
TARGET_T = 10**6
TARGET_MIB = {"mse": 0.7 * 1000**3 / 2**20, "char": 0.8 * 1000**3 / 2**20}  # 0.7 GB, 0.8 GB
TARGET_TIME_RATIO = 1.3


def worker(config: dict[str, Any]) -> dict[str, Any]:
    """Compile and run one gradient in this process; return its measurements."""
    with contextlib.suppress(OSError):
        Path("/proc/self/oom_score_adj").write_text("1000")
    import jax
    import jax.numpy as jnp

    import jaxrnn

    steps, method, loss_name = int(config["T"]), config["method"], config["loss"]
    cell = jaxrnn.lstm(HIDDEN)
    out_size = VOCAB if loss_name == "char" else 1
    params = {
        "rnn": cell.init(jax.random.key(0), INPUT),
        "w": jax.random.normal(jax.random.key(1), (HIDDEN, out_size)) / HIDDEN**0.5,
    }
    key_x, key_t = jax.random.split(jax.random.key(2))
    xs = jax.jit(lambda k: jax.random.normal(k, (steps, BATCH, INPUT)))(key_x)
    if loss_name == "char":
        targets = jax.jit(lambda k: jax.random.randint(k, (steps, BATCH), 0, VOCAB))(key_t)
    else:
        targets = jax.jit(lambda k: jax.random.normal(k, (steps, BATCH)))(key_t)
    jax.block_until_ready((params, xs, targets))
    out: dict[str, Any] = dict(config)
    out["rss_baseline_kib"] = _current_rss_kib()
    out["mem_available_kib"] = meminfo_kib("MemAvailable")

    def per_step(p: Any, h: Any, target: Any) -> Any:  # [B, H], [B] -> [B]
        logits = h @ p["w"]
        if loss_name == "mse":
            return (logits[:, 0] - target) ** 2
        log_p = jax.nn.log_softmax(logits)
        return -jnp.take_along_axis(log_p, target[:, None], axis=-1)[:, 0]

    checkpoint = None if method == "scan" else CHUNK

    def loss(p: Any, xs: Any, targets: Any) -> Any:
        fn = lambda h, t: per_step(p, h, t)  # noqa: E731
        if method == "reduce_ckpt":
            _, total = jaxrnn.scan_reduce(cell, p["rnn"], xs, fn, targets, checkpoint=checkpoint)
        else:
            _, hs = jaxrnn.scan(cell, p["rnn"], xs, checkpoint=checkpoint)
            total = jax.vmap(fn)(hs, targets)
        return total.sum() / (steps * BATCH)

    t0 = time.perf_counter()
    compiled = jax.jit(jax.grad(loss)).lower(params, xs, targets).compile()
    out["compile_s"] = time.perf_counter() - t0
    stats = compiled.memory_analysis()
    out["xla_temp_bytes"] = getattr(stats, "temp_size_in_bytes", None)
    out["largest_hlo_arrays"] = largest_arrays(compiled.as_text(), 4)
    need = (out["xla_temp_bytes"] or 0) + (getattr(stats, "argument_size_in_bytes", 0) or 0)
    available = out["mem_available_kib"]
    if available is not None and need > 0.9 * available * 1024:
        out["status"] = "skipped"
        out["reason"] = (
            f"XLA's estimate {need / 2**30:.1f} GiB exceeds 90% of the "
            f"{available / 2**20:.1f} GiB available: not run"
        )
        return out
    times = []
    for _ in range(int(config["repeats"]) + 1):  # the first is a warm-up unless it is alone
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(params, xs, targets))
        times.append(time.perf_counter() - t0)
    out["times_s"] = times
    out["median_s"] = statistics.median(times[1:] or times)
    out["maxrss_kib"] = _maxrss_kib()
    out["status"] = "ok"
    return out


def run_worker(config: dict[str, Any], timeout: float) -> dict[str, Any]:
    """:func:`worker` in a fresh process; a kill, failure or timeout is recorded, not raised."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(config)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {**config, "status": "timeout", "reason": f"exceeded {timeout:.0f} s"}
    for line in proc.stdout.splitlines():
        if line.startswith(MARKER) and proc.returncode == 0:
            return {**json.loads(line[len(MARKER) :]), "wall_s": time.perf_counter() - t0}
    why = f"exit status {proc.returncode}" + (" (killed: out of memory?)" * (proc.returncode < 0))
    return {**config, "status": "failed", "reason": why, "stderr_tail": proc.stderr[-1500:]}


def _mib(kib: float | None) -> str:
    return "—" if kib is None else f"{kib / 1024:,.0f}"


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def markdown(payload: dict[str, Any]) -> str:
    """The results table and the targets' verdicts."""
    m = payload["machine"]
    rows = payload["records"]
    lines = [
        "# Full BPTT over very long sequences: memory and time of one gradient",
        "",
        f"Machine: {m['cpu_model']}, {m['cpu_count']} CPUs, {m['mem_total_gib']} GiB RAM; "
        f"jax {m['versions']['jax']}; Python {m['python']}.",
        f"Command: `{payload['command']}`; code: commit {(payload['git']['commit'] or '?')[:12]}"
        + (" with uncommitted changes" * bool(payload["git"]["uncommitted_jaxrnn_changes"]))
        + ".",
        "",
        f"LSTM B={BATCH}, I={INPUT}, H={HIDDEN}, float32; loss at every step; "
        f"`jax.jit(jax.grad(loss))` w.r.t. the LSTM and head params; k={CHUNK}. "
        "`scan`: `jaxrnn.scan` then the loss on `ys`; `scan_ckpt`: the same with "
        "`checkpoint=k`; `reduce_ckpt`: `jaxrnn.scan_reduce(..., checkpoint=k)`. mse: a "
        f"linear head against a float target; char: a V={VOCAB} softmax readout and "
        "cross-entropy. Each row is its own process; peak RSS is `ru_maxrss`; baseline is the "
        "RSS after imports and input creation; time is the median after one warm-up (at "
        "T=10^6 one run).",
        "",
        "| loss | T | method | peak RSS MiB | baseline MiB | XLA temp MiB | compile s | "
        "gradient s | time / scan_ckpt | status |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    by_key = {(r["loss"], r["T"], r["method"]): r for r in rows}
    for r in rows:
        base = by_key.get((r["loss"], r["T"], "scan_ckpt"), {})
        ratio = "—"
        if r.get("median_s") and base.get("median_s"):
            ratio = f"{r['median_s'] / base['median_s']:.2f}"
        temp = r.get("xla_temp_bytes")
        lines.append(
            f"| {r['loss']} | {r['T']:,} | {r['method']} | {_mib(r.get('maxrss_kib'))} | "
            f"{_mib(r.get('rss_baseline_kib'))} | "
            f"{'—' if temp is None else f'{temp / 2**20:,.0f}'} | "
            f"{r.get('compile_s', 0):.1f} | "
            f"{_seconds(r.get('median_s'))} | {ratio} | "
            f"{r['status']}{': ' + r['reason'] if r.get('reason') else ''} |"
        )
    lines += ["", "## Targets (T = 10^6, full BPTT, loss at every step)", ""]
    for loss_name, limit in TARGET_MIB.items():
        r = by_key.get((loss_name, TARGET_T, "reduce_ckpt"), {})
        base = by_key.get((loss_name, TARGET_T, "scan_ckpt"), {})
        if r.get("status") != "ok":
            lines.append(f"- {loss_name}: not measured ({r.get('reason', 'not in this run')}).")
            continue
        peak = r["maxrss_kib"] / 1024
        verdict = "met" if peak <= limit else "NOT met"
        line = f"- {loss_name}: peak RSS {peak:,.0f} MiB (target ≤ {limit:,.0f} MiB: {verdict})"
        if base.get("median_s"):
            ratio = r["median_s"] / base["median_s"]
            verdict = "met" if ratio <= TARGET_TIME_RATIO else "NOT met"
            line += f"; time {ratio:.2f}× scan_ckpt (target ≤ {TARGET_TIME_RATIO}: {verdict})"
        else:
            # scan_ckpt did not fit: the nearest T at which both ran gives the ratio.
            both = []
            for (name, t, method), other in by_key.items():
                shorter = by_key.get((name, t, "scan_ckpt"), {})
                if name == loss_name and method == "reduce_ckpt" and shorter.get("median_s"):
                    both.append((t, other["median_s"] / shorter["median_s"]))
            line += "; time: scan_ckpt did not run at this T (" + base.get("status", "?") + ")"
            if both:
                t, ratio = max(both)
                line += f", at T={t:,} {ratio:.2f}× scan_ckpt"
        lines.append(line + ".")
    return "\n".join(lines) + "\n"


def _render(path: Path) -> None:
    """Rewrite the Markdown of a JSON result (after a change to :func:`markdown`)."""
    path.with_suffix(".md").write_text(markdown(json.loads(path.read_text())))


def main(argv: list[str] | None = None) -> int:
    """Run every configuration in its own process, then write the JSON and Markdown."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="T = 1e4 only")
    parser.add_argument("--losses", nargs="+", default=["mse", "char"], choices=["mse", "char"])
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args(argv)
    if args.worker:
        print(MARKER + json.dumps(worker(json.loads(args.worker))), flush=True)
        return 0
    seq_lens = [10**4] if args.quick else [10**4, 10**5, 10**6]
    records = []
    for steps in seq_lens:
        for loss_name in args.losses:
            for method in METHODS:
                config = {
                    "T": steps,
                    "loss": loss_name,
                    "method": method,
                    "repeats": 0 if steps >= TARGET_T else 2,
                }
                record = run_worker(config, args.timeout)
                records.append(record)
                print(
                    f"{loss_name} T={steps} {method}: {record['status']} "
                    f"peak {_mib(record.get('maxrss_kib'))} MiB, "
                    f"{record.get('median_s', float('nan')):.2f} s {record.get('reason', '')}",
                    flush=True,
                )
    stem = "long_sequence_memory" + ("_quick" if args.quick else "")
    payload = {
        "machine": machine_info(),
        "git": git_state(),
        "command": "python benchmarks/long_sequence_memory.py" + (" --quick" * args.quick),
        "records": records,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(payload, indent=1) + "\n")
    (RESULTS / f"{stem}.md").write_text(markdown(payload))
    print(markdown(payload))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    raise SystemExit(main())

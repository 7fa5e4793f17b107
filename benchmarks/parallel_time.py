"""Time of ``jaxrnn.scan``'s parallel-in-time methods against the sequential scan, against T.

For each cell and hidden size of the grid and each sequence length T, every
method of ``jaxrnn.scan`` that applies is timed twice, float32, batch 16:

* forward: one jitted call returning the outputs ``ys``;
* forward + backward: one jitted ``jax.grad`` of ``sum(ys²)`` with respect to
  the params and the inputs.

The nonlinear cell is a GRU (as in DEER's Figure 2) with ``sequential``,
``deer`` and ``quasi-deer``; the linear cell is minGRU with ``sequential`` and
``associative``. Each function is compiled and run once (``first_call_s``),
then run ``--repeats`` times or until ``--budget-s`` seconds have passed
(at least twice), and the report gives the median, with
``jax.block_until_ready``. A method whose estimated run time (from the
previous T, scaled linearly) exceeds ``--max-run-s`` is skipped and recorded
as such. For DEER the forward call is :func:`jaxrnn.deer`, which also
reports the iterations used and the residual; the report gives them, and the
largest deviation of its outputs from the sequential scan's.

DEER's published numbers are on a GPU (V100), whose thousands of cores run
the O(log T)-depth associative scan in parallel; on a CPU with two cores the
extra work of the parallel methods (O(T·D³) per Newton iteration for DEER)
is not hidden by any parallelism, and they are expected to be slower than
the sequential scan.

Usage (from the ``benchmarks`` folder, so that ``_machine`` imports)::

    python parallel_time.py            # T = 1e3, 1e4, 1e5 (about 5 min on 2 cores, mostly compiles)
    python parallel_time.py --quick    # T = 1e3 only, hidden size 1 (smoke run, 20 s)
    python parallel_time.py --render results/parallel_time.json   # rewrite the report

Results: ``benchmarks/results/parallel_time.{json,md,png}`` (``--quick``
writes ``parallel_time_quick.*``; ``--out DIR`` writes elsewhere, ``--no-plot``
no png), rewritten after each T, so that an interrupted run keeps what it
measured. ``--cells gru --methods sequential,deer`` measures DEER against the
sequential GRU only.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _machine import git_state, machine_info, time_calls

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

BATCH, INPUT_SIZE = 16, 4
SEQ_LENS = (1_000, 10_000, 100_000)
# (cell, hidden sizes, methods)
GRID = (
    ("gru", (1, 8), ("sequential", "deer", "quasi-deer")),
    ("mingru", (1, 8), ("sequential", "associative")),
)
# Lim et al. 2024, Figure 2: GRU, hidden size 1, batch 16, forward evaluation on a V100.
DEER_PAPER = {
    "device": "NVIDIA V100",
    "cell": "gru",
    "H": 1,
    "B": 16,
    "speedup": {1000: 18.0, 100000: 1122.0},
}


def measure(
    cell_name: str,
    hidden: int,
    methods: tuple[str, ...],
    seq_len: int,
    args: argparse.Namespace,
    skip: dict[tuple[str, str], str],
    last_ms: dict[tuple[str, str], tuple[int, float]],
) -> list[dict[str, Any]]:
    """Every method and pass for one (cell, H, T); updates the skip list and the last times."""
    import jax
    import jax.numpy as jnp

    import jaxrnn

    cell = getattr(jaxrnn, cell_name)(hidden)
    params = cell.init(jax.random.key(0), INPUT_SIZE)
    xs = jax.random.normal(jax.random.key(1), (seq_len, BATCH, INPUT_SIZE))

    def forward(method: str) -> Callable[..., Any]:
        if method in ("deer", "quasi-deer"):
            quasi = method == "quasi-deer"
            return jax.jit(lambda p, x: jaxrnn.deer(cell, p, x, quasi=quasi)[1:])
        return jax.jit(lambda p, x: jaxrnn.scan(cell, p, x, method=method)[1])

    def gradient(method: str) -> Callable[..., Any]:
        def loss(p: Any, x: Any) -> Any:
            return jnp.sum(jaxrnn.scan(cell, p, x, method=method)[1] ** 2)

        return jax.jit(jax.grad(loss, argnums=(0, 1)))

    rows, reference = [], None
    for method in methods:
        for kind, make in (("forward", forward), ("forward+backward", gradient)):
            key = (f"{cell_name}-{hidden}-{method}", kind)
            row: dict[str, Any] = {
                "cell": cell_name, "H": hidden, "T": seq_len, "B": BATCH, "I": INPUT_SIZE,
                "method": method, "pass": kind,
            }  # fmt: skip
            if key in last_ms:
                t_prev, ms_prev = last_ms[key]
                estimate_s = ms_prev / 1e3 * seq_len / t_prev
                if estimate_s > args.max_run_s:
                    skip[key] = f"skipped: estimated {estimate_s:.0f} s per run"
            if key in skip:
                rows.append({**row, "skipped": skip[key]})
                print(f"{key} T={seq_len}: {skip[key]}", flush=True)
                continue
            fn = make(method)
            call = functools.partial(fn, params, xs)
            times, first, out = time_calls(call, args.repeats, args.budget_s)
            row.update(
                median_ms=1e3 * statistics.median(times),
                min_ms=1e3 * min(times),
                n=len(times),
                first_call_s=first,
            )
            if kind == "forward":
                ys = out[0] if method in ("deer", "quasi-deer") else out
                if method == "sequential":
                    reference = ys
                elif reference is not None:
                    row["max_abs_deviation"] = float(jnp.abs(ys - reference).max())
                if method in ("deer", "quasi-deer"):
                    info = out[1]
                    row["iterations"] = int(info.iterations.max())
                    row["residual"] = float(info.residual.max())
            last_ms[key] = (seq_len, row["median_ms"])
            rows.append(row)
            print(
                f"{key} T={seq_len}: {row['median_ms']:.2f} ms (n={row['n']}, "
                f"first call {first:.1f} s)"
                + (f", {row['iterations']} iterations" if "iterations" in row else ""),
                flush=True,
            )
    return rows


def _speedups(results: list[dict[str, Any]]) -> dict[tuple[Any, ...], float]:
    """Sequential median / method median for every timed row (keyed by cell, H, T, method, pass)."""
    seq = {
        (r["cell"], r["H"], r["T"], r["pass"]): r["median_ms"]
        for r in results
        if r["method"] == "sequential" and "median_ms" in r
    }
    out = {}
    for r in results:
        base = seq.get((r["cell"], r["H"], r["T"], r["pass"]))
        if base is not None and "median_ms" in r:
            out[(r["cell"], r["H"], r["T"], r["method"], r["pass"])] = base / r["median_ms"]
    return out


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.1e}"


READING_CPU = (
    "Reading: an associative scan does more arithmetic than the sequential scan (about "
    "twice as much for a linear recurrence; for DEER, that times the number of "
    "iterations and D³ for dense Jacobians, or D Jacobian-vector products for "
    "quasi-DEER's diagonal) in O(log T) sequential depth instead of T. DEER's GPU "
    "speed-ups come from running those levels on thousands of cores; two CPU cores offer "
    "no such parallelism, so on this machine DEER and quasi-DEER are slower than the "
    "sequential scan, as expected. What a parallel method can still win on a CPU is the "
    "sequential scan's fixed cost per step (one loop iteration of tiny operations, "
    "forward and backward), by running a few large vectorised operations instead: that "
    "is where minGRU's associative scan is faster (smallest state, no iterations, no "
    "Jacobians). With more state (H=8) or longer sequences (arrays that no longer fit "
    "in cache) the extra arithmetic and memory traffic win over the per-step cost. "
    "At H=8 quasi-DEER is slower than DEER despite its O(T·D) memory: the diagonal of "
    "a generic cell's Jacobian takes D Jacobian-vector products one after another, and "
    "it needs more iterations (see the table); a cell-specific diagonal (as Gonzalez "
    "et al. derive for the GRU) would remove the first cost. At H=1 (D=1) the two are "
    "the same algorithm."
)
READING_ACCELERATOR = (
    "Reading: an associative scan does more arithmetic than the sequential scan (for "
    "DEER, the number of iterations times D³ for dense Jacobians) in O(log T) sequential "
    "depth instead of T; an accelerator runs each level's work in parallel, which is "
    "where DEER's published speed-ups come from. The iterations column multiplies "
    "DEER's cost; the sequential scan pays one loop iteration per step."
)


def markdown(payload: dict[str, Any]) -> str:
    """The report: machine, table, DEER's published numbers, verdict."""
    m, results = payload["machine"], payload["results"]
    speedups = _speedups(results)
    # Files from before the platform was recorded were measured on this 2-core CPU.
    on_cpu = payload.get("platform", "cpu") == "cpu"
    rows = [
        "# Parallel-in-time methods against the sequential scan",
        "",
        f"Machine: {m['cpu_model']}, {m['cpu_count']} CPUs, {m['mem_total_gib']} GiB, "
        f"Python {m['python']}, jax {m['versions']['jax']}, device {payload['device']}; "
        f"commit {payload['git']['commit']} (uncommitted changes under jaxrnn/: "
        f"{len(payload['git']['uncommitted_jaxrnn_changes'] or [])}). "
        f"Load average before/after: {payload['loadavg_before']} / {payload['loadavg_after']}"
        + (
            " (the machine is shared: other processes competed for the 2 cores)." if on_cpu else "."
        ),
        f"Generated by `python benchmarks/parallel_time.py{payload['flags']}` "
        f"on {payload['date']} in {payload['wall_s']:.0f} s: float32, batch {BATCH}, input size "
        f"{INPUT_SIZE}; medians of up to {payload['settings']['repeats']} runs within "
        f"{payload['settings']['budget_s']} s per function (at least 2) after a warm-up call; "
        f"runs estimated over {payload['settings']['max_run_s']} s skipped; "
        "forward = one jitted call returning ys, "
        "forward+backward = one jitted `jax.grad` of sum(ys²) w.r.t. params and inputs. "
        "Speed-up = sequential time / method time (> 1: the method is faster).",
        "",
        "| cell | H | T | method | pass | median ms | n | speed-up | DEER iterations "
        "| residual | max abs dev. from sequential |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if "skipped" in r:
            rows.append(
                f"| {r['cell']} | {r['H']} | {r['T']} | {r['method']} | {r['pass']} "
                f"| {r['skipped']} | | | | | |"
            )
            continue
        sp = speedups.get((r["cell"], r["H"], r["T"], r["method"], r["pass"]))
        rows.append(
            f"| {r['cell']} | {r['H']} | {r['T']} | {r['method']} | {r['pass']} "
            f"| {r['median_ms']:.2f} | {r['n']} "
            f"| {'' if r['method'] == 'sequential' or sp is None else f'{sp:.3g}x'} "
            f"| {r.get('iterations', '')} "
            f"| {_fmt(r.get('residual'))} | {_fmt(r.get('max_abs_deviation'))} |"
        )
    paper = payload["deer_paper"]
    rows += [
        "",
        f"DEER's published forward speed-ups ({paper['device']}, GRU H={paper['H']}, batch "
        f"{paper['B']}): "
        + ", ".join(f"{v:g}x at T={t}" for t, v in paper["speedup"].items())
        + f". Here, on {'the CPU' if on_cpu else payload.get('device_kind')} (forward, GRU H=1): "
        + ", ".join(
            f"{speedups[k]:.3g}x at T={k[2]}"
            for k in sorted(speedups, key=lambda k: k[2])
            if k[:2] == ("gru", 1) and k[3] == "deer" and k[4] == "forward"
        )
        + ".",
        "",
        "Where each method is faster (speed-up > 1) or slower than the sequential scan here:",
        "",
    ]
    groups: dict[tuple[Any, ...], list[str]] = {}
    for (cell, hidden, seq_len, method, kind), sp in sorted(speedups.items()):
        if method != "sequential":
            groups.setdefault((cell, hidden, method, kind), []).append(f"{sp:.3g}x at T={seq_len}")
    for (cell, hidden, method, kind), items in groups.items():
        rows.append(f"- {cell} H={hidden}, {method}, {kind}: {', '.join(items)}")
    faster = sorted((k, v) for k, v in speedups.items() if k[3] != "sequential" and v > 1)
    best_deer = max(
        ((v, k) for k, v in speedups.items() if k[3] in ("deer", "quasi-deer")), default=None
    )
    rows += [
        "",
        "Faster than the sequential scan: "
        + (
            ", ".join(f"{k[0]} H={k[1]} {k[3]} {k[4]} at T={k[2]} ({v:.3g}x)" for k, v in faster)
            if faster
            else "nothing"
        )
        + "."
        + (
            f" DEER's best: {best_deer[0]:.3g}x ({best_deer[1][0]} H={best_deer[1][1]} "
            f"{best_deer[1][3]} {best_deer[1][4]} at T={best_deer[1][2]})."
            if best_deer
            else ""
        ),
        "",
        READING_CPU if on_cpu else READING_ACCELERATOR,
    ]
    medians = {
        (r["cell"], r["H"], r["T"], r["method"], r["pass"]): r["median_ms"]
        for r in results
        if "median_ms" in r
    }
    inverted = [
        f"{k[0]} H={k[1]} {k[3]} at T={k[2]}"
        for k, v in medians.items()
        if k[4] == "forward" and v > medians.get((*k[:4], "forward+backward"), float("inf"))
    ]
    rows += [
        "",
        "Noise: the machine was shared (see the load average), so single timings can be "
        "off by tens of percent between runs."
        + (
            " Inversions where the forward pass took longer than forward+backward of the "
            f"same configuration are such noise: {', '.join(inverted)}. (For DEER the two "
            "are close anyway: its backward pass costs about one Newton iteration, a "
            "linearisation at the fixed point and one adjoint scan.)"
            if inverted
            else ""
        ),
    ]
    return "\n".join(rows) + "\n"


def plot(payload: dict[str, Any], path: Path) -> None:
    """Time against T for every (cell, H, method), and the GRU speed-ups next to DEER's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = payload["results"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    series: dict[tuple[Any, ...], list[tuple[int, float]]] = {}
    for r in results:
        if "median_ms" in r:
            series.setdefault((r["cell"], r["H"], r["method"], r["pass"]), []).append(
                (r["T"], r["median_ms"])
            )
    for ax, kind in zip(axes[:2], ("forward", "forward+backward"), strict=True):
        for (cell, hidden, method, pass_), points in sorted(series.items()):
            if pass_ != kind:
                continue
            ts, ms = zip(*sorted(points), strict=True)
            style = "--" if method == "sequential" else "-"
            ax.plot(ts, ms, style, marker="o", label=f"{cell} H={hidden} {method}")
        ax.set(xscale="log", yscale="log", xlabel="T", ylabel="median ms", title=kind)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7)
    speedups = _speedups(results)
    ax = axes[2]
    for method in ("deer", "quasi-deer"):
        for hidden in sorted({r["H"] for r in results if r["cell"] == "gru"}):
            for kind, style in (("forward", "-"), ("forward+backward", ":")):
                pts = sorted(
                    (k[2], v)
                    for k, v in speedups.items()
                    if k[0] == "gru" and k[1] == hidden and k[3] == method and k[4] == kind
                )
                if pts:
                    ts, sp = zip(*pts, strict=True)
                    ax.plot(ts, sp, style, marker="o", label=f"GRU H={hidden} {method}, {kind}")
    paper = payload["deer_paper"]
    ts, sp = zip(*sorted((int(t), v) for t, v in paper["speedup"].items()), strict=True)
    ax.plot(ts, sp, "k*", markersize=12, label=f"DEER paper ({paper['device']}, H=1, forward)")
    ax.axhline(1.0, color="gray", lw=1)
    ax.set(xscale="log", yscale="log", xlabel="T", ylabel="sequential time / method time",
           title="GRU speed-up over sequential (this CPU vs DEER's GPU)")  # fmt: skip
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.suptitle(
        f"jaxrnn parallel-in-time methods, {payload['machine']['cpu_model']}, "
        f"{payload['machine']['cpu_count']} CPUs, float32, batch {BATCH}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Run the grid and write the results."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="T=1000 and hidden size 1 only")
    parser.add_argument("--seq-lens", default=None, help="comma-separated T (default 1e3,1e4,1e5)")
    parser.add_argument("--repeats", type=int, default=7, help="most timed runs per function")
    parser.add_argument("--budget-s", type=float, default=2.0, help="timing seconds per function")
    parser.add_argument("--max-run-s", type=float, default=5.0, help="skip longer runs")
    parser.add_argument(
        "--cells", default=",".join(c for c, _, _ in GRID), help="comma-separated subset"
    )
    parser.add_argument(
        "--methods",
        default=",".join(dict.fromkeys(m for _, _, ms in GRID for m in ms)),
        help="comma-separated subset (sequential is the reference of the speed-ups)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the results")
    parser.add_argument("--no-plot", action="store_true", help="write no png")
    parser.add_argument("--render", type=Path, help="rewrite the report and plot of a JSON file")
    args = parser.parse_args(argv)
    if args.render:
        saved = json.loads(args.render.read_text())
        args.render.with_suffix(".md").write_text(markdown(saved))
        if not args.no_plot:
            plot(saved, args.render.with_suffix(".png"))
        return 0
    cells, methods = args.cells.split(","), args.methods.split(",")
    if unknown := sorted(set(cells) - {c for c, _, _ in GRID}):
        parser.error(f"--cells: unknown {unknown}, expected some of {[c for c, _, _ in GRID]}")
    if unknown := sorted(set(methods) - {m for _, _, ms in GRID for m in ms}):
        parser.error(f"--methods: unknown {unknown}")
    import jax

    seq_lens = (1000,) if args.quick else SEQ_LENS
    if args.seq_lens:
        seq_lens = tuple(int(float(t)) for t in args.seq_lens.split(","))
    grid = [
        (c, hs[:1] if args.quick else hs, tuple(m for m in ms if m in methods))
        for c, hs, ms in GRID
        if c in cells
    ]
    start, load_before = time.perf_counter(), os.getloadavg()
    device = jax.devices()[0]
    payload: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "flags": " ".join(["", *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine_info(),
        "device": str(device),
        "platform": device.platform,
        "device_kind": str(getattr(device, "device_kind", device)),
        "git": git_state(),
        "loadavg_before": [round(x, 2) for x in load_before],
        "settings": {
            "batch": BATCH,
            "input_size": INPUT_SIZE,
            "dtype": "float32",
            **{k: v for k, v in vars(args).items() if k not in ("out", "render")},
        },
        "seq_lens": list(seq_lens),
        "deer_paper": DEER_PAPER,
        "results": [],
    }
    stem = "parallel_time_quick" if args.quick else "parallel_time"
    args.out.mkdir(parents=True, exist_ok=True)
    skip: dict[tuple[str, str], str] = {}
    last_ms: dict[tuple[str, str], tuple[int, float]] = {}
    for seq_len in seq_lens:
        for cell_name, hiddens, methods in grid:
            for hidden in hiddens:
                payload["results"] += measure(
                    cell_name, hidden, methods, seq_len, args, skip, last_ms
                )
        # After every T: an interrupted run keeps what it measured.
        payload["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
        payload["wall_s"] = time.perf_counter() - start
        (args.out / f"{stem}.json").write_text(json.dumps(payload, indent=1, default=str) + "\n")
        (args.out / f"{stem}.md").write_text(markdown(payload))
    if not args.no_plot:
        plot(payload, args.out / f"{stem}.png")
    print(markdown(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())

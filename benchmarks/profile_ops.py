"""Where the time of one jaxrnn call goes: XLA's ops, from a ``jax.profiler`` trace.

Runs one measurement of ``peers.py`` (jaxrnn's ``train`` or ``infer`` at one
size) a few times under :func:`jax.profiler.trace`, reads the trace back with
JAX's own profile reader, and sums each XLA op's *self* time (its duration
minus the ops nested in it, e.g. a while loop minus its body). Ops are put in
groups: matmuls inside the time loops (the recurrent products), matmuls
outside them (input projection, weight gradients), elementwise work inside
the loops, data movement inside the loops (carry copies, slicing the inputs
and stacking the outputs), and everything else outside. Times are per call,
summed over the threads that ran them.

Usage::

    python benchmarks/profile_ops.py                       # LSTM train, T=100, B=32, I=64, H=128
    python benchmarks/profile_ops.py --mode infer --B 64 --H 256 --I 256

Results: ``benchmarks/results/profile_<cell>_<mode>_T<T>_B<B>_H<H>.md``.
"""

from __future__ import annotations

import argparse
import collections
import glob
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _libraries import setup_jaxrnn
from _machine import git_state, machine_info

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def group(op: str, in_loop: bool) -> str:
    """The group an XLA op belongs to, from its name and whether a while loop runs it."""
    if op.startswith(("ynn_", "xnn_", "onednn")) or "dot" in op or "gemm" in op:
        return "matmul in the time loop" if in_loop else "matmul outside the loops"
    if not in_loop:
        return "other outside the loops"
    moves = ("dynamic-update-slice", "dynamic_update_slice", "dynamic-slice", "copy", "concat")
    if any(word in op for word in moves):
        return "data movement in the time loop"
    return "elementwise in the time loop"


def self_times(
    trace_dir: str, calls: int
) -> tuple[dict[str, float], dict[str, int], dict[str, bool]]:
    """Per-call self time (s) and count of every XLA op, and whether a loop ran it."""
    from jax._src.lib import _profile_data

    path = sorted(glob.glob(f"{trace_dir}/**/*.xplane.pb", recursive=True))[-1]
    data = _profile_data.ProfileData.from_file(path)
    total: collections.Counter[str] = collections.Counter()
    count: collections.Counter[str] = collections.Counter()
    looped: dict[str, bool] = {}
    for plane in data.planes:
        for line in plane.lines:
            events = []
            for ev in line.events:
                stats = dict(ev.stats)
                if "hlo_op" in stats:
                    events.append((ev.start_ns, ev.start_ns + ev.duration_ns, stats["hlo_op"]))
            events.sort(key=lambda e: (e[0], -e[1]))
            stack: list[list[Any]] = []  # [start, end, name, child time]
            for start, end, name in events:
                while stack and stack[-1][1] <= start:
                    close(stack.pop(), total, count)
                in_loop = any(s[2].startswith("while") for s in stack)
                looped[name] = looped.get(name, False) or in_loop
                if stack:
                    stack[-1][3] += end - start
                stack.append([start, end, name, 0.0])
            while stack:
                close(stack.pop(), total, count)
    return (
        {k: v / calls / 1e9 for k, v in total.items()},
        {k: v // calls for k, v in count.items()},
        looped,
    )


def close(
    entry: list[Any], total: collections.Counter[str], count: collections.Counter[str]
) -> None:
    """Book a finished op's self time: its duration less its nested ops'."""
    start, end, name, children = entry
    total[name] += max(end - start - children, 0.0)
    count[name] += 1


def main(argv: list[str] | None = None) -> int:
    """Trace the measurement and write the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cell", default="lstm", choices=("lstm", "gru", "elman"))
    parser.add_argument("--mode", default="train", choices=("train", "infer"))
    parser.add_argument("--T", type=int, default=100)
    parser.add_argument("--B", type=int, default=32)
    parser.add_argument("--I", type=int, default=64)
    parser.add_argument("--H", type=int, default=128)
    parser.add_argument("--calls", type=int, default=10)
    args = parser.parse_args(argv)
    import jax

    point = {
        "cell": args.cell,
        "mode": args.mode,
        "T": args.T,
        "B": args.B,
        "I": args.I,
        "H": args.H,
    }
    run = setup_jaxrnn(point)
    run()
    run()
    untraced = []
    for _ in range(args.calls):
        start = time.perf_counter()
        run()
        untraced.append(time.perf_counter() - start)
    with tempfile.TemporaryDirectory() as trace_dir:
        with jax.profiler.trace(trace_dir):
            traced_start = time.perf_counter()
            for _ in range(args.calls):
                run()
            traced = (time.perf_counter() - traced_start) / args.calls
        times, counts, looped = self_times(trace_dir, args.calls)
    groups: collections.Counter[str] = collections.Counter()
    for op, seconds in times.items():
        groups[group(op, looped[op])] += seconds
    wall = statistics.median(untraced)
    busy = sum(times.values())
    name = f"profile_{args.cell}_{args.mode}_T{args.T}_B{args.B}_H{args.H}"
    m = machine_info()
    lines = [
        f"# Where the time goes: jaxrnn {args.cell} {args.mode}, "
        f"T={args.T}, B={args.B}, I={args.I}, H={args.H}",
        "",
        f"Generated by `python benchmarks/profile_ops.py --cell {args.cell} --mode {args.mode} "
        f"--T {args.T} --B {args.B} --I {args.I} --H {args.H}` on {time.strftime('%Y-%m-%d')}, "
        f"commit `{(git_state()['commit'] or 'unknown')[:12]}`; "
        f"{m['cpu_model']}, {m['cpu_count']} CPUs, "
        f"jax {m['versions']['jax']}, device {jax.devices()[0].platform}.",
        "",
        f"Wall time per call: {1e3 * wall:.2f} ms untraced (median of {args.calls}), "
        f"{1e3 * traced:.2f} ms traced. XLA ops' self time, summed over threads: "
        f"{1e3 * busy:.2f} ms per call ({100 * busy / traced:.0f}% of the traced wall time; "
        "two threads can run ops at once, and dispatch and idle waits count in neither).",
        "",
        "| group | ms per call | share of op time |",
        "|---|---|---|",
    ]
    for g, seconds in sorted(groups.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {g} | {1e3 * seconds:.2f} | {100 * seconds / busy:.0f}% |")
    lines += [
        "",
        "| XLA op | group | ms per call | runs per call | µs per run |",
        "|---|---|---|---|---|",
    ]
    for op, seconds in sorted(times.items(), key=lambda kv: -kv[1])[:25]:
        runs = max(counts[op], 1)
        lines.append(
            f"| `{op}` | {group(op, looped[op])} | {1e3 * seconds:.3f} | {counts[op]} "
            f"| {1e6 * seconds / runs:.1f} |"
        )
    text = "\n".join(lines) + "\n"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

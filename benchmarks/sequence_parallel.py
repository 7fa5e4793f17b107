"""One sequence split along time across devices: same answer, communication independent of T.

``jaxrnn.scan(..., method=M, sequence_axis="time")`` under ``jax.set_mesh``
splits the time axis of ``xs`` across the devices of the mesh axis
``"time"``. For each case below this script runs the same jitted call on one
device and split across ``--devices`` devices (emulated CPU devices,
``--xla_force_host_platform_device_count``, unless the machine has that
many accelerators), float32, and records:

* the largest difference of the outputs, final carry and gradient (of
  ``sum(ys · c)`` for a fixed random ``c``, w.r.t. params and inputs) between
  one device and the split run, relative to the largest entry of each;
* the collectives of the compiled forward + backward program: how many, and
  the bytes their results hold (an operation inside a loop body counts once),
  next to the bytes of ``xs``, to show what does not grow with T;
* the median time of the gradient call on each (after one compiling call;
  ``jax.block_until_ready``; at least 2 runs within ``--budget-s``).

Emulated devices are threads sharing the host's cores (2 here): the
point is the answer and the communication; the times say how the split
program uses this host, not what separate accelerators would gain. The
cases: minGRU (H=16) by ``method="associative"`` at T = 10⁴, 10⁵, 10⁶, and a
GRU (H=4) by ``"deer"`` and ``"quasi-deer"`` at T = 10³, 10⁴ (batch 2, input
size 4).

Usage (from the ``benchmarks`` folder)::

    python sequence_parallel.py              # every case (about 3 min on 2 cores)
    python sequence_parallel.py --quick      # T = 10³ only (smoke run)
    python sequence_parallel.py --render results/sequence_parallel.json   # rewrite the report

Results: ``benchmarks/results/sequence_parallel.{json,md}`` (``--quick`` writes
``sequence_parallel_quick.*``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from _machine import git_state, machine_info, time_calls

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
BATCH, INPUT_SIZE = 2, 4
# (cell, hidden size, method, sequence lengths)
CASES = (
    ("mingru", 16, "associative", (10_000, 100_000, 1_000_000)),
    ("gru", 4, "deer", (1_000, 10_000)),
    ("gru", 4, "quasi-deer", (1_000, 10_000)),
)


def _deviation(got: Any, want: Any) -> float:
    """Largest |got − want| of the leaves, each relative to max(1, max |want|)."""
    import jax
    import numpy as np

    worst = 0.0
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        g, w = np.asarray(g, np.float64), np.asarray(w, np.float64)
        scale = max(1.0, float(np.abs(w).max(initial=0.0)))
        worst = max(worst, float(np.abs(g - w).max(initial=0.0)) / scale)
    return worst


def measure(cell_name: str, hidden: int, method: str, seq_len: int, args: Any) -> dict[str, Any]:
    """One case: deviations, collectives and gradient times, one device against split."""
    import jax
    import jax.numpy as jnp

    import jaxrnn
    from jaxrnn._time_axis import collectives

    cell = getattr(jaxrnn, cell_name)(hidden)
    params = cell.init(jax.random.key(0), INPUT_SIZE)
    xs = jax.random.normal(jax.random.key(1), (seq_len, BATCH, INPUT_SIZE))
    lengths = jnp.array([seq_len, seq_len - seq_len // 3])
    weights = jax.random.normal(jax.random.key(2), (seq_len, BATCH, hidden))  # ys' cotangent

    def forward(p: Any, x: Any, **split: Any) -> Any:
        return jaxrnn.scan(cell, p, x, lengths=lengths, method=method, **split)

    def gradient(p: Any, x: Any, **split: Any) -> Any:
        return jax.grad(lambda p, x: (forward(p, x, **split)[1] * weights).sum(), (0, 1))(p, x)

    mesh = jax.make_mesh((args.devices,), ("time",), devices=jax.devices()[: args.devices])
    one = {"forward": jax.jit(forward), "gradient": jax.jit(gradient)}
    split = {
        name: jax.jit(lambda p, x, fn=fn: fn(p, x, sequence_axis="time"))
        for name, fn in (("forward", forward), ("gradient", gradient))
    }
    row: dict[str, Any] = {"cell": cell_name, "H": hidden, "method": method, "T": seq_len}
    # The split run's inputs live split along time, as a sequence too long for one device would.
    along_time = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("time"))
    results = {}
    for label, fns in (("one", one), ("split", split)):
        x = xs if label == "one" else jax.device_put(xs, along_time)
        with jax.set_mesh(mesh):
            out = jax.block_until_ready(fns["forward"](params, x))
            times, first, grads = time_calls(
                lambda fns=fns, x=x: fns["gradient"](params, x), args.repeats, args.budget_s
            )
            if label == "split":
                text = fns["gradient"].lower(params, x).compile().as_text()
        results[label] = (out, grads)
        row[f"{label}_gradient_ms"] = 1e3 * statistics.median(times)
        row[f"{label}_first_call_s"] = first
    ops = collectives(text)
    row.update(
        output_deviation=_deviation(results["split"][0][1], results["one"][0][1]),
        carry_deviation=_deviation(results["split"][0][0], results["one"][0][0]),
        gradient_deviation=_deviation(results["split"][1], results["one"][1]),
        collectives=len(ops),
        collective_bytes=sum(size for _, size in ops),
        largest_collective_bytes=max((size for _, size in ops), default=0),
        xs_bytes=int(xs.nbytes),
        split_over_one=row["split_gradient_ms"] / row["one_gradient_ms"],
    )
    print(
        f"{cell_name} {method} T={seq_len}: deviation out {row['output_deviation']:.1e} "
        f"carry {row['carry_deviation']:.1e} grad {row['gradient_deviation']:.1e}; "
        f"{len(ops)} collectives, {row['collective_bytes']} B (xs {row['xs_bytes']} B); "
        f"gradient {row['one_gradient_ms']:.0f} ms on one, {row['split_gradient_ms']:.0f} ms "
        "split",
        flush=True,
    )
    return row


def markdown(payload: dict[str, Any]) -> str:
    """The report: machine, settings, and one row per case."""
    m, git = payload["machine"], payload["git"]
    commit = (git["commit"] or "unknown")[:12]
    if git["uncommitted_jaxrnn_changes"]:
        commit += " with uncommitted changes to jaxrnn/"
    lines = [
        "# One sequence split along time across devices",
        "",
        f"Made by `python benchmarks/sequence_parallel.py{payload['flags']}` on "
        f"{payload['date']}: {m['cpu_model']}, {m['cpu_count']} cores, "
        f"{m['mem_total_gib']} GiB, {payload['device_kind']} × {payload['devices']} "
        f"({payload['emulated']}), jax {m['versions']['jax']}, commit {commit}.",
        "",
        f"Batch {BATCH}, input size {INPUT_SIZE}, float32, lengths [T, T − T//3]. "
        "Deviations: max |split − one device| relative to max(1, max |one device|), "
        "for the outputs, the final carry and the gradient w.r.t. params and inputs. "
        "Collectives: those of the compiled forward + backward program (one inside "
        "a loop body counted once) and the bytes of their results.",
        "",
        "| cell | method | T | output dev. | carry dev. | gradient dev. | collectives "
        "| their bytes | largest | bytes of xs | gradient ms, one | split | time split/one |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in payload["results"]:
        lines.append(
            f"| {r['cell']} H={r['H']} | {r['method']} | {r['T']:,} | "
            f"{r['output_deviation']:.1e} | {r['carry_deviation']:.1e} | "
            f"{r['gradient_deviation']:.1e} | {r['collectives']} | {r['collective_bytes']:,} | "
            f"{r['largest_collective_bytes']:,} | {r['xs_bytes']:,} | "
            f"{r['one_gradient_ms']:.1f} | {r['split_gradient_ms']:.1f} | "
            f"{r['split_over_one']:.2f} |"
        )
    lines += [
        "",
        "The collectives are the same at every T of a method (each device "
        "gathers one total per chunk, sends one state to a neighbour, and the "
        "params' gradient is summed once), while the bytes of `xs` grow with T. "
        "Emulated CPU devices are threads of one process sharing the host's "
        f"{m['cpu_count']} cores, and the one-device program runs its scan on one "
        "of them: split/one says how the split program uses this host, not what "
        "separate accelerators would gain.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the cases and write the results."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="T = 1000 only")
    parser.add_argument("--devices", type=int, default=4, help="devices of the time axis")
    parser.add_argument("--repeats", type=int, default=5, help="most timed runs per call")
    parser.add_argument("--budget-s", type=float, default=3.0, help="timing seconds per call")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the results")
    parser.add_argument("--render", type=Path, help="rewrite the report of a JSON file")
    args = parser.parse_args(argv)
    if args.render:
        args.render.with_suffix(".md").write_text(markdown(json.loads(args.render.read_text())))
        return 0
    flag = f"--xla_force_host_platform_device_count={args.devices}"
    if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flag}".strip()
    import jax

    if len(jax.devices()) < args.devices:
        parser.error(f"--devices: {len(jax.devices())} device(s) here, got {args.devices}")
    start = time.perf_counter()
    results = []
    for cell_name, hidden, method, seq_lens in CASES:
        for seq_len in (1000,) if args.quick else seq_lens:
            results.append(measure(cell_name, hidden, method, seq_len, args))
    device = jax.devices()[0]
    payload = {
        "date": time.strftime("%Y-%m-%d"),
        "flags": " ".join(["", *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine_info(),
        "git": git_state(),
        "device_kind": device.device_kind,
        "devices": args.devices,
        "emulated": "emulated on the host CPU" if device.platform == "cpu" else "accelerators",
        "wall_s": time.perf_counter() - start,
        "results": results,
    }
    stem = "sequence_parallel_quick" if args.quick else "sequence_parallel"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(payload, indent=1, default=str) + "\n")
    (args.out / f"{stem}.md").write_text(markdown(payload))
    print(f"wrote {args.out / stem}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Speed of one training step in float32 against bfloat16 compute, fused and by autodiff.

For each cell and size: one jitted ``jax.value_and_grad`` of a regression
loss (mean squared error against random targets at every step, random
normal inputs ``[B, T, I]``) through ``jaxrnn.training.readout(cell, 1)``
in three variants, all with float32 params:

* ``float32``: float32 compute, the fused BPTT backward (the default);
* ``bfloat16``: ``compute_dtype=jnp.bfloat16``, the fused backward
  (bfloat16 matmul operands, float32 accumulation and gate math);
* ``bfloat16_autodiff``: the same with ``backward="autodiff"``: JAX's
  autodiff through the cell's step.

Each variant is compiled and run once (warm-up), then the three alternate
for ``--repeats`` rounds, every call waited for with
``jax.block_until_ready``: the machine's other load falls on all three
alike. Reported: each variant's median, the interquartile range of its
times relative to the median (the noise), the ratio bfloat16-fused over
bfloat16-autodiff, and XLA's temporary-buffer size of each compiled step
(the memory the residuals of the backward pass take, among others).

Usage::

    python benchmarks/mixed_precision.py [--repeats 20]

Results: ``benchmarks/results/mixed_precision.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from _machine import git_state, machine_info

RESULTS = Path(__file__).resolve().parent / "results"
# (cell, T, B, I, H); the first is the target of issue 17: bfloat16 fused ≥ 1.3× autodiff.
GRID = [
    ("lstm", 100, 32, 64, 128),
    ("lstm", 100, 32, 2, 128),
    ("lstm", 100, 64, 2, 512),
    ("gru", 100, 32, 2, 128),
    ("gru", 100, 32, 64, 128),
    ("elman", 100, 32, 64, 128),
]
TARGET = (("lstm", 100, 32, 64, 128), 1.3)
VARIANTS = ("float32", "bfloat16", "bfloat16_autodiff")


def measure(cell_name: str, t: int, b: int, i: int, h: int, repeats: int) -> dict[str, Any]:
    """Median step time of each variant, their spread, the ratios and the temporary memory."""
    import jax
    import jax.numpy as jnp

    import jaxrnn
    from jaxrnn import training

    k_x, k_y = jax.random.split(jax.random.key(1))
    xs = jax.random.normal(k_x, (b, t, i), jnp.float32)
    targets = jax.random.normal(k_y, (b, t, 1), jnp.float32)
    cell = getattr(jaxrnn, cell_name)(h)
    settings = {
        "float32": (None, "fused"),
        "bfloat16": (jnp.bfloat16, "fused"),
        "bfloat16_autodiff": (jnp.bfloat16, "autodiff"),
    }
    fns, temp_bytes, params = {}, {}, None
    for name, (dtype, backward) in settings.items():
        model = training.readout(cell, 1, compute_dtype=dtype, backward=backward)
        params = model.init(jax.random.key(0), i)

        def loss(p: Any, model: training.Model = model) -> Any:
            return jnp.mean((model.apply(p, xs) - targets) ** 2)

        fns[name] = jax.jit(jax.value_and_grad(loss))
        memory = fns[name].lower(params).compile().memory_analysis()
        temp_bytes[name] = None if memory is None else int(memory.temp_size_in_bytes)
    for fn in fns.values():
        jax.block_until_ready(fn(params))
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            jax.block_until_ready(fn(params))
            times[name].append(time.perf_counter() - start)
    med = {name: 1e3 * statistics.median(v) for name, v in times.items()}
    paired = [a / f for a, f in zip(times["bfloat16_autodiff"], times["bfloat16"], strict=True)]
    q1r, _, q3r = statistics.quantiles(paired, n=4)
    spread = {}
    for name, v in times.items():
        q1, _, q3 = statistics.quantiles(v, n=4)
        spread[name] = (q3 - q1) / statistics.median(v)
    return {
        "cell": cell_name,
        "T": t,
        "B": b,
        "I": i,
        "H": h,
        "repeats": repeats,
        **{f"{name}_ms": med[name] for name in VARIANTS},
        **{f"{name}_iqr_rel": spread[name] for name in VARIANTS},
        **{f"{name}_temp_mib": _mib(temp_bytes[name]) for name in VARIANTS},
        "fused_over_autodiff_bfloat16": med["bfloat16_autodiff"] / med["bfloat16"],
        # The same ratio within each round (the two ran back to back): its quartiles.
        "fused_over_autodiff_bfloat16_rounds_q1_q3": [q1r, q3r],
        "bfloat16_over_float32": med["float32"] / med["bfloat16"],
        "times_ms": {name: [1e3 * s for s in v] for name, v in times.items()},
    }


def bf16_cpu_flags() -> list[str]:
    """The CPU's bfloat16 instruction sets named in ``/proc/cpuinfo`` (empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next(
        (line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")),
        [],
    )
    return sorted(f for f in flags if "bf16" in f)


def _mib(size: int | None) -> float | None:
    return None if size is None else size / 2**20


def _row(r: dict[str, Any]) -> str:
    cells = [r["cell"], r["T"], r["B"], r["I"], r["H"]]
    cells += [f"{r[f'{v}_ms']:.2f} ±{100 * r[f'{v}_iqr_rel']:.0f}%" for v in VARIANTS]
    q1, q3 = r["fused_over_autodiff_bfloat16_rounds_q1_q3"]
    cells += [
        f"{r['fused_over_autodiff_bfloat16']:.2f}x ({q1:.2f}–{q3:.2f})",
        f"{r['bfloat16_over_float32']:.2f}x",
    ]
    temps = [r[f"{v}_temp_mib"] for v in VARIANTS]
    cells.append(" / ".join("?" if m is None else f"{m:.1f}" for m in temps))
    return "| " + " | ".join(str(c) for c in cells) + " |"


def main(argv: list[str] | None = None) -> int:
    """Run the grid and write the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    import jax

    results = [measure(*config, repeats=args.repeats) for config in GRID]
    m, bf16 = machine_info(), bf16_cpu_flags()
    (target_config, target_ratio) = TARGET
    target = next(
        r for r in results if (r["cell"], r["T"], r["B"], r["I"], r["H"]) == target_config
    )
    reached = target["fused_over_autodiff_bfloat16"] >= target_ratio
    rows = [
        "# Mixed precision: one training step, float32 against bfloat16 compute",
        "",
        f"Machine: {m['cpu_model']} (bfloat16 instructions: {', '.join(bf16) or 'none'}), "
        f"{m['cpu_count']} CPUs, jax {m['versions']['jax']}, "
        f"device {jax.devices()[0]}. Generated by `python benchmarks/mixed_precision.py` on "
        f"{time.strftime('%Y-%m-%d')}: value_and_grad of a mean-squared-error loss through "
        "`training.readout(cell, 1)` (float32 params, random inputs [B, T, I]), medians of "
        f"{args.repeats} rounds in which the three variants alternate, after a warm-up. "
        "± is the interquartile range over the median (the noise of a machine that other "
        "processes share); the speed-up's parentheses give the quartiles of the "
        "same ratio taken within each round.",
        "",
        "| cell | T | B | I | H | float32 fused ms | bfloat16 fused ms "
        "| bfloat16 autodiff ms | bf16 fused speed-up over bf16 autodiff "
        "| bf16 fused speed-up over f32 | temp MiB (f32 / bf16 / bf16 autodiff) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows += [_row(r) for r in results]
    rows += [
        "",
        f"Target (issue 17): bfloat16 fused ≥ {target_ratio}× bfloat16 autodiff at LSTM "
        f"T=100, B=32, I=64, H=128: {target['fused_over_autodiff_bfloat16']:.2f}× — "
        f"{'reached' if reached else 'NOT reached'}.",
        "",
        "bfloat16 compute (`compute_dtype=jnp.bfloat16`) casts the params and inputs to "
        "bfloat16; the carry stays float32. The fused path multiplies bfloat16 operands with "
        "float32 accumulation, keeps the gate math, the saved residuals and the backward "
        "carry cotangent in float32, and forms every weight gradient as one bfloat16 matmul "
        "over all T·B rows accumulated in float32. `bfloat16_autodiff` differentiates the "
        "same step by JAX's autodiff: what `compute_dtype=jnp.bfloat16` ran before the fused "
        "path took bfloat16 (issue 17). Temporary memory is XLA's `temp_size_in_bytes` of the "
        "compiled step (compile-time, not measured at run time). The residuals are float32: "
        "saved in bfloat16 they made the bfloat16 step 1.1–2.4× slower on this CPU and the "
        "gradients less accurate, for 13% less temporary memory (LSTM; 0% for the GRU); "
        "measured once with a patched `jaxrnn/_fused.py`, see its docstring. The I = 2 rows "
        "are the sizes of the adding task the earlier version of this benchmark ran.",
    ]
    RESULTS.mkdir(exist_ok=True)
    payload = {
        "machine": {**m, "bf16_cpu_flags": bf16},
        "git": git_state(),
        "device": str(jax.devices()[0]),
        "target": {"config": list(target_config), "ratio": target_ratio, "reached": reached},
        "results": results,
    }
    (RESULTS / "mixed_precision.json").write_text(json.dumps(payload, indent=1) + "\n")
    (RESULTS / "mixed_precision.md").write_text("\n".join(rows) + "\n")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Reproduce the long-dependency results of the literature at CPU scale with ``jaxrnn train``.

Each experiment is one ``jaxrnn train`` command, run as its own process; its
``summary.json`` (or, for a run that diverges, the last line of its
``metrics.jsonl``) is checked against the criterion the literature states:

* LSTM (forget bias 1) on the adding problem (Arjovsky et al. 2016) at T=100
  reaches MSE < 0.0167, a tenth of the 1/6 baseline;
* a tanh RNN at T=150 stays above MSE 0.1;
* norm clipping rescues a tanh RNN run that diverges without it (the same
  run twice, SGD with momentum, with and without ``--clip``; Pascanu et al.
  2013);
* LSTM on the copy task at T=100 ends below the memoryless baseline
  10·ln 8/(T+20).

Usage::

    python benchmarks/literature.py            # all experiments (about 15 min on 2 cores)
    python benchmarks/literature.py --only lstm-adding-100

Writes ``benchmarks/results/literature.{json,md}``; the runs' own outputs go
to ``benchmarks/runs/`` (not committed).
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _machine import git_state, machine_info

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
RUNS = HERE / "runs"

# name -> (flags of `jaxrnn train`, criterion on the final eval loss, what it reproduces)
EXPERIMENTS: dict[str, tuple[str, str, str]] = {
    "lstm-adding-100": (
        "--task adding --cell lstm --seq-len 100 --hidden 128 --steps 3000 --batch-size 64 "
        "--lr 3e-3 --clip 1.0 --seed 0",
        "< 0.0167",
        "LSTM solves the adding problem at T=100 (Arjovsky et al. 2016, Fig. 2)",
    ),
    "elman-adding-150": (
        "--task adding --cell elman --seq-len 150 --hidden 128 --steps 3000 --batch-size 64 "
        "--lr 1e-3 --clip 1.0 --seed 0",
        "> 0.1",
        "a tanh RNN does not beat the baseline at T=150 (Arjovsky et al. 2016)",
    ),
    "elman-sgd-noclip": (
        "--task adding --cell elman --seq-len 50 --hidden 64 --steps 1000 --batch-size 32 "
        "--optimizer sgd --lr 0.1 --clip none --seed 0",
        "diverges",
        "without clipping, SGD on a tanh RNN explodes (Pascanu et al. 2013)",
    ),
    "elman-sgd-clip": (
        "--task adding --cell elman --seq-len 50 --hidden 64 --steps 1000 --batch-size 32 "
        "--optimizer sgd --lr 0.1 --clip 1.0 --clip-mode norm --seed 0",
        "< 0.1667",
        "the same run with norm clipping at 1 trains (Pascanu et al. 2013, Algorithm 1)",
    ),
    "lstm-copy-100": (
        "--task copy --cell lstm --seq-len 100 --hidden 128 --steps 4000 --batch-size 64 "
        "--lr 1e-3 --clip 1.0 --seed 0",
        "< 0.1733",
        "LSTM beats the memoryless baseline on the copy task at T=100 (Arjovsky et al. 2016)",
    ),
}


def _passes(criterion: str, loss: float | None, diverged: bool) -> bool:
    if criterion == "diverges":
        return diverged
    if loss is None or diverged:
        return False
    op, value = criterion.split()
    return loss < float(value) if op == "<" else loss > float(value)


def run(name: str) -> dict[str, Any]:
    """Run one experiment in its own process and check its criterion."""
    flags, criterion, claim = EXPERIMENTS[name]
    out = RUNS / name
    command = [sys.executable, "-m", "jaxrnn", "train", *shlex.split(flags), "--out", str(out)]
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x]
    summary = json.loads((out / "summary.json").read_text()) if proc.returncode == 0 else None
    last = lines[-1] if lines else {}
    diverged = proc.returncode != 0 and "diverged" in proc.stderr
    loss = summary["final_eval_loss"] if summary else last.get("eval_loss", last.get("loss"))
    return {
        "name": name,
        "command": "jaxrnn train " + flags,
        "claim": claim,
        "criterion": criterion,
        "returncode": proc.returncode,
        "stderr_tail": proc.stderr.strip().splitlines()[-1:] if proc.returncode else [],
        "diverged": diverged,
        "final_eval_loss": loss,
        "final_eval_metric": _metric(summary),
        "baseline": summary["baseline"] if summary else None,
        "steps": summary["steps"] if summary else last.get("step"),
        "wall_seconds": wall,
        "steps_per_second": summary["steps_per_second"] if summary else None,
        "passed": _passes(criterion, loss, diverged),
        "eval_curve": [(x["step"], x["eval_loss"]) for x in lines if "eval_loss" in x],
    }


def _metric(summary: dict[str, Any] | None) -> str | None:
    """The task metric of a summary, e.g. ``"correct 0.93"``."""
    if summary is None:
        return None
    return next(
        (
            f"{k[len('final_eval_') :]} {v:.3f}"
            for k, v in summary.items()
            if k.startswith("final_eval_") and k != "final_eval_loss"
        ),
        None,
    )


def _fmt(value: float | None) -> str:
    if value is None:
        return "—"
    return "∞" if math.isinf(value) else f"{value:.4g}"


def markdown(payload: dict[str, Any]) -> str:
    """The report: one row per experiment, with its exact command."""
    m = payload["machine"]
    rows = [
        "# Long-dependency results of the literature, reproduced at CPU scale",
        "",
        f"Machine: {m['cpu_model']}, {m['cpu_count']} CPUs, {m['mem_total_gib']} GiB, "
        f"Python {m['python']}, jax {m['versions']['jax']}; commit {payload['git']['commit']}.",
        f"Generated by `python benchmarks/literature.py` on {payload['date']}.",
        "",
        "| experiment | criterion (final eval loss) | final eval loss | baseline | task metric "
        "| steps | wall s | result |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in payload["results"]:
        note = " (diverged)" if r["diverged"] else ""
        rows.append(
            f"| {r['claim']} | {r['criterion']} | {_fmt(r['final_eval_loss'])}{note} "
            f"| {_fmt(r['baseline'])} | {r.get('final_eval_metric') or '—'} | {r['steps']} "
            f"| {r['wall_seconds']:.0f} "
            f"| {'reproduced' if r['passed'] else 'NOT reproduced'} |"
        )
    rows += [
        "",
        "Task metrics: `correct` is the fraction of held-out sequences with |error| < 0.04 "
        "(chance for the constant predictor: 0.078); `accuracy` on the copy task is over the "
        "10 recalled symbols (chance 1/8).",
        "",
        "Commands (each also takes `--out DIR`):",
        "",
    ]
    for r in payload["results"]:
        rows.append(f"- {r['name']}: `{r['command']}`")
        if r["stderr_tail"]:
            rows.append(f"  - exit {r['returncode']}: {r['stderr_tail'][0]}")
    rows += ["", "Held-out loss during training (step: loss):", ""]
    for r in payload["results"]:
        curve = ", ".join(f"{s}: {_fmt(v)}" for s, v in r["eval_curve"])
        rows.append(f"- {r['name']}: {curve}")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the experiments and write the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=tuple(EXPERIMENTS), default=None)
    parser.add_argument("--render", action="store_true", help="rewrite the report from the JSON")
    args = parser.parse_args(argv)
    if args.render:
        payload = json.loads((RESULTS / "literature.json").read_text())
        (RESULTS / "literature.md").write_text(markdown(payload))
        return 0
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "literature.json"
    previous = json.loads(path.read_text())["results"] if path.exists() and args.only else []
    results = {r["name"]: r for r in previous}
    for name in args.only or EXPERIMENTS:
        print(f"running {name}: jaxrnn train {EXPERIMENTS[name][0]}", flush=True)
        results[name] = run(name)
        r = results[name]
        print(f"  final eval loss {_fmt(r['final_eval_loss'])}, passed: {r['passed']}", flush=True)
        payload = {
            "date": time.strftime("%Y-%m-%d"),
            "machine": machine_info(),
            "git": git_state(),
            "results": [results[n] for n in EXPERIMENTS if n in results],
        }
        path.write_text(json.dumps(payload, indent=1) + "\n")
        (RESULTS / "literature.md").write_text(markdown(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())

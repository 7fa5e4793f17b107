"""jaxrnn against PyTorch, Flax (linen and NNX) and Equinox: one recurrent layer, timed.

For every cell (LSTM, GRU, Elman) and size of the grid, three measurements:

* ``train``: the gradient of sum(ys) with respect to the layer's parameters,
  forward and backward through all T steps;
* ``infer``: the forward pass, every step's output;
* ``step``: one cell step at B=1 (latency, dispatch included).

Each library runs in a worker process of its own (``_libraries.py``). At each
grid point every worker builds and compiles its computation (the first call's
time is reported apart as compile time), runs once more to warm up, and then
the workers take turns, one timed call each per round, so that a change in
the machine's load hits all of them alike. The report gives medians, the
speed ratio of jaxrnn against each peer (peer time / jaxrnn time: above 1
means jaxrnn is faster), jaxrnn's achieved GFLOP/s against the float32 matmul
peak measured at the start, and checks the targets of the benchmarks issue.

Usage::

    python benchmarks/peers.py                # the full grid (about an hour on 2 cores)
    python benchmarks/peers.py --quick        # a few sizes, a few minutes
    python benchmarks/peers.py --tf32         # let both sides use TF32 on NVIDIA GPUs
    python benchmarks/peers.py --render       # rewrite the report from the JSON
    python benchmarks/peers.py --quick --points lstm:train:512:64:512:512 --out DIR
                                              # one more point (CELL:MODE:T:B:I:H), measured
                                              # first; the files in DIR (--no-plot: no png)

The same command runs on a GPU (installed by ``python3 dev.py bench --profile cuda``),
where the PyTorch peer runs cuDNN and ``jax.experimental.rnn`` (cuDNN LSTM in JAX)
joins as the peer ``jax-cudnn``, and jaxrnn's own ``kernel="cudnn"`` as
``jaxrnn-cudnn`` (both left out where JAX has no GPU). Every worker reports the
device it ran on and the float32 matmul precision it pinned (``highest``, TF32
off, unless ``--tf32``); the report refuses the targets' verdicts when the
libraries ran on different kinds of device. JAX workers allocate GPU memory as they need it
(``XLA_PYTHON_CLIENT_PREALLOCATE=false``) instead of 75% of it each.
Results: ``benchmarks/results/peers[_quick].{json,md,png}``.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

from _machine import git_state, machine_info

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
LIBRARIES = ("jaxrnn", "jaxrnn-cudnn", "torch", "flax", "nnx", "equinox", "jax-cudnn")
# The other libraries; jaxrnn-cudnn is jaxrnn itself (kernel="cudnn"), shown, not a target's peer.
PEERS = tuple(name for name in LIBRARIES if not name.startswith("jaxrnn"))
GPU_ONLY = ("jaxrnn-cudnn", "jax-cudnn")  # left out of a run whose JAX has no GPU
MODES = ("train", "infer", "step")
CELLS = ("lstm", "gru", "elman")
GATES = {"lstm": 4, "gru": 3, "elman": 1}
# Set in every JAX worker's environment: without it each of up to five JAX processes
# would take 75% of the GPU's memory when it starts.
JAX_WORKER_ENV = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
NOT_RECORDED = "not recorded"


def input_size(hidden: int) -> int:
    """The grid's input size: 64 for the small layers, I = H from H = 256 on."""
    return 64 if hidden <= 128 else hidden


def grid(quick: bool) -> list[dict[str, Any]]:
    """The measurements, in the order they run."""
    if quick:
        sizes = [(100, 1, 64), (100, 32, 128), (100, 64, 512)]
        step_hidden = [128]
    else:
        sizes = [(t, b, h) for t in (100, 1000) for b in (1, 32, 64) for h in (64, 128, 256, 512)]
        step_hidden = [64, 128, 256, 512]
    points = []
    for cell in CELLS:
        for mode in ("train", "infer"):
            for t, b, h in sizes:
                points.append(
                    {"cell": cell, "mode": mode, "T": t, "B": b, "I": input_size(h), "H": h}
                )
        for h in step_hidden:
            points.append(
                {"cell": cell, "mode": "step", "T": 1, "B": 1, "I": input_size(h), "H": h}
            )
    return points


def parse_points(text: str) -> list[dict[str, Any]]:
    """The points of ``--points``: ``CELL:MODE:T:B:I:H``, comma-separated.

    Raises:
      ValueError: naming the point that is malformed and what was expected.
    """
    points = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        fields = item.split(":")
        try:
            cell, mode, *sizes = fields
            t, b, i, h = (int(v) for v in sizes)
        except ValueError:
            raise ValueError(
                f"--points: {item!r}: expected CELL:MODE:T:B:I:H, e.g. lstm:train:512:64:512:512"
            ) from None
        if cell not in CELLS or mode not in MODES or min(t, b, i, h) < 1:
            raise ValueError(
                f"--points: {item!r}: expected a cell of {CELLS}, a mode of {MODES} and "
                "sizes T, B, I, H ≥ 1"
            )
        points.append({"cell": cell, "mode": mode, "T": t, "B": b, "I": i, "H": h})
    return points


def flops(p: dict[str, Any]) -> float:
    """Matmul FLOPs of a measurement: 2·B·(I+H)·G·H per step forward, three times that to train."""
    forward = 2 * p["T"] * p["B"] * (p["I"] + p["H"]) * GATES[p["cell"]] * p["H"]
    return 3 * forward if p["mode"] == "train" else forward


def worker_env(library: str, source: Path | None = None) -> dict[str, str]:
    """The environment of a library's worker process.

    Args:
      library: a library name (``jaxrnn@REV`` for a baseline).
      source: a directory put first on ``PYTHONPATH`` (another revision's ``jaxrnn``).

    Returns:
      This process's environment, with ``JAX_WORKER_ENV`` for every library but torch.
    """
    env = dict(os.environ)
    if library.split("@")[0] != "torch":
        env.update(JAX_WORKER_ENV)
    if source is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(source), env.get("PYTHONPATH", "")])
    return env


class Worker:
    """A library's worker process, spoken to in JSON lines.

    ``source``: a directory holding another revision's ``jaxrnn`` package, put
    first on the worker's path (the ``--baseline`` comparison). ``precision``:
    the float32 matmul precision the worker pins, ``highest`` or ``tf32``.
    """

    def __init__(
        self, library: str, source: Path | None = None, precision: str = "highest"
    ) -> None:
        self.library = library
        env = worker_env(library, source)
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "_libraries.py"), library.split("@")[0], precision],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )

    def ask(self, **request: Any) -> dict[str, Any]:
        """Send one request and return the answer."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            return {"error": f"the {self.library} worker exited"}
        return json.loads(line)

    def close(self) -> None:
        """Close the worker's input, wait for it to exit, close its output."""
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def measure(workers: dict[str, Worker], point: dict[str, Any], repeats: int) -> dict[str, Any]:
    """Set the point up in every worker, then time it round-robin."""
    record: dict[str, Any] = {**point, "flops": flops(point), "libraries": {}}
    active = {}
    for name, worker in workers.items():
        answer = worker.ask(op="setup", **point)
        record["libraries"][name] = answer
        if "first_s" in answer:
            active[name] = worker
    if not active:
        return record
    slowest = max(record["libraries"][n]["second_s"] for n in active)
    # Short calls are timed several to a turn (a turn of at least ~50 ms), so that a
    # burst of load from elsewhere falls on a few calls of every library, not on all
    # calls of one.
    calls = max(1, min(200, int(0.05 / max(slowest, 1e-6))))
    rounds = repeats if slowest < 1.0 else max(3, repeats // 2)
    times: dict[str, list[float]] = {name: [] for name in active}
    for _ in range(rounds):
        for name, worker in list(active.items()):
            answer = worker.ask(op="time", n=calls)
            if "times" not in answer:  # the library failed: out of this point's turns
                record["libraries"][name] = answer
                del active[name], times[name]
                continue
            times[name].extend(answer["times"])
    for name, values in times.items():
        if values:
            record["libraries"][name]["median_s"] = statistics.median(values)
            record["libraries"][name]["calls"] = len(values)
    return record


def median_of(record: dict[str, Any], library: str) -> float | None:
    """A library's median seconds at one point, or None where it was not measured."""
    return record["libraries"].get(library, {}).get("median_s")


def ratio(record: dict[str, Any], peer: str) -> float | None:
    """Peer time / jaxrnn time at one point (above 1: jaxrnn is faster)."""
    ours, theirs = median_of(record, "jaxrnn"), median_of(record, peer)
    return None if ours is None or theirs is None else theirs / ours


def geomean(values: list[float]) -> float | None:
    """The geometric mean, or None for no values."""
    return math.exp(statistics.fmean(map(math.log, values))) if values else None


def ratios(results: list[dict[str, Any]], cell: str, mode: str, peer: str) -> list[float]:
    """The ratios against ``peer`` at every point of one cell and mode where both ran."""
    rows = [r for r in results if r["cell"] == cell and r["mode"] == mode]
    return [x for r in rows if (x := ratio(r, peer)) is not None]


def device_of(info: dict[str, Any]) -> tuple[str | None, str | None]:
    """A library's (platform, device kind); what a file from before they were recorded lacks.

    Files written before the workers reported ``platform`` and ``device_kind`` hold only
    a ``device`` string (``cpu: cpu``, ``cpu: 2 threads``, ``cuda: NVIDIA ... (cuDNN)``):
    its prefix gives the platform, the kind is None.
    """
    if "platform" in info:
        return info["platform"], info.get("device_kind")
    prefix = str(info.get("device") or "").partition(":")[0].strip()
    return ({"cuda": "gpu"}.get(prefix, prefix) or None), None


def mixed_devices(payload: dict[str, Any]) -> str | None:
    """Why the libraries' times cannot be compared (they ran on different devices), or None."""
    devices = {name: device_of(info) for name, info in payload["libraries"].items()}
    platforms = {platform for platform, _ in devices.values() if platform is not None}
    kinds = {kind for _, kind in devices.values() if kind is not None}
    if len(platforms) < 2 and len(kinds) < 2:
        return None
    where = ", ".join(
        f"{name} on {kind or platform or 'an unrecorded device'}"
        for name, (platform, kind) in devices.items()
    )
    return f"the libraries ran on different devices ({where})"


def precision_of(info: dict[str, Any]) -> str:
    """A library's float32 matmul precision as the report shows it."""
    if "matmul_precision" not in info:
        return NOT_RECORDED
    switches = info.get("tf32")
    if switches is None:
        return str(info["matmul_precision"])
    on = [name for name, value in switches.items() if value]
    return f"{info['matmul_precision']}, TF32 " + (f"on ({', '.join(on)})" if on else "off")


def targets(payload: dict[str, Any]) -> list[str]:
    """The issue's targets, each with its measured value and verdict.

    No verdict is given when the libraries ran on different devices (a CPU against
    a GPU says nothing of either): one line says so instead.
    """
    if (reason := mixed_devices(payload)) is not None:
        return [
            f"- **No verdicts**: {reason}; the targets compare libraries on one device. "
            "Run every library on the same device (`python3 dev.py bench --profile ...`)."
        ]
    results, peak = payload["results"], payload["peak"]["gflops"]
    lines = []

    def verdict(ok: bool) -> str:
        return "**met**" if ok else "**NOT met**"

    torch_lstm = ratios(results, "lstm", "train", "torch")
    if torch_lstm:
        worst, mean = min(torch_lstm), geomean(torch_lstm)
        assert mean is not None
        lines.append(
            f"- LSTM train vs PyTorch at every point ≥ 1.0×: worst {worst:.2f}× "
            f"({sum(x >= 1 for x in torch_lstm)}/{len(torch_lstm)} points) — {verdict(worst >= 1)}"
        )
        lines.append(
            f"- LSTM train vs PyTorch geometric mean ≥ 1.3×: {mean:.2f}× — {verdict(mean >= 1.3)}"
        )
    flax_lstm = geomean(ratios(results, "lstm", "train", "flax"))
    if flax_lstm is not None:
        lines.append(
            f"- LSTM train vs Flax OptimizedLSTMCell geometric mean ≥ 2×: {flax_lstm:.2f}× "
            f"— {verdict(flax_lstm >= 2)}"
        )
    train_lstm = [r for r in results if r["cell"] == "lstm" and r["mode"] == "train"]
    timed = [r for r in train_lstm if median_of(r, "jaxrnn") is not None]
    if timed:
        largest = max(timed, key=lambda r: r["flops"])
        rate = largest["flops"] / median_of(largest, "jaxrnn") / 1e9
        peak = largest.get("peak_gflops", peak)
        lines.append(
            f"- LSTM train at the largest size (T={largest['T']}, B={largest['B']}, "
            f"H={largest['H']}) ≥ 60% of the matmul peak: {rate:.0f} GFLOP/s = "
            f"{100 * rate / peak:.0f}% of {peak:.0f} — {verdict(rate >= 0.6 * peak)}"
        )
    for cell in ("gru", "elman"):
        for peer in PEERS:
            mean = geomean(ratios(results, cell, "train", peer))
            if mean is not None:
                lines.append(
                    f"- {cell.upper() if cell == 'gru' else 'Elman'} train ahead of {peer} "
                    f"(geometric mean > 1): {mean:.2f}× — {verdict(mean > 1)}"
                )
    return lines


def markdown(payload: dict[str, Any]) -> str:
    """The report: machine, targets, geometric means, every measurement."""
    m, results = payload["machine"], payload["results"]
    peers = [p for p in payload["libraries"] if p != "jaxrnn"]
    peak = payload["peak"]["gflops"]
    out = [
        "# jaxrnn against its peers: one recurrent layer",
        "",
        f"Generated by `python benchmarks/peers.py{' --quick' if payload['quick'] else ''}` "
        f"on {payload['date']}, commit `{(payload['git']['commit'] or 'unknown')[:12]}`"
        + commits_note(results)
        + ".",
        "",
        f"Machine: {m['cpu_model']}, {m['cpu_count']} CPUs, {m['mem_total_gib']} GiB, "
        f"Python {m['python']}, {m['platform']}.",
        "Float32 matmul peak measured with JAX at the start of each run: "
        + ", ".join(sorted({f"**{r.get('peak_gflops', peak):.0f} GFLOP/s**" for r in results}))
        + " (each point's share of the peak uses its own run's).",
        "",
        "Float32 matmul precision requested: "
        + {"highest": "`highest` (TF32 off)", "tf32": "`tf32` (TF32 on, `--tf32`)"}.get(
            payload.get("matmul_precision") or "", NOT_RECORDED
        )
        + "; each library's, as it read it back, below.",
        "",
        "| library | version | device | device kind | matmul precision |",
        "|---|---|---|---|---|",
    ]
    for name, info in payload["libraries"].items():
        kind = device_of(info)[1] or NOT_RECORDED
        out.append(
            f"| {name} | {info.get('version')} | {info.get('device')} | {kind} "
            f"| {precision_of(info)} |"
        )
    out += [
        "",
        "Float32; each library in its own process; medians of round-robin timed calls "
        "after a compile call and a warm-up call. `train`: gradient of sum(ys) w.r.t. the "
        "parameters; `infer`: forward, all outputs; `step`: one cell step at B=1. "
        "Ratios are peer time / jaxrnn time: **above 1 means jaxrnn is faster**. "
        "I = 64 for H ≤ 128, I = H above.",
        "",
        "## Targets",
        "",
        *targets(payload),
        "",
        "## Geometric means of the ratios",
        "",
        "| cell | mode | " + " | ".join(f"vs {p}" for p in peers) + " |",
        "|---|---|" + "---|" * len(peers),
    ]
    for cell in CELLS:
        for mode in ("train", "infer", "step"):
            cells = []
            for peer in peers:
                mean = geomean(ratios(results, cell, mode, peer))
                cells.append("—" if mean is None else f"{mean:.2f}×")
            out.append(f"| {cell} | {mode} | " + " | ".join(cells) + " |")
    for mode, unit, scale in (("train", "ms", 1e3), ("infer", "ms", 1e3), ("step", "µs", 1e6)):
        out += ["", f"## {mode}", ""]
        head = "| cell | T | B | I | H | jaxrnn " + unit + " | GFLOP/s (% peak) |"
        head += "".join(f" {p} {unit} | ×{p} |" for p in peers)
        out += [head, "|" + "---|" * (7 + 2 * len(peers))]
        for r in (r for r in results if r["mode"] == mode):
            ours = median_of(r, "jaxrnn")
            row = f"| {r['cell']} | {r['T']} | {r['B']} | {r['I']} | {r['H']} | "
            if ours is None:
                row += f"{describe(r['libraries'].get('jaxrnn', {}))} | — |"
            else:
                rate = r["flops"] / ours / 1e9
                share = 100 * rate / r.get("peak_gflops", peak)
                row += f"{scale * ours:.3g} | {rate:.1f} ({share:.0f}%) |"
            for peer in peers:
                theirs, x = median_of(r, peer), ratio(r, peer)
                shown = (
                    describe(r["libraries"].get(peer, {}))
                    if theirs is None
                    else f"{scale * theirs:.3g}"
                )
                row += f" {shown} | {'—' if x is None else f'{x:.2f}'} |"
            out.append(row)
    out += ["", "## Compile time (first call, seconds): median and max over the grid", ""]
    out += ["| library | " + " | ".join(("train", "infer", "step")) + " |", "|---|---|---|---|"]
    for name in payload["libraries"]:
        cells = []
        for mode in ("train", "infer", "step"):
            firsts = [
                r["libraries"][name]["first_s"]
                for r in results
                if r["mode"] == mode and "first_s" in r["libraries"].get(name, {})
            ]
            cells.append(f"{statistics.median(firsts):.2f} / {max(firsts):.2f}" if firsts else "—")
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    missing = sorted(
        {
            f"{name}: {info.get('missing') or info.get('error')}"
            for r in results
            for name, info in r["libraries"].items()
            if "median_s" not in info
        }
    )
    if missing:
        out += ["", "Not measured:", "", *(f"- {line}" for line in missing)]
    return "\n".join(out) + "\n"


def commits_note(results: list[dict[str, Any]]) -> str:
    """Which points an earlier run (``--update``) measured, if any."""
    by_commit: dict[str, set[str]] = {}
    for r in results:
        by_commit.setdefault((r.get("commit") or "unknown")[:12], set()).add(
            f"{r['cell']} {r['mode']}"
        )
    if len(by_commit) < 2:
        return ""
    parts = [f"`{c}`: {', '.join(sorted(v))}" for c, v in by_commit.items()]
    return " (measured in separate runs, jaxrnn at " + "; ".join(parts) + ")"


def describe(info: dict[str, Any]) -> str:
    """What stands in a table cell for a library that was not timed."""
    return "n/a" if "missing" in info else "error" if "error" in info else "—"


def plot(payload: dict[str, Any], path: Path) -> None:
    """Ratios against every peer, one panel per cell and mode, log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = payload["results"]
    peers = [p for p in payload["libraries"] if p != "jaxrnn"]
    modes = ("train", "infer")
    fig, axes = plt.subplots(len(CELLS), len(modes), figsize=(12, 9), squeeze=False)
    for row, cell in enumerate(CELLS):
        for col, mode in enumerate(modes):
            ax = axes[row][col]
            rows = [r for r in results if r["cell"] == cell and r["mode"] == mode]
            labels = [f"{r['T']}/{r['B']}/{r['H']}" for r in rows]
            for peer in peers:
                ys = [ratio(r, peer) for r in rows]
                if any(y is not None for y in ys):
                    ax.plot(
                        range(len(rows)),
                        [math.nan if y is None else y for y in ys],
                        "o-",
                        label=peer,
                        ms=3,
                    )
            ax.axhline(1.0, color="black", lw=0.8)
            ax.set_yscale("log")
            ax.set_title(f"{cell} {mode}: peer time / jaxrnn time")
            ax.set_xticks(range(len(rows)), labels, rotation=90, fontsize=6)
            if row == len(CELLS) - 1:
                ax.set_xlabel("T / B / H")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"jaxrnn vs peers ({payload['machine']['cpu_model']}); above 1: jaxrnn faster")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write(payload: dict[str, Any], stem: str, out: Path = RESULTS) -> None:
    """Write the JSON and the markdown report into the folder ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(payload, indent=1) + "\n")
    (out / f"{stem}.md").write_text(markdown(payload))


def baseline_source(revision: str) -> tuple[str, Path]:
    """Export ``jaxrnn/`` of a git revision to a temporary directory; its name and the path."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", revision],
        cwd=HERE,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    target = Path(tempfile.mkdtemp(prefix=f"jaxrnn-{commit}-"))
    archive = subprocess.run(
        ["git", "archive", commit, "jaxrnn"], cwd=HERE.parent, capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")
    return f"jaxrnn@{commit}", target


def main(argv: list[str] | None = None) -> int:
    """Run the grid, or rerender the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few sizes, a few minutes")
    parser.add_argument("--repeats", type=int, default=7, help="timed calls per library and size")
    parser.add_argument("--libraries", default=",".join(LIBRARIES), help="comma-separated subset")
    parser.add_argument("--cells", default=",".join(CELLS), help="comma-separated subset")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated subset")
    parser.add_argument(
        "--points",
        default="",
        metavar="CELL:MODE:T:B:I:H,...",
        help="more points, measured first (e.g. lstm:train:512:64:512:512)",
    )
    parser.add_argument("--render", action="store_true", help="rewrite md and png from the JSON")
    parser.add_argument(
        "--update",
        action="store_true",
        help="measure only the selected cells/modes again, keeping the JSON's other points",
    )
    parser.add_argument(
        "--baseline",
        metavar="REV",
        help="also time jaxrnn as of this git revision (what a change bought), as a peer",
    )
    parser.add_argument(
        "--tf32",
        action="store_true",
        help="let float32 matmuls use TF32 on NVIDIA GPUs, in every library (default: off, "
        "full float32 everywhere)",
    )
    parser.add_argument(
        "--stem",
        help="name of the result files under benchmarks/results (default: peers, peers_quick)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the results")
    parser.add_argument("--no-plot", action="store_true", help="write no png")
    parser.add_argument(
        "--peak-max",
        type=int,
        default=4096,
        metavar="N",
        help="the largest n×n matmul of the float32 peak (default 4096)",
    )
    args = parser.parse_args(argv)
    try:
        extra = parse_points(args.points)
    except ValueError as error:
        parser.error(str(error))
    stem, out = args.stem or ("peers_quick" if args.quick else "peers"), args.out
    if args.render:
        saved = json.loads((out / f"{stem}.json").read_text())
        write(saved, stem, out)
        if not args.no_plot:
            plot(saved, out / f"{stem}.png")
        return 0
    started = time.perf_counter()
    precision = "tf32" if args.tf32 else "highest"
    workers, libraries = {}, {}
    names: list[tuple[str, Path | None]] = [(n, None) for n in args.libraries.split(",")]
    if args.baseline:
        names.insert(1, baseline_source(args.baseline))
    # Started together, so that their imports (and GPU start-ups) overlap.
    started_workers = [(name, Worker(name, source, precision)) for name, source in names]
    for name, worker in started_workers:
        info = worker.ask(op="info")
        if "error" in info:  # not installed here: left out of the run
            print(f"{name}: left out ({info['error']})", flush=True)
            worker.close()
            continue
        if name in GPU_ONLY and info["platform"] != "gpu":
            print(f"{name}: left out (needs a GPU; device {info['device']})", flush=True)
            worker.close()
            continue
        workers[name], libraries[name] = worker, info
        print(
            f"{name} {info['version']} on {info['device']}, matmul precision {precision_of(info)}",
            flush=True,
        )
    if "jaxrnn" not in workers:
        for worker in workers.values():
            worker.close()
        print("peers.py: the jaxrnn worker did not start (see above); nothing to compare")
        return 1
    payload: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "quick": args.quick,
        "matmul_precision": precision,
        "machine": machine_info(),
        "git": git_state(),
        "libraries": libraries,
        "peak": workers["jaxrnn"].ask(op="peak", max_n=args.peak_max),
        "results": [],
    }
    print(f"matmul peak: {payload['peak']['gflops']:.0f} GFLOP/s", flush=True)
    if (reason := mixed_devices(payload)) is not None:
        print(f"warning: {reason}: the report will give no verdicts", flush=True)
    cells, modes = args.cells.split(","), args.modes.split(",")
    kept: list[dict[str, Any]] = []
    if args.update:  # the other points stay as they were measured, with their commit
        old = json.loads((out / f"{stem}.json").read_text())
        if (clash := update_clash(old, payload)) is not None:
            for worker in workers.values():
                worker.close()
            print(f"peers.py --update: {clash}; rerun the whole grid instead")
            return 1
        kept = [
            r
            for r in old["results"]
            if (r["cell"] not in cells or r["mode"] not in modes)
            and {k: r[k] for k in ("cell", "mode", "T", "B", "I", "H")} not in extra
        ]
        for r in kept:
            r.setdefault("commit", old["git"]["commit"])
            r.setdefault("peak_gflops", old["peak"]["gflops"])
    selected = [p for p in grid(args.quick) if p["cell"] in cells and p["mode"] in modes]
    # Every cell's train points first (what the targets read), then infer, then step: a run
    # cut short keeps them. The report orders the results by cell.
    selected.sort(key=lambda p: MODES.index(p["mode"]))
    try:
        for point in extra + [p for p in selected if p not in extra]:
            record = measure(workers, point, args.repeats)
            record["commit"] = payload["git"]["commit"]
            record["peak_gflops"] = payload["peak"]["gflops"]
            payload["results"].append(record)
            payload["elapsed_min"] = (time.perf_counter() - started) / 60
            write(
                {**payload, "results": order(kept + payload["results"])}, stem, out
            )  # after every point: an interrupted run keeps its results
            shown = ", ".join(
                f"{name} {1e3 * info['median_s']:.3g} ms"
                for name, info in record["libraries"].items()
                if "median_s" in info
            )
            where = f"T={point['T']} B={point['B']} H={point['H']}"
            print(f"{point['cell']} {point['mode']} {where}: {shown}", flush=True)
    finally:
        for worker in workers.values():
            worker.close()
    payload["results"] = order(kept + payload["results"])
    write(payload, stem, out)
    if not args.no_plot:
        plot(payload, out / f"{stem}.png")
    print(markdown(payload))
    return 0


def update_clash(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    """Why ``--update`` must not mix the old file's points with this run's, or None.

    It must not where both record a library's device kind or the matmul precision
    and they differ (a file from before they were recorded is taken as it is).
    """
    old_precision = old.get("matmul_precision")
    if old_precision is not None and old_precision != new["matmul_precision"]:
        now = new["matmul_precision"]
        return f"the file's matmul precision is {old_precision}, this run's {now}"
    for name, info in new["libraries"].items():
        before = device_of(old["libraries"].get(name, {}))[1]
        now = device_of(info)[1]
        if before is not None and now is not None and before != now:
            return f"{name} ran on {before} in the file, on {now} now"
    return None


def order(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Results in the grid's order (cell, mode, then size)."""
    rank = {c: i for i, c in enumerate(CELLS)}
    modes = {"train": 0, "infer": 1, "step": 2}
    return sorted(
        results, key=lambda r: (rank[r["cell"]], modes[r["mode"]], r["T"], r["B"], r["H"])
    )


if __name__ == "__main__":
    sys.exit(main())

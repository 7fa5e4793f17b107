"""One prepared check of jaxrnn on a GPU: tests, peers and DEER, in under 8 minutes.

``python3 dev.py device-check`` runs this file with the interpreter that runs
``dev.py`` (no venv, nothing installed: a device machine may have no network)
and jaxrnn from this source tree (``PYTHONPATH``). Three steps, each a
subprocess with a time budget and a hard timeout (SIGINT, then SIGKILL after
``GRACE_S``), so that a step that hangs or fails is recorded and the others
still run:

1. ``tests``: pytest on ``TEST_FILES`` (cells, the fused path, the cuDNN
   dispatch, bfloat16 through the fused path, the parallel-in-time methods),
   ``-n`` sized to the machine, counts from pytest's JUnit XML. A file that
   does not exist (yet) is left out and named. Float32 products are pinned to
   full precision (``JAX_DEFAULT_MATMUL_PRECISION=highest``): the tests'
   float32 tolerances are written for IEEE products, and JAX's default
   precision lets NVIDIA GPUs from Ampere on use TF32 (a 10-bit mantissa).
2. ``peers``: ``peers.py --quick`` with every library (PyTorch on cuDNN,
   ``jax.experimental.rnn`` as ``jax-cudnn``, jaxrnn's ``kernel="cudnn"`` as
   ``jaxrnn-cudnn``), the target point ``TARGET_POINT`` measured first.
3. ``deer``: ``parallel_time.py --cells gru --methods sequential,deer``: DEER
   against the sequential GRU at T = 10³, 10⁴, 10⁵ and H ∈ {1, 8} (DEER's
   setting), forward and forward+backward.

Then ``device_check.json`` and ``device_check.md``: the machine, the versions
and devices used, each step's status and seconds, the test counts, and the two
GPU targets with their numbers and verdicts:

- LSTM training ≥ 1.0× PyTorch's cuDNN LSTM at T=512, B=64, I=512, H=512;
- DEER's forward pass ≥ 10× the sequential GRU at T=10⁴, at every H ≤ 8 of the grid
  (1 and 8; one that was not measured leaves no verdict unless another misses).

No verdict is given on a dry run, where a library ran off the GPU, or where the
libraries ran on different kinds of device (as ``peers.py``). Everything the
steps print goes to the console (with a ``step|`` prefix) and to
``device_check.log``; the summary is rewritten after every step. Seven files in
all under ``--out``; nothing else there is touched, and files an earlier run left
there are not read.

Usage::

    PYTHONUNBUFFERED=1 python3 dev.py device-check --out DIR   # on a GPU machine (~7 min)
    python3 dev.py device-check --dry-run     # every step on the CPU, tiny sizes (~1 min)
    python3 dev.py device-check --steps peers,deer --budget peers=240   # some steps again

Without a GPU (JAX sees none) a run that is not ``--dry-run`` stops at once
(exit 2). Exit 1 when a step failed or timed out, else 0 (a target that is not
met is a measurement, not a failure). POSIX only (process groups).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import peers
from _machine import git_state, machine_info

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "gpu"
TEST_FILES = (
    "tests/test_cells.py",
    "tests/test_fused.py",
    "tests/test_cudnn.py",
    "tests/test_bf16_fused.py",
    "tests/test_parallel.py",
)
STEPS = ("tests", "peers", "deer")
# Seconds. The whole run stays under 8 minutes: the budgets, the probe and the grace
# periods add up to TOTAL_S at most (a step gets what is left when that is less).
BUDGETS: dict[str, float] = {"tests": 150, "peers": 170, "deer": 100}
DRY_BUDGETS: dict[str, float] = {
    "tests": 150,
    "peers": 150,
    "deer": 150,
}  # hard limits only: a shared CPU
TOTAL_S = 465
PROBE_S = 90
GRACE_S = 10  # after SIGINT (pytest and peers.py write what they have), before SIGKILL
MIN_STEP_S = 10  # a step that would get less is skipped
TARGET_POINT = {"cell": "lstm", "mode": "train", "T": 512, "B": 64, "I": 512, "H": 512}
DEER_T = 10_000
LSTM_TARGET, DEER_TARGET = 1.0, 10.0
DRY_POINT = {"cell": "lstm", "mode": "train", "T": 6, "B": 2, "I": 4, "H": 8}
DRY_DEER_T = 32
DRY_TESTS_PER_FILE = 1
TESTS_PER_FILE_VARIABLE = "JAXRNN_DEVICE_CHECK_TESTS_PER_FILE"
LOG = "device_check.log"


# --- pytest plugin (``-p device_check``): a dry run's tiny test subset ---------------


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    """Keep the first ``JAXRNN_DEVICE_CHECK_TESTS_PER_FILE`` tests of each file."""
    per_file = int(os.environ.get(TESTS_PER_FILE_VARIABLE) or 0)
    if per_file < 1:
        return
    kept: list[Any] = []
    dropped: list[Any] = []
    seen: dict[Any, int] = {}
    for item in items:
        count = seen[item.path] = seen.get(item.path, 0) + 1
        (kept if count <= per_file else dropped).append(item)
    items[:] = kept
    config.hook.pytest_deselected(items=dropped)


# --- the steps -------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One step of the check: a command with a time budget, and the files it writes.

    Attributes:
      name: one of ``STEPS`` (or a test's own).
      title: what it does, for the report.
      cmd: the command, run from the repository root.
      budget_s: its time budget: the hard timeout.
      env: added to the environment of every step.
      outputs: the files it writes under the output folder.
      notes: what the report says of it (left-out files, options chosen).
    """

    name: str
    title: str
    cmd: list[str]
    budget_s: float
    env: dict[str, str]
    outputs: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Plan:
    """What a run measures: its steps and where the targets are read."""

    steps: list[Step]
    point: dict[str, Any]
    deer_t: int
    peers_file: str
    deer_file: str
    junit: Path


def step_env(dry_run: bool) -> dict[str, str]:
    """What every step (and the probe) gets in its environment, on top of this process's.

    jaxrnn is imported from this tree; JAX allocates GPU memory as it needs it (several
    JAX processes share the GPU); float32 matmuls at full precision (see the module
    docstring). A dry run hides every GPU (``JAX_PLATFORMS=cpu``, ``CUDA_VISIBLE_DEVICES=``)
    and turns XLA's optimisations off, which compiles about 3× faster: it checks that every
    step runs and writes its files, not how fast (as the tests' conftest.py does).
    """
    env = {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "PYTHONUNBUFFERED": "1",
        "XLA_PYTHON_CLIENT_PREALLOCATE": "false",
        "JAX_DEFAULT_MATMUL_PRECISION": "highest",
    }
    if dry_run:
        env.update(
            JAX_PLATFORMS="cpu", CUDA_VISIBLE_DEVICES="", JAX_DISABLE_MOST_OPTIMIZATIONS="true"
        )
    return env


def xdist_workers(probe: dict[str, Any], dry_run: bool) -> int:
    """pytest-xdist workers: none on a dry run or without xdist, else half the CPUs, ≤ 8."""
    if dry_run or not probe["versions"].get("pytest-xdist"):
        return 0
    return max(1, min(8, (os.cpu_count() or 2) // 2))


def plan(
    out: Path, probe: dict[str, Any], dry_run: bool, budgets: dict[str, float], scratch: Path
) -> Plan:
    """The steps of a run, with their commands, budgets and output files.

    Args:
      out: the folder the results go to.
      probe: what ``probe`` found (versions: pytest-xdist, beartype).
      dry_run: every step on the CPU with tiny sizes.
      budgets: seconds per step, by name.
      scratch: a temporary folder (the tests' JUnit XML).
    """
    py, env = sys.executable, step_env(dry_run)
    files = [f for f in TEST_FILES if (ROOT / f).is_file()]
    notes = [f"not found, left out: {f}" for f in TEST_FILES if f not in files]
    junit = scratch / "tests.xml"
    tests_cmd = [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}"]
    tests_env = dict(env)
    if workers := xdist_workers(probe, dry_run):
        tests_cmd += ["-n", str(workers), "--durations=10"]
        notes.append(f"{workers} pytest-xdist workers")
    if dry_run:
        tests_cmd += ["-p", "device_check"]  # this file, as a plugin: the first tests only
        tests_env[TESTS_PER_FILE_VARIABLE] = str(DRY_TESTS_PER_FILE)
        tests_env["PYTHONPATH"] = os.pathsep.join([str(HERE), env["PYTHONPATH"]])
        notes.append(f"dry run: the first {DRY_TESTS_PER_FILE} test(s) of each file")
    if not probe["versions"].get("beartype"):  # conftest.py's shape checks need it
        tests_cmd.append("--no-shape-checks")
        notes.append("beartype is not installed: run with --no-shape-checks")
    point = DRY_POINT if dry_run else TARGET_POINT
    point_arg = ":".join(str(point[k]) for k in ("cell", "mode", "T", "B", "I", "H"))
    peers_cmd = [py, str(HERE / "peers.py"), "--quick", "--points", point_arg]
    peers_cmd += ["--out", str(out), "--no-plot", "--repeats", "2" if dry_run else "3"]
    if dry_run:  # one grid point (a step) besides the extra point; the libraries that run
        peers_cmd += ["--cells", "elman", "--modes", "step", "--peak-max", "256"]
        peers_cmd += ["--libraries", "jaxrnn,jaxrnn-cudnn,torch,jax-cudnn"]
    deer_t = DRY_DEER_T if dry_run else DEER_T
    deer_cmd = [py, str(HERE / "parallel_time.py"), "--cells", "gru"]
    deer_cmd += ["--methods", "sequential,deer", "--out", str(out), "--no-plot"]
    if dry_run:
        deer_cmd += ["--quick", "--seq-lens", str(deer_t), "--repeats", "2", "--budget-s", "0"]
    else:
        deer_cmd += ["--repeats", "5", "--budget-s", "0.5", "--max-run-s", "3"]
    peers_stem = "peers_quick"
    deer_stem = "parallel_time_quick" if dry_run else "parallel_time"
    size = ", ".join(f"{k}={point[k]}" for k in ("T", "B", "I", "H"))
    steps = [
        Step(
            "tests",
            "pytest: cells, fused, cuDNN dispatch, bfloat16 fused, parallel-in-time",
            tests_cmd + files,
            budgets["tests"],
            tests_env,
            (),
            tuple(notes),
        ),
        Step(
            "peers",
            f"peers.py --quick, every library; LSTM train at {size} first",
            peers_cmd,
            budgets["peers"],
            env,
            (f"{peers_stem}.json", f"{peers_stem}.md"),
        ),
        Step(
            "deer",
            "parallel_time.py: DEER against the sequential GRU",
            deer_cmd,
            budgets["deer"],
            env,
            (f"{deer_stem}.json", f"{deer_stem}.md"),
        ),
    ]
    return Plan(steps, point, deer_t, f"{peers_stem}.json", f"{deer_stem}.json", junit)


def _pump(stream: IO[str], name: str, log: IO[str], tail: deque[str]) -> None:
    for line in stream:
        text = f"{name}| {line.rstrip()}"
        print(text, flush=True)
        log.write(text + "\n")
        log.flush()
        tail.append(line.rstrip())


def run_step(step: Step, log: IO[str], budget_s: float) -> dict[str, Any]:
    """Run one step with a hard timeout; its record, whatever happened.

    The step runs in a process group of its own. At its budget it gets SIGINT (pytest
    and peers.py then write what they have), and SIGKILL ``GRACE_S`` seconds later;
    whatever is left of the group is killed when it ends.

    Returns:
      ``status`` (``ok``, ``failed``, ``timeout``, ``error``), ``returncode``,
      ``seconds``, ``budget_s``, ``command`` and, unless ok, the output's last lines.
    """
    record: dict[str, Any] = {
        "name": step.name,
        "title": step.title,
        "command": shlex.join(step.cmd),
        "budget_s": round(budget_s, 1),
        "notes": list(step.notes),
    }
    banner = f"== {step.name}: {step.title} (budget {budget_s:.0f} s)\n+ {record['command']}"
    print(banner, flush=True)
    log.write(banner + "\n")
    tail: deque[str] = deque(maxlen=30)
    start = time.monotonic()
    try:
        proc = subprocess.Popen(
            step.cmd,
            cwd=ROOT,
            env={**os.environ, **step.env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            start_new_session=True,
        )
    except OSError as error:
        return {**record, "status": "error", "error": str(error), "seconds": 0.0}
    assert proc.stdout is not None
    reader = threading.Thread(target=_pump, args=(proc.stdout, step.name, log, tail), daemon=True)
    reader.start()
    status = "ok"
    try:
        proc.wait(timeout=budget_s)
    except subprocess.TimeoutExpired:
        status = "timeout"
        _signal_group(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=GRACE_S)
        except subprocess.TimeoutExpired:
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait()
    _signal_group(proc.pid, signal.SIGKILL)  # what the step left running
    reader.join(timeout=GRACE_S)  # a process out of the group may hold the pipe open
    if not reader.is_alive():
        proc.stdout.close()
    record["seconds"] = round(time.monotonic() - start, 1)
    record["returncode"] = proc.returncode
    if status == "ok" and proc.returncode != 0:
        status = "failed"
    record["status"] = status
    if status != "ok":
        record["tail"] = list(tail)
    end = f"== {step.name}: {status} in {record['seconds']:.0f} s (exit {proc.returncode})"
    print(end, flush=True)
    log.write(end + "\n")
    return record


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is gone
        os.killpg(pid, sig)


# --- what the steps found ----------------------------------------------------------------

PROBE = r"""
import importlib.metadata as m, json, sys
def version(name):
    try:
        return m.version(name)
    except m.PackageNotFoundError:
        return None
names = ("jax", "jaxlib", "jax-cuda13-plugin", "jax-cuda12-plugin", "torch", "flax",
         "equinox", "optax", "jaxtyping", "numpy", "pytest", "pytest-xdist", "beartype")
out = {"python": sys.version.split()[0], "executable": sys.executable,
       "versions": {n: version(n) for n in names}}
try:
    import jax
    devices = jax.devices()
    out["jax"] = {"backend": jax.default_backend(),
                  "platforms": sorted({d.platform for d in devices}),
                  "devices": [str(d) for d in devices],
                  "device_kind": str(getattr(devices[0], "device_kind", devices[0]))}
except Exception as e:
    out["jax"] = {"error": f"{type(e).__name__}: {e}"[:500], "platforms": []}
try:
    import torch
    cuda = torch.cuda.is_available()
    out["torch"] = {"cuda": cuda, "cuda_version": torch.version.cuda,
                    "device_kind": torch.cuda.get_device_name(0) if cuda else "cpu",
                    "cudnn": torch.backends.cudnn.version() if cuda else None}
except Exception as e:
    out["torch"] = {"error": f"{type(e).__name__}: {e}"[:500]}
try:
    import jaxrnn
    out["jaxrnn"] = {"version": jaxrnn.__version__, "file": jaxrnn.__file__,
                     "kernel_option": "kernel" in jaxrnn.ScanOptions._fields}
except Exception as e:
    out["jaxrnn"] = {"error": f"{type(e).__name__}: {e}"[:500]}
print(json.dumps(out))
"""


def probe(env: dict[str, str]) -> dict[str, Any]:
    """Versions, JAX's and PyTorch's devices, and the jaxrnn imported, from a subprocess.

    Raises:
      RuntimeError: when the probe fails or does not answer within ``PROBE_S``.
    """
    try:
        proc = subprocess.run(
            [sys.executable, "-c", PROBE],
            cwd=ROOT,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=PROBE_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"importing jax and torch took over {PROBE_S} s") from None
    if proc.returncode != 0:
        raise RuntimeError(f"the probe failed: {proc.stderr.strip()[-2000:]}")
    found: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return found


def read_json(path: Path) -> dict[str, Any] | None:
    """A step's JSON file, or None where it is missing or unreadable."""
    try:
        loaded: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return loaded


def count_tests(junit: Path, tail: Sequence[str]) -> dict[str, Any]:
    """Passed, failed, errors and skipped from pytest's JUnit XML, and the failed tests' ids.

    Without the XML (the run was killed), the counts are read from pytest's last
    summary line in ``tail``, where there is one.
    """
    try:
        root = ET.parse(junit).getroot()
    except (OSError, ET.ParseError):
        line = next(
            (s for s in reversed(tail) if " in " in s and ("passed" in s or "failed" in s)), ""
        )
        return {"summary": line.strip("= ") or "no summary: pytest wrote no report"}
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {
        k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")
    }
    failed = [
        f"{case.get('classname')}::{case.get('name')}"
        for case in root.iter("testcase")
        if case.find("failure") is not None or case.find("error") is not None
    ]
    return {
        "passed": counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"],
        "failed": counts["failures"],
        "errors": counts["errors"],
        "skipped": counts["skipped"],
        "failed_ids": failed[:50],
    }


def _size(point: dict[str, Any]) -> str:
    return ", ".join(f"{k}={point[k]}" for k in ("T", "B", "I", "H"))


def _not_timed(info: dict[str, Any]) -> str:
    return str(info.get("missing") or info.get("error") or "not timed")


def lstm_target(
    payload: dict[str, Any] | None,
    point: dict[str, Any],
    dry_run: bool,
    absent: str = "the peers step wrote no results",
) -> dict[str, Any]:
    """The jaxrnn LSTM's training against PyTorch's cuDNN LSTM at ``point``: value, verdict.

    The value is PyTorch's median time / jaxrnn's (above 1: jaxrnn is faster); the
    ``kernel="cudnn"`` column and ``jax.experimental.rnn`` are given beside it.
    ``absent`` says why there is no ``payload``.
    """
    target: dict[str, Any] = {
        "name": "lstm_train_vs_torch",
        "target": f"LSTM train ≥ {LSTM_TARGET:.1f}× PyTorch (cuDNN) at {_size(point)}",
        "threshold": LSTM_TARGET,
        "value": None,
        "verdict": None,
    }
    if payload is None:
        return {**target, "why": f"not measured: {absent}"}
    record = next(
        (r for r in payload["results"] if all(r.get(k) == v for k, v in point.items())), None
    )
    if record is None:
        return {**target, "why": "not measured: the point is not in the peers results"}
    libraries = record["libraries"]
    target["ms"] = {
        name: round(1e3 * info["median_s"], 4) if "median_s" in info else _not_timed(info)
        for name, info in libraries.items()
    }
    value = peers.ratio(record, "torch")
    if value is None:
        why = "; ".join(
            f"{name}: {_not_timed(libraries.get(name, {}))}"
            for name in ("jaxrnn", "torch")
            if "median_s" not in libraries.get(name, {})
        )
        return {**target, "why": f"not measured: {why}"}
    target["value"] = round(value, 3)
    torch_s = libraries["torch"]["median_s"]
    target["others"] = {
        name: round(torch_s / libraries[name]["median_s"], 3)
        for name in ("jaxrnn-cudnn", "jax-cudnn")
        if "median_s" in libraries.get(name, {})
    }
    torch_info = payload["libraries"].get("torch", {})
    if dry_run:
        why = "dry run"
    elif (reason := peers.mixed_devices(payload)) is not None:
        why = reason
    elif torch_info.get("platform") != "gpu":
        why = f"PyTorch ran on {torch_info.get('device')}, not on a GPU (cuDNN)"
    else:
        return {**target, "verdict": "met" if value >= LSTM_TARGET else "not met"}
    return {**target, "why": why}


def deer_target(
    payload: dict[str, Any] | None,
    seq_len: int,
    dry_run: bool,
    absent: str = "the deer step wrote no results",
) -> dict[str, Any]:
    """DEER's forward pass against the sequential GRU at T = ``seq_len``, every H ≤ 8.

    The value is the smallest speed-up (sequential time / DEER's) over the hidden sizes
    measured; each H's numbers (forward+backward, and quasi-DEER's where it ran) are
    given too.
    ``absent`` says why there is no ``payload``.
    """
    target: dict[str, Any] = {
        "name": "deer_vs_sequential",
        "target": f"DEER forward ≥ {DEER_TARGET:g}× the sequential GRU at T={seq_len}, H ≤ 8",
        "threshold": DEER_TARGET,
        "value": None,
        "verdict": None,
    }
    if payload is None:
        return {**target, "why": f"not measured: {absent}"}
    grid = [
        r for r in payload["results"] if r["cell"] == "gru" and r["T"] == seq_len and r["H"] <= 8
    ]
    ms = {(r["H"], r["method"], r["pass"]): r["median_ms"] for r in grid if "median_ms" in r}
    by_hidden, deer_forward = {}, {}
    for hidden in sorted({r["H"] for r in grid}):
        entry: dict[str, Any] = {}
        for method in ("deer", "quasi-deer"):
            for kind in ("forward", "forward+backward"):
                base, ours = ms.get((hidden, "sequential", kind)), ms.get((hidden, method, kind))
                if base is not None and ours is not None:
                    entry[f"{method} {kind}"] = round(base / ours, 3)
                    if (method, kind) == ("deer", "forward"):
                        deer_forward[hidden] = base / ours
        for r in grid:
            if r["H"] == hidden and r["pass"] == "forward" and r["method"] == "deer":
                entry.update({k: r[k] for k in ("iterations", "max_abs_deviation") if k in r})
            if r["H"] == hidden and r["pass"] == "forward" and "skipped" in r:
                entry[f"{r['method']} forward"] = r["skipped"]
        by_hidden[f"H={hidden}"] = entry
    target["speedups"] = by_hidden
    if not deer_forward:
        why = f"not measured: no DEER and sequential forward times at T={seq_len}"
        return {**target, "why": why}
    worst = min(deer_forward.values())
    target["value"] = round(worst, 3)
    unmeasured = [f"H={h}" for h in sorted({r["H"] for r in grid}) if h not in deer_forward]
    if dry_run:
        why = "dry run"
    elif payload.get("platform") != "gpu":
        why = f"ran on {payload.get('device')}, not on a GPU"
    elif worst < DEER_TARGET:
        return {**target, "verdict": "not met"}
    elif unmeasured:
        why = f"not measured at {', '.join(unmeasured)} (see the speed-ups)"
    else:
        return {**target, "verdict": "met"}
    return {**target, "why": why}


# --- the summary ---------------------------------------------------------------------------


def summarize(summary: dict[str, Any], the_plan: Plan, out: Path, dry_run: bool) -> dict[str, Any]:
    """The summary with the devices the steps used and the targets, from their files.

    A step's file is read only where this run wrote it (its record's ``outputs``), never
    one left in ``out`` by an earlier run.
    """
    written = {s["name"]: s.get("outputs", []) for s in summary["steps"]}
    ran = set(written)

    def payload(step: str, name: str) -> dict[str, Any] | None:
        return read_json(out / name) if name in written.get(step, []) else None

    def absent(step: str) -> str:
        return f"the {step} step " + ("wrote no results" if step in ran else "did not run")

    peers_payload = payload("peers", the_plan.peers_file)
    deer_payload = payload("deer", the_plan.deer_file)
    devices: dict[str, Any] = {}
    if "tests" in ran:  # JAX's default devices, as the probe saw them in the same environment
        devices["tests"] = ", ".join(summary["probe"].get("jax", {}).get("devices") or [])
    if peers_payload is not None:
        devices["peers"] = {n: i.get("device") for n, i in peers_payload["libraries"].items()}
    if deer_payload is not None:
        devices["deer"] = deer_payload.get("device")
    return {
        **summary,
        "devices": devices,
        "targets": [
            lstm_target(peers_payload, the_plan.point, dry_run, absent("peers")),
            deer_target(deer_payload, the_plan.deer_t, dry_run, absent("deer")),
        ],
    }


def _shown(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def markdown(summary: dict[str, Any]) -> str:
    """The report of a check: machine and versions, targets, steps, tests."""
    m, probe_ = summary["machine"], summary["probe"]
    jax_ = probe_.get("jax", {})
    torch_ = probe_.get("torch", {})
    versions = probe_.get("versions", {})
    torch_on = (
        f"CUDA {torch_.get('cuda_version')}, {torch_.get('device_kind')}, "
        f"cuDNN {torch_.get('cudnn')}"
        if torch_.get("cuda")
        else torch_.get("error") or "the CPU"
    )
    out = [
        "# jaxrnn device check",
        "",
        f"`{summary['command']}` on {summary['date']}, commit "
        f"`{(summary['git']['commit'] or 'unknown')[:12]}` "
        f"({len(summary['git']['uncommitted_jaxrnn_changes'] or [])} uncommitted changes "
        f"under jaxrnn/), {summary['seconds']:.0f} s.",
    ]
    if summary["dry_run"]:
        out += [
            "",
            "**Dry run**: every step on the CPU with tiny sizes, to check the check; no verdicts.",
        ]
    out += [
        "",
        f"Machine: {m['cpu_model']}, {m['cpu_count']} CPUs, {m['mem_total_gib']} GiB, "
        f"Python {probe_.get('python')}. JAX {versions.get('jax')} on "
        f"{', '.join(jax_.get('devices') or []) or jax_.get('error')} "
        f"({jax_.get('device_kind')}); PyTorch {versions.get('torch')} on {torch_on}; "
        f"jaxrnn {probe_.get('jaxrnn', {}).get('version')} from "
        f"`{probe_.get('jaxrnn', {}).get('file')}`.",
        "",
        "Every step ran with "
        + ", ".join(f"`{k}={v}`" for k, v in summary["environment"].items() if k != "PYTHONPATH")
        + " (and this tree first on `PYTHONPATH`). Devices used: "
        + "; ".join(
            f"{step}: "
            + (
                ", ".join(f"{name} on {device}" for name, device in used.items())
                if isinstance(used, dict)
                else str(used)
            )
            for step, used in summary.get("devices", {}).items()
        )
        + ".",
        "",
        "## Targets",
        "",
        "| target | measured | verdict |",
        "|---|---|---|",
    ]
    for t in summary.get("targets", []):
        if t["value"] is None:
            measured = "—"
        elif t["name"] == "lstm_train_vs_torch":
            measured = f"{t['value']:.3g}× (ms: " + ", ".join(
                f"{k} {_shown(v)}" for k, v in t["ms"].items()
            )
            measured += ")" + "".join(f"; {k} {v:.3g}×" for k, v in t.get("others", {}).items())
        else:
            measured = f"{t['value']:.3g}× (worst H); " + "; ".join(
                f"{h}: " + ", ".join(f"{k} {_shown(v)}" for k, v in e.items())
                for h, e in t["speedups"].items()
            )
        verdict = {"met": "**met**", "not met": "**NOT met**"}.get(
            t["verdict"], f"no verdict: {t.get('why')}"
        )
        out.append(f"| {t['target']} | {measured} | {verdict} |")
    out += [
        "",
        "## Steps",
        "",
        "| step | status | seconds | budget s | command |",
        "|---|---|---|---|---|",
    ]
    for s in summary["steps"]:
        out.append(
            f"| {s['name']} | {s['status']} | {s.get('seconds', '—')} | {s['budget_s']} "
            f"| `{s['command']}` |"
        )
    for s in summary["steps"]:
        lines = [*s.get("notes", [])]
        if "tests" in s:
            counts = s["tests"]
            lines.append(
                counts.get("summary")
                or ", ".join(f"{counts[k]} {k}" for k in ("passed", "failed", "errors", "skipped"))
            )
            lines += [f"failed: `{i}`" for i in counts.get("failed_ids", [])]
        if s.get("reason"):
            lines.append(s["reason"])
        if s["status"] not in ("ok", "skipped") and s.get("tail"):
            lines.append("last lines:\n\n```\n" + "\n".join(s["tail"][-15:]) + "\n```")
        if lines:
            out += ["", f"**{s['name']}**:", "", *(f"- {line}" for line in lines)]
    out += [
        "",
        f"Files: {', '.join(f'`{f}`' for f in summary['files'])}. "
        "The steps' output: `device_check.log`.",
    ]
    return "\n".join(out) + "\n"


def write_summary(summary: dict[str, Any], out: Path) -> None:
    """``device_check.json`` and ``device_check.md`` in ``out``."""
    (out / "device_check.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    (out / "device_check.md").write_text(markdown(summary))


# --- the command ---------------------------------------------------------------------------


def parse_budgets(items: Sequence[str], base: dict[str, float]) -> dict[str, float]:
    """``base`` with the ``--budget STEP=SECONDS`` items applied.

    Raises:
      ValueError: for a malformed item, an unknown step or a budget that is not positive.
    """
    budgets = dict(base)
    for item in items:
        name, _, seconds = item.partition("=")
        try:
            value = float(seconds)
        except ValueError:
            value = float("nan")
        if name not in STEPS or not value > 0:
            raise ValueError(
                f"--budget {item!r}: expected STEP=SECONDS with STEP one of {', '.join(STEPS)} "
                "and SECONDS > 0"
            )
        budgets[name] = value
    return budgets


def main(argv: Sequence[str] | None = None) -> int:
    """Run the check; return the exit code (0 ok, 1 a step failed, 2 it could not start)."""
    parser = argparse.ArgumentParser(
        prog="dev.py device-check", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument("--dry-run", action="store_true", help="every step on the CPU, tiny")
    parser.add_argument(
        "--out",
        type=Path,
        help="folder for the results (default: benchmarks/results/gpu; a new temporary "
        "folder on a dry run)",
    )
    parser.add_argument(
        "--steps", default=",".join(STEPS), help=f"comma-separated subset of {','.join(STEPS)}"
    )
    parser.add_argument(
        "--budget",
        action="append",
        default=[],
        metavar="STEP=SECONDS",
        help="another time budget for a step (repeatable)",
    )
    args = parser.parse_args(argv)
    steps = args.steps.split(",")
    if unknown := [s for s in steps if s not in STEPS]:
        parser.error(f"--steps: unknown {unknown}, expected some of {', '.join(STEPS)}")
    try:
        budgets = parse_budgets(args.budget, DRY_BUDGETS if args.dry_run else BUDGETS)
    except ValueError as error:
        parser.error(str(error))
    given = sys.argv[1:] if argv is None else list(argv)
    started, started_wall = time.monotonic(), time.time()
    command = shlex.join(["python3", "dev.py", "device-check", *given])
    env = step_env(args.dry_run)
    print(f"device-check: probing JAX and PyTorch ({sys.executable})", flush=True)
    try:
        found = probe(env)
    except RuntimeError as error:
        print(f"device-check: {error}", file=sys.stderr)
        return 2
    platforms = found["jax"]["platforms"]
    print(f"device-check: jax sees {platforms}, torch {found['torch']}", flush=True)
    if not args.dry_run and "gpu" not in platforms:
        why = found["jax"].get("error") or f"jax sees {platforms}"
        print(
            f"device-check: no GPU: {why} ({sys.executable}); run it on a machine with a "
            "GPU, or use --dry-run to check every step on the CPU",
            file=sys.stderr,
        )
        return 2
    if "error" in found.get("jaxrnn", {}):
        print(f"device-check: cannot import jaxrnn: {found['jaxrnn']['error']}", file=sys.stderr)
        return 2
    out = args.out or (
        Path(tempfile.mkdtemp(prefix="jaxrnn-device-check-")) if args.dry_run else RESULTS
    )
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    deadline = started + (TOTAL_S if not args.dry_run else sum(budgets.values()) + 60)
    summary: dict[str, Any] = {
        "command": command,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "dry_run": args.dry_run,
        "machine": machine_info(),
        "git": git_state(),
        "probe": found,
        "environment": env,
        "steps": [],
        "files": ["device_check.json", "device_check.md", LOG],
    }
    with (
        tempfile.TemporaryDirectory(prefix="jaxrnn-device-check-") as scratch,
        open(out / LOG, "w") as log,
    ):
        the_plan = plan(out, found, args.dry_run, budgets, Path(scratch))
        for step in (s for s in the_plan.steps if s.name in steps):
            left = deadline - time.monotonic() - GRACE_S
            record: dict[str, Any]
            if left < MIN_STEP_S:
                record = {
                    "name": step.name,
                    "title": step.title,
                    "command": shlex.join(step.cmd),
                    "budget_s": step.budget_s,
                    "status": "skipped",
                    "reason": f"no time left: {max(left, 0):.0f} s to the run's deadline",
                }
            else:
                record = run_step(step, log, min(step.budget_s, left))
            if step.name == "tests" and record["status"] != "skipped":
                record["tests"] = count_tests(the_plan.junit, record.get("tail", []))
            summary["steps"].append(record)
            # This run's files: not those an earlier run left in `out`.
            record["outputs"] = [
                f
                for f in step.outputs
                if (out / f).exists() and (out / f).stat().st_mtime >= started_wall - 1
            ]
            summary["files"] += record["outputs"]
            saved = read_json(out / record["outputs"][0]) if record["outputs"] else None
            if saved is not None:
                rows = saved["results"]
                skipped = sum("skipped" in r for r in rows)
                record.setdefault("notes", []).append(
                    f"{len(rows)} measurements written"
                    + (f", {skipped} skipped" if skipped else "")
                )
            summary["seconds"] = time.monotonic() - started
            summary = summarize(summary, the_plan, out, args.dry_run)
            write_summary(summary, out)
    report = markdown(summary)
    print("\n" + report, flush=True)
    print(f"device-check: results in {out}", flush=True)
    return 0 if all(s["status"] == "ok" for s in summary["steps"]) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)

"""``jaxrnn train`` as two processes on loopback, against one process with as many devices.

Every run here is ``python -m jaxrnn train`` in a subprocess on emulated CPU
devices (``XLA_FLAGS=--xla_force_host_platform_device_count``), with
``jax_disable_most_optimizations`` like the rest of the suite (conftest.py):
two processes of 2 devices each joined over 127.0.0.1 against one process of
4. Each launch is bounded in time and its processes are killed if it fails.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

from jaxrnn import _cli, checkpoint

# A tiny run: 6 steps, evaluated and checkpointed at steps 3 and 6, a metric line every step.
TINY = ["--task", "adding", "--seq-len", "10", "--hidden", "8", "--batch-size", "8",
        "--devices", "4", "--eval-every", "3", "--log-every", "1", "--quiet"]  # fmt: skip
LAUNCH_SECONDS = 240  # the most a launch may take on a loaded 2-core machine before it is killed
JOIN_SECONDS = "60"  # --distributed-timeout: a join that fails says so well before that
# Variables through which JAX would find a cluster or another launch's settings.
FOREIGN = ("JAX_COORDINATOR", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "JAX_LOCAL_DEVICE_IDS",
           "SLURM_", "OMPI_", "PMI_", "KUBERNETES_", "TPU_", "MEGASCALE_")  # fmt: skip


class Ran(NamedTuple):
    """What one process of a launch returned, printed and wrote to stderr."""

    code: int
    out: str
    err: str


def _env(devices: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN)}
    return env | {
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
        "JAX_DISABLE_MOST_OPTIMIZATIONS": "1",
        **extra,
    }


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _launch(
    commands: list[list[str]], logs: Path, env: dict[str, str], timeout: float = LAUNCH_SECONDS
) -> list[Ran]:
    """Start every command at once, wait for all of them; kill any still running on failure.

    Output goes to files under ``logs``, not pipes: a process that fills a pipe
    nobody reads would stall the others waiting for it in a collective.
    """
    logs.mkdir(parents=True, exist_ok=True)
    names = [(logs / f"{i}.out", logs / f"{i}.err") for i in range(len(commands))]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for command, (out, err) in zip(commands, names, strict=True):
            with out.open("wb") as stdout, err.open("wb") as stderr:
                procs.append(subprocess.Popen(command, stdout=stdout, stderr=stderr, env=env))
        deadline = time.monotonic() + timeout
        codes = [p.wait(timeout=max(deadline - time.monotonic(), 0.1)) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return [
        Ran(code, out.read_text(), err.read_text())
        for code, (out, err) in zip(codes, names, strict=True)
    ]


def _train(*flags: str) -> list[str]:
    return [sys.executable, "-m", "jaxrnn", "train", *flags]


def two_processes(out: Path, *flags: str) -> list[Ran]:
    """``jaxrnn train FLAGS`` as processes 0 and 1 of one run over a free loopback port."""
    port = _free_port()
    launch = ["--out", str(out), "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
              "--distributed-timeout", JOIN_SECONDS]  # fmt: skip
    commands = [_train(*flags, *launch, "--process-id", str(rank)) for rank in (0, 1)]
    return _launch(commands, out.parent / f"{out.name}-logs-{port}", _env(2))


def _assert_trained(ran: list[Ran], out: Path) -> None:
    """Both processes succeeded; process 0 alone said so and named the summary it wrote."""
    assert [r.code for r in ran] == [0, 0], ran
    lead, other = ran
    assert "training lstm" in lead.out and f"Wrote {out}/summary.json" in lead.out, lead
    assert "training" not in other.out and "Wrote" not in other.out, other
    assert "jaxrnn" not in other.err, other
    assert (out / "summary.json").is_file()


def _metrics(out: Path) -> list[dict[str, float]]:
    """The metric lines without their timings."""
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in line.items() if k != "steps_per_s"} for line in lines]


def _state(out: Path) -> dict[str, np.ndarray]:
    """The newest checkpoint's leaves (params, optimizer state, key) by name."""
    path = checkpoint.latest(out / "checkpoints")
    assert path is not None
    return checkpoint.restore(path)[0]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: the tiny run in one process over 4 devices."""
    out = tmp_path_factory.mktemp("one-process") / "run"
    (ran,) = _launch([_train(*TINY, "--steps", "6", "--out", str(out))], out.parent, _env(4))
    assert ran.code == 0 and f"Wrote {out}/summary.json" in ran.out, ran
    return out


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny run as two processes of 2 devices each."""
    out = tmp_path_factory.mktemp("two-processes") / "run"
    _assert_trained(two_processes(out, *TINY, "--steps", "6"), out)
    return out


def test_two_processes_train_as_one_process_with_as_many_devices(one_process, two_process_run):
    """Two processes of 2 devices give one 4-device process's losses and state, to rounding.

    Not bit for bit: the gradients' sum across processes (gloo) adds in another
    order than the sum inside one process. Measured: the losses differ by at
    most 1 ulp (relative 7e-8), the params and optimizer state by at most 6e-8;
    asserted: rtol 1e-6 on the metrics, rtol 1e-6 and atol 1e-6 on the state.
    """
    one, two = _metrics(one_process), _metrics(two_process_run)
    assert [line["step"] for line in two] == [1, 2, 3, 4, 5, 6]
    assert [sorted(line) for line in two] == [sorted(line) for line in one]
    for a, b in zip(one, two, strict=True):
        np.testing.assert_allclose([b[k] for k in sorted(a)], [a[k] for k in sorted(a)], rtol=1e-6)
    reference, trained = _state(one_process), _state(two_process_run)
    assert list(trained) == list(reference)
    for name, value in reference.items():
        np.testing.assert_allclose(trained[name], value, rtol=1e-6, atol=1e-6, err_msg=name)
    assert "state.params.w_out" in reference


def test_resume_after_both_processes_restart_equals_the_uninterrupted_run(
    tmp_path, two_process_run
):
    """Three steps, both processes ended, then both resumed to six on another port: bit for bit.

    The same processes compute the same sums in the same order, so the resumed
    run's metrics and state equal the uninterrupted two-process run's exactly.
    """
    out = tmp_path / "run"
    _assert_trained(two_processes(out, *TINY, "--steps", "3"), out)
    assert [line["step"] for line in _metrics(out)] == [1, 2, 3]
    _assert_trained(two_processes(out, *TINY, "--steps", "6", "--resume"), out)
    assert json.loads((out / "summary.json").read_text())["resumed_from"] == 3
    assert _metrics(out) == _metrics(two_process_run)
    resumed, uninterrupted = _state(out), _state(two_process_run)
    assert list(resumed) == list(uninterrupted)
    for name, value in uninterrupted.items():
        np.testing.assert_array_equal(resumed[name], value, err_msg=name)


def test_a_refused_run_directory_stops_every_process(tmp_path):
    """Process 0 alone opens OUT; when it refuses, every process exits 2 with its one line.

    Without that, the other process would wait for process 0 in the first step.
    """
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text("")  # a run is there; no --resume
    ran = two_processes(out, *TINY, "--steps", "6")
    for r in ran:
        assert r.code == 2, ran
        assert r.err.count("\n") == 1 and "--out: " in r.err, r
        assert "already holds a run" in r.err and "pass --resume" in r.err, r
    assert sorted(p.name for p in out.iterdir()) == [".lock", "metrics.jsonl"]


def test_processes_started_with_other_flags_all_stop(tmp_path):
    """A run whose processes disagree (here --hidden) stops on every process with one line."""
    port = _free_port()
    out = tmp_path / "run"
    launch = ["--out", str(out), "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
              "--distributed-timeout", JOIN_SECONDS]  # fmt: skip
    commands = [
        _train(*TINY, "--steps", "6", "--hidden", hidden, *launch, "--process-id", str(rank))
        for rank, hidden in ((0, "8"), (1, "9"))
    ]
    ran = _launch(commands, tmp_path / "logs", _env(2))
    for r in ran:
        assert r.code == 2, ran
        assert r.err.count("\n") == 1 and "other run flags on process(es) 1" in r.err, r
    assert not out.exists()


@pytest.fixture
def held_port():
    """A loopback port another socket is bound to and listening on for the test."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        yield int(held.getsockname()[1])


@pytest.mark.parametrize(
    ("flags", "env", "message"),
    [
        (
            ["--num-processes", "2", "--process-id", "1"],
            {},
            "--distributed: could not join a multi-process run: missing --coordinator (or "
            "JAX_COORDINATOR_ADDRESS); expected them given, or a cluster JAX detects",
        ),
        (
            ["--distributed"],
            {"JAX_NUM_PROCESSES": "2"},
            "missing --coordinator (or JAX_COORDINATOR_ADDRESS) and --process-id (or "
            "JAX_PROCESS_ID);",
        ),
        (
            ["--coordinator", "127.0.0.1:{held}", "--num-processes", "2", "--process-id", "0"],
            {},
            "--coordinator: expected a port free on this host for process 0 to serve the "
            "coordinator on, got 127.0.0.1:{held}, whose port {held} is in use",
        ),
        (
            ["--coordinator", "127.0.0.1:{held}", "--num-processes", "2", "--process-id", "2"],
            {},
            "--process-id: expected a process id in [0, 2) for --num-processes 2, got 2",
        ),
        (
            ["--distributed", "--coordinator", "127.0.0.1:{held}"],
            {"JAX_NUM_PROCESSES": "3", "JAX_PROCESS_ID": "3"},
            "JAX_PROCESS_ID: expected a process id in [0, 3) for JAX_NUM_PROCESSES 3, got 3",
        ),
        (
            ["--coordinator", "127.0.0.1:{free}", "--num-processes", "2", "--process-id", "1",
             "--distributed-timeout", "1"],
            {},
            "--distributed-timeout: expected all 2 processes to join the coordinator "
            "127.0.0.1:{free} within 1 s, got fewer",
        ),
    ],
    ids=["coordinator", "coordinator-and-id", "port-in-use", "id-out-of-range",
         "id-out-of-range-env", "timeout"],
)  # fmt: skip
def test_launch_errors_exit_2_with_one_line(tmp_path, held_port, flags, env, message):
    """Each launch mistake: status 2, one line on stderr naming the setting, no traceback."""
    free = _free_port()
    argv = [f.format(held=held_port, free=free) for f in flags]
    out = tmp_path / "run"
    (ran,) = _launch([_train(*TINY, "--steps", "6", "--out", str(out), *argv)], tmp_path,
                     _env(2, **env), timeout=60)  # fmt: skip
    assert ran.code == 2, ran
    assert ran.err.startswith("jaxrnn train: error: ") and ran.err.count("\n") == 1, ran
    assert message.format(held=held_port, free=free) in ran.err, ran
    assert ran.out == "" and not out.exists()


def test_launch_flags_are_not_part_of_the_run():
    """The same run, whatever its coordinator, process count, id or timeout: one directory."""
    parser = _cli._parser()
    plain = parser.parse_args(["train"])
    launched = parser.parse_args(["train", "--coordinator", "host0:1234", "--num-processes", "2",
                                  "--process-id", "1", "--distributed-timeout", "9"])  # fmt: skip
    for args in (plain, launched):
        _cli.resolve_launch(args)
        _cli.resolve_train(args)
    assert launched.distributed and not plain.distributed
    assert _cli.train_config(launched) == _cli.train_config(plain)
    assert _cli.default_out(_cli.train_config(launched)) == _cli.default_out(
        _cli.train_config(plain)
    )

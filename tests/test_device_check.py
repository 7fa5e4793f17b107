"""`dev.py device-check`: its dry run end to end, and how it fails."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))  # the benchmarks import _machine as a module
import _libraries  # noqa: E402
import device_check  # noqa: E402
import peers  # noqa: E402

PY = sys.executable
POINT = {"cell": "lstm", "mode": "train", "T": 512, "B": 64, "I": 512, "H": 512}


def _env(**extra):
    """This environment without what pytest and its workers set for themselves."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYTEST_", "JAXRNN_TEST_")) and k != "XLA_FLAGS"
    }
    return {**env, **extra}


def _dev(*args, env=None, timeout=300):
    return subprocess.run(
        [PY, str(ROOT / "dev.py"), "device-check", *args],
        cwd=ROOT,
        env=env or _env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_the_dry_run_runs_every_step_on_the_cpu_and_gives_no_verdicts(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    proc = _dev("--dry-run", "--out", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (out / "keep.txt").read_text() == "mine"  # nothing else there is touched
    written = sorted(p.name for p in out.iterdir() if p.name != "keep.txt")
    summary = json.loads((out / "device_check.json").read_text())
    assert written == sorted(summary["files"]) and len(written) <= 8  # what the device tool keeps
    assert {"device_check.md", "device_check.log", "peers_quick.json"} <= set(written)
    assert summary["dry_run"] is True
    assert summary["environment"]["JAX_PLATFORMS"] == "cpu"
    assert [(s["name"], s["status"]) for s in summary["steps"]] == [
        ("tests", "ok"),
        ("peers", "ok"),
        ("deer", "ok"),
    ]
    # One test of each file that exists, all passed.
    files = [f for f in device_check.TEST_FILES if (ROOT / f).is_file()]
    counts = summary["steps"][0]["tests"]
    assert (counts["passed"], counts["failed"], counts["errors"]) == (len(files), 0, 0)
    # Every library ran on the CPU; the GPU-only ones were left out.
    peers_payload = json.loads((out / "peers_quick.json").read_text())
    assert (
        set(summary["devices"]["peers"]) == {"jaxrnn", "torch"} == set(peers_payload["libraries"])
    )
    assert all(info["platform"] == "cpu" for info in peers_payload["libraries"].values())
    # The targets are computed from the steps' files, and judged on no dry run.
    lstm, deer = summary["targets"]
    record = next(r for r in peers_payload["results"] if r["mode"] == "train")
    assert lstm["value"] == round(peers.ratio(record, "torch"), 3)
    rows = json.loads((out / "parallel_time_quick.json").read_text())["results"]
    ms = {(r["method"], r["pass"]): r["median_ms"] for r in rows}
    assert deer["value"] == round(ms["sequential", "forward"] / ms["deer", "forward"], 3)
    assert all(t["verdict"] is None and t["why"] == "dry run" for t in (lstm, deer))
    report = (out / "device_check.md").read_text()
    assert "**Dry run**" in report and report.count("no verdict: dry run") == 2
    assert "met**" not in report
    log = (out / "device_check.log").read_text()
    assert all(f"== {name}: ok" in log for name in ("tests", "peers", "deer"))


def test_without_a_gpu_only_a_dry_run_starts(tmp_path):
    out = tmp_path / "out"
    proc = _dev("--out", str(out), env=_env(JAX_PLATFORMS="cpu", CUDA_VISIBLE_DEVICES=""))
    assert proc.returncode == 2
    assert "no GPU: jax sees ['cpu']" in proc.stderr and "--dry-run" in proc.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--steps", "tests,lint"], "--steps: unknown ['lint']"),
        (["--budget", "tests=0"], "--budget 'tests=0': expected STEP=SECONDS"),
        (["--budget", "deer"], "--budget 'deer': expected STEP=SECONDS"),
    ],
)
def test_bad_arguments_are_refused_before_anything_runs(args, message):
    proc = _dev(*args, "--dry-run", timeout=60)
    assert proc.returncode == 2 and message in proc.stderr
    assert "probing" not in proc.stdout


def _alive(pid):
    """Whether the process `pid` runs (a zombie, killed but not yet reaped, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _fake_probe(env):
    return {
        "python": "3",
        "versions": {},
        "jax": {"platforms": ["cpu"], "devices": ["cpu:0"], "device_kind": "cpu"},
        "torch": {"cuda": False},
        "jaxrnn": {"version": "0", "file": "jaxrnn/__init__.py"},
    }


def test_a_step_that_hangs_or_fails_is_recorded_and_the_others_still_run(tmp_path, monkeypatch):
    """A step past its budget is stopped (SIGKILL if it ignores SIGINT), with what it left."""
    pids = tmp_path / "pids"
    pids.mkdir()
    # SIGINT ignored from the start (sh's `trap`, kept across exec: Python leaves an ignored
    # SIGINT ignored), however long the interpreter takes to start on a loaded machine.
    hang = [
        "sh",
        "-c",
        'trap \'\' INT; exec "$0" -c "$1"',
        PY,
        f"import os, time; open('{pids}/hang', 'w').write(str(os.getpid())); "
        "print('started', flush=True); time.sleep(120)",
    ]
    fail = "import sys; print('boom'); sys.exit(3)"
    # Exits at once, leaving a child of its own running: the group is killed after it.
    orphan = (
        "import subprocess, sys; "
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); "
        f"open('{pids}/orphan', 'w').write(str(child.pid))"
    )

    def fake_plan(out, probe, dry_run, budgets, scratch):
        steps = [
            device_check.Step("tests", "hangs", hang, 3.0, {}),
            device_check.Step("peers", "fails", [PY, "-c", fail], 60.0, {}, ("peers_quick.json",)),
            device_check.Step("deer", "leaves a child", [PY, "-c", orphan], 60.0, {}),
        ]
        return device_check.Plan(
            steps, POINT, 10_000, "peers_quick.json", "parallel_time.json", scratch / "t.xml"
        )

    monkeypatch.setattr(device_check, "probe", _fake_probe)
    monkeypatch.setattr(device_check, "plan", fake_plan)
    monkeypatch.setattr(device_check, "GRACE_S", 1.0)
    out = tmp_path / "out"
    out.mkdir()
    stale = out / "peers_quick.json"  # an earlier run's, which this run must not read
    stale.write_text(json.dumps({"libraries": {}, "results": []}))
    os.utime(stale, (0, 0))
    assert device_check.main(["--dry-run", "--out", str(out)]) == 1
    assert json.loads(stale.read_text()) == {"libraries": {}, "results": []}
    summary = json.loads((out / "device_check.json").read_text())
    hung, failed, ok = summary["steps"]
    assert (hung["status"], failed["status"], ok["status"]) == ("timeout", "failed", "ok")
    assert 3.0 <= hung["seconds"] < 30 and hung["returncode"] == -9  # SIGINT was ignored
    assert "started" in hung["tail"] and hung["tests"] == {
        "summary": "no summary: pytest wrote no report"
    }
    assert failed["returncode"] == 3 and failed["tail"] == ["boom"]
    assert not any(_alive(int((pids / name).read_text())) for name in ("hang", "orphan"))
    assert summary["files"] == ["device_check.json", "device_check.md", "device_check.log"]
    assert [t["why"] for t in summary["targets"]] == [
        "not measured: the peers step wrote no results",
        "not measured: the deer step wrote no results",
    ]
    report = (out / "device_check.md").read_text()
    assert "| tests | timeout |" in report and "| peers | failed |" in report and "boom" in report


def _library(platform, kind):
    return {"platform": platform, "device_kind": kind, "device": f"{platform}: {kind}"}


def _peers_payload(ours_s, torch_s, torch_device=("gpu", "NVIDIA H200"), torch_info=None):
    return {
        "libraries": {"jaxrnn": _library("gpu", "NVIDIA H200"), "torch": _library(*torch_device)},
        "results": [
            {
                **POINT,
                "libraries": {
                    "jaxrnn": {"median_s": ours_s},
                    "torch": torch_info or {"median_s": torch_s},
                },
            }
        ],
    }


def test_the_lstm_verdict_needs_pytorch_on_the_same_gpu():
    met = device_check.lstm_target(_peers_payload(0.004, 0.004), POINT, dry_run=False)
    assert (met["value"], met["verdict"]) == (1.0, "met")  # the bound is inclusive
    missed = device_check.lstm_target(_peers_payload(0.004, 0.002), POINT, dry_run=False)
    assert (missed["value"], missed["verdict"]) == (0.5, "not met")
    assert missed["ms"] == {"jaxrnn": 4.0, "torch": 2.0}
    mixed = device_check.lstm_target(
        _peers_payload(0.004, 0.002, ("cpu", "cpu")), POINT, dry_run=False
    )
    assert mixed["verdict"] is None and "different devices" in mixed["why"]
    dry = device_check.lstm_target(_peers_payload(0.004, 0.002), POINT, dry_run=True)
    assert (dry["value"], dry["verdict"], dry["why"]) == (0.5, None, "dry run")
    failed = device_check.lstm_target(
        _peers_payload(0.004, None, torch_info={"error": "RuntimeError: CUDA out of memory"}),
        POINT,
        dry_run=False,
    )
    assert failed["value"] is None
    assert failed["why"] == "not measured: torch: RuntimeError: CUDA out of memory"
    other = {**POINT, "T": 100}
    absent = device_check.lstm_target(_peers_payload(0.004, 0.002), other, dry_run=False)
    assert absent["why"] == "not measured: the point is not in the peers results"


def _deer_rows(seq_len, times):
    """Rows of parallel_time.py: {(H, method): (forward ms, forward+backward ms)}."""
    return [
        {"cell": "gru", "H": h, "T": seq_len, "method": method, "pass": kind, "median_ms": ms}
        for (h, method), pair in times.items()
        for kind, ms in zip(("forward", "forward+backward"), pair, strict=True)
    ]


def test_the_deer_verdict_takes_the_worst_hidden_size_on_a_gpu():
    times = {
        (1, "sequential"): (100.0, 300.0),
        (1, "deer"): (5.0, 20.0),
        (8, "sequential"): (100.0, 300.0),
        (8, "deer"): (20.0, 60.0),
    }
    payload = {"platform": "gpu", "device": "cuda:0", "results": _deer_rows(10_000, times)}
    payload["results"] += _deer_rows(1_000, {(1, "sequential"): (1.0, 1.0), (1, "deer"): (1.0, 1)})
    target = device_check.deer_target(payload, 10_000, dry_run=False)
    assert (target["value"], target["verdict"]) == (5.0, "not met")
    assert target["speedups"]["H=1"] == {"deer forward": 20.0, "deer forward+backward": 15.0}
    faster = {**times, (8, "deer"): (10.0, 60.0)}
    payload["results"] = _deer_rows(10_000, faster)
    assert device_check.deer_target(payload, 10_000, dry_run=False)["verdict"] == "met"
    on_cpu = device_check.deer_target({**payload, "platform": "cpu"}, 10_000, dry_run=False)
    assert on_cpu["verdict"] is None and on_cpu["why"].endswith("not on a GPU")
    absent = device_check.deer_target(payload, 100_000, dry_run=False)
    assert absent["value"] is None and absent["why"].startswith("not measured")
    # DEER skipped at H=8 (too slow to run): no verdict where the rest meets the target.
    skipped = {"skipped": "skipped: estimated 9 s per run"}
    payload["results"] = [
        {**{k: v for k, v in r.items() if k != "median_ms"}, **skipped}
        if (r["H"], r["method"]) == (8, "deer")
        else r
        for r in payload["results"]
    ]
    partial = device_check.deer_target(payload, 10_000, dry_run=False)
    assert (partial["value"], partial["verdict"]) == (20.0, None)
    assert partial["why"] == "not measured at H=8 (see the speed-ups)"
    assert partial["speedups"]["H=8"] == {"deer forward": "skipped: estimated 9 s per run"}
    slow = [
        {**r, "median_ms": 50.0} if (r["H"], r["method"]) == (1, "deer") else r
        for r in payload["results"]
    ]
    assert device_check.deer_target({**payload, "results": slow}, 10_000, False)["verdict"] == (
        "not met"
    )


def test_test_counts_come_from_junit_or_from_the_last_summary_line(tmp_path):
    junit = tmp_path / "t.xml"
    junit.write_text(
        '<testsuites><testsuite name="pytest" tests="5" failures="1" errors="1" skipped="1">'
        '<testcase classname="tests.test_a" name="test_x"><failure message="no"/></testcase>'
        '<testcase classname="tests.test_a" name="test_y"><error message="no"/></testcase>'
        "</testsuite></testsuites>"
    )
    counts = device_check.count_tests(junit, [])
    assert counts == {
        "passed": 2,
        "failed": 1,
        "errors": 1,
        "skipped": 1,
        "failed_ids": ["tests.test_a::test_x", "tests.test_a::test_y"],
    }
    tail = ["....", "==== 3 passed, 1 failed in 9.00s ====", "KeyboardInterrupt"]
    assert device_check.count_tests(tmp_path / "none.xml", tail) == {
        "summary": "3 passed, 1 failed in 9.00s"
    }


def test_peers_points_are_checked():
    assert peers.parse_points("lstm:train:512:64:512:512, gru:infer:2:1:3:4") == [
        POINT,
        {"cell": "gru", "mode": "infer", "T": 2, "B": 1, "I": 3, "H": 4},
    ]
    with pytest.raises(ValueError, match="'lstm:train:5:6': expected CELL:MODE:T:B:I:H"):
        peers.parse_points("lstm:train:5:6")
    with pytest.raises(ValueError, match="'rnn:train:1:1:1:1': expected a cell of"):
        peers.parse_points("rnn:train:1:1:1:1")
    with pytest.raises(ValueError, match="sizes T, B, I, H ≥ 1"):
        peers.parse_points("lstm:train:0:1:1:1")


def test_jaxrnn_cudnn_is_missing_off_a_gpu():
    import jax

    assert jax.default_backend() == "cpu"
    request = {"cell": "lstm", "mode": "train", "T": 3, "B": 2, "I": 4, "H": 5}
    with pytest.raises(_libraries.Missing):
        _libraries.setup_jaxrnn_cudnn(request)
    with pytest.raises(_libraries.Missing):
        _libraries.setup_jaxrnn_cudnn({**request, "mode": "step"})


def test_the_plan_fits_the_interpreter_it_finds(tmp_path, monkeypatch):
    """No xdist or beartype: no `-n`, no shape checks; a missing test file is named."""
    files = (*device_check.TEST_FILES[:1], "tests/test_not_written_yet.py")
    monkeypatch.setattr(device_check, "TEST_FILES", files)
    bare = {"versions": {"pytest-xdist": None, "beartype": None}}
    full = {"versions": {"pytest-xdist": "3", "beartype": "0.19"}}
    budgets = device_check.BUDGETS
    tests = device_check.plan(tmp_path, bare, False, budgets, tmp_path).steps[0]
    assert "-n" not in tests.cmd and tests.cmd[-2:] == ["--no-shape-checks", files[0]]
    assert "not found, left out: tests/test_not_written_yet.py" in tests.notes
    gpu = device_check.plan(tmp_path, full, False, budgets, tmp_path)
    tests, peers_step, deer = gpu.steps
    assert "-n" in tests.cmd and "--no-shape-checks" not in tests.cmd
    assert (
        "JAX_PLATFORMS" not in tests.env and tests.env["JAX_DEFAULT_MATMUL_PRECISION"] == "highest"
    )
    assert "lstm:train:512:64:512:512" in peers_step.cmd and "--out" in peers_step.cmd
    assert "--seq-lens" not in deer.cmd  # parallel_time.py's own: T = 10³, 10⁴, 10⁵
    assert (gpu.point, gpu.deer_t) == (POINT, 10_000)
    assert sum(budgets.values()) + 3 * device_check.GRACE_S <= device_check.TOTAL_S < 8 * 60
    dry = device_check.plan(tmp_path, full, True, device_check.DRY_BUDGETS, tmp_path)
    assert "-n" not in dry.steps[0].cmd and dry.steps[0].env["JAX_PLATFORMS"] == "cpu"

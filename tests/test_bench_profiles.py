"""`dev.py bench --profile` and what `benchmarks/peers.py` records of devices and precision."""

import dataclasses
import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))  # peers.py imports _machine as a plain module
import peers  # noqa: E402


def _load_dev():
    spec = importlib.util.spec_from_file_location("jaxrnn_dev_script", ROOT / "dev.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


dev = _load_dev()


def _library(platform, kind, precision="highest"):
    return {
        "version": "1",
        "platform": platform,
        "device_kind": kind,
        "device": f"{platform}: {kind}",
        "matmul_precision": precision,
    }


def _payload(torch_platform, torch_kind):
    """Two libraries, LSTM train at two sizes, torch 2× slower than jaxrnn."""
    results = []
    for h in (64, 128):
        point = {"cell": "lstm", "mode": "train", "T": 10, "B": 1, "I": 64, "H": h}
        results.append(
            {
                **point,
                "flops": peers.flops(point),
                "libraries": {
                    "jaxrnn": {"first_s": 1.0, "median_s": 0.01},
                    "torch": {"first_s": 0.1, "median_s": 0.02},
                },
            }
        )
    return {
        "date": "2026-12-02",
        "quick": True,
        "matmul_precision": "highest",
        "machine": {
            "cpu_model": "test",
            "cpu_count": 1,
            "mem_total_gib": 1,
            "python": "3",
            "platform": "test",
        },
        "git": {"commit": "0" * 40},
        "libraries": {
            "jaxrnn": _library("cpu", "cpu"),
            "torch": _library(torch_platform, torch_kind),
        },
        "peak": {"gflops": 100.0},
        "results": results,
    }


def test_verdicts_are_refused_when_the_libraries_ran_on_different_devices():
    payload = _payload("gpu", "NVIDIA H200")
    lines = peers.targets(payload)
    assert len(lines) == 1 and "No verdicts" in lines[0]
    assert "jaxrnn on cpu" in lines[0] and "torch on NVIDIA H200" in lines[0]
    report = peers.markdown(payload)
    assert "met**" not in report and "No verdicts" in report


def test_verdicts_are_given_when_every_library_ran_on_one_device():
    payload = _payload("cpu", "cpu")
    assert peers.mixed_devices(payload) is None
    report = peers.markdown(payload)
    assert "worst 2.00× (2/2 points) — **met**" in report
    assert "Float32 matmul precision requested: `highest` (TF32 off)" in report
    assert "| torch | 1 | cpu: cpu | cpu | highest |" in report


def test_a_file_from_before_devices_were_recorded_still_renders():
    saved = json.loads((ROOT / "benchmarks" / "results" / "peers.json").read_text())
    # Take the committed grid back to the old format: no precision, platform or kind.
    saved.pop("matmul_precision", None)
    for info in saved["libraries"].values():
        for key in ("platform", "device_kind", "matmul_precision", "tf32"):
            info.pop(key, None)
    report = peers.markdown(saved)
    assert "Float32 matmul precision requested: not recorded" in report
    assert "| not recorded | not recorded |" in report
    assert "met**" in report  # the old devices' platforms agree: the verdicts stand
    # The old `device` strings still tell a CPU from a GPU.
    saved["libraries"]["torch"]["device"] = "cuda: NVIDIA H200 (cuDNN)"
    assert peers.mixed_devices(saved) is not None


def test_update_refuses_to_mix_precisions_or_devices():
    old, new = _payload("cpu", "cpu"), _payload("cpu", "cpu")
    assert peers.update_clash(old, new) is None
    assert peers.update_clash({**old, "matmul_precision": "tf32"}, new) is not None
    moved = _payload("gpu", "NVIDIA H200")
    assert "torch ran on cpu in the file" in peers.update_clash(old, moved)


def test_every_jax_worker_limits_its_gpu_memory(monkeypatch):
    monkeypatch.setenv("XLA_PYTHON_CLIENT_PREALLOCATE", "true")
    for name in ("jaxrnn", "jaxrnn@abc1234", "flax", "nnx", "equinox", "jax-cudnn"):
        assert peers.worker_env(name)["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
    monkeypatch.delenv("XLA_PYTHON_CLIENT_PREALLOCATE")
    assert "XLA_PYTHON_CLIENT_PREALLOCATE" not in peers.worker_env("torch")
    source = Path("/somewhere")
    assert peers.worker_env("jaxrnn@abc1234", source)["PYTHONPATH"].startswith(str(source))


def test_real_workers_pin_the_precision_and_report_their_device(monkeypatch):
    pytest.importorskip("torch")
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")  # as the cpu profile runs them, GPU or not
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    workers = {
        "jaxrnn": peers.Worker("jaxrnn"),
        "torch": peers.Worker("torch"),
        "jaxrnn@tf32": peers.Worker("jaxrnn", precision="tf32"),
        "torch@tf32": peers.Worker("torch", precision="tf32"),
    }
    try:
        info = {name: worker.ask(op="info") for name, worker in workers.items()}
        tiny = {"cell": "elman", "mode": "step", "T": 1, "B": 1, "I": 4, "H": 4}
        record = peers.measure({n: workers[n] for n in ("jaxrnn", "torch")}, tiny, repeats=1)
    finally:
        for worker in workers.values():
            worker.close()
    for name in workers:
        assert (info[name]["platform"], info[name]["device_kind"]) == ("cpu", "cpu"), info[name]
    assert info["jaxrnn"]["matmul_precision"] == "highest"
    assert info["jaxrnn@tf32"]["matmul_precision"] == "tensorfloat32"
    assert info["torch"]["matmul_precision"] == "highest"
    assert info["torch"]["tf32"] == {"cuda.matmul": False, "cudnn": False}
    assert info["torch@tf32"]["matmul_precision"] == "high"
    assert info["torch@tf32"]["tf32"] == {"cuda.matmul": True, "cudnn": True}
    assert all("median_s" in record["libraries"][n] for n in ("jaxrnn", "torch")), record
    assert peers.precision_of(info["torch"]) == "highest, TF32 off"


def _mock_installs(monkeypatch, tmp_path):
    """Record `dev.run`'s commands instead of running them; venvs go under tmp_path."""
    calls = []

    def run(cmd, env_dir=None, extra_env=None):
        calls.append((list(cmd), dict(extra_env or {})))
        return 0

    monkeypatch.setattr(dev, "run", run)
    monkeypatch.setattr(dev.venv, "create", lambda path, **_: Path(path).mkdir(parents=True))
    for name, profile in list(dev.BENCH_PROFILES.items()):
        moved = dataclasses.replace(profile, venv=tmp_path / name)
        monkeypatch.setitem(dev.BENCH_PROFILES, name, moved)
    return calls


def test_each_profile_installs_its_own_venv(monkeypatch, tmp_path):
    calls = _mock_installs(monkeypatch, tmp_path)
    monkeypatch.delenv("JAXRNN_BENCH_PROFILE", raising=False)
    expected = {
        "cpu": (["torch==2.13.0"], "-e .[bench,interop]", {"JAX_PLATFORMS": "cpu"}),
        "cuda": (["torch==2.14.1"], "-e .[bench,interop] jax[cuda13]", {"JAX_PLATFORMS": "cuda"}),
        "tpu": ([], "-e .[bench] jax[tpu]", {"JAX_PLATFORMS": "tpu"}),
    }
    for name, (torch, project, env) in expected.items():
        calls.clear()
        assert dev.bench(["--profile", name, "--quick"]) == 0
        commands = [" ".join(cmd) for cmd, _ in calls]
        assert all(c.startswith(str(tmp_path / name / "bin" / "python")) for c in commands)
        assert [c.split()[-1] for c in commands[1:-2]] == torch
        assert commands[-2].endswith(project)
        assert commands[-1].endswith("benchmarks/peers.py --quick")
        assert env.items() <= calls[-1][1].items()
        assert (tmp_path / name).is_dir()
    assert calls[-1][1].get("CUDA_VISIBLE_DEVICES") is None  # tpu
    # The stamp is fresh: a second run installs nothing.
    calls.clear()
    assert dev.bench(["--profile=tpu"]) == 0
    assert len(calls) == 1


def test_the_profile_comes_from_the_environment_and_a_dry_run_changes_nothing(
    monkeypatch, tmp_path, capsys
):
    calls = _mock_installs(monkeypatch, tmp_path)
    monkeypatch.setenv("JAXRNN_BENCH_PROFILE", "cuda")
    assert dev.bench_args(["--quick"]) == ("cuda", False, ["--quick"])
    assert dev.bench_args(["--profile", "cpu", "--dry-run"]) == ("cpu", True, [])
    assert dev.bench(["--dry-run", "--tf32"]) == 0
    out = capsys.readouterr().out
    assert calls == [] and not (tmp_path / "cuda").exists()
    assert "jax[cuda13]" in out and "torch==2.14.1" in out
    assert "+ JAX_PLATFORMS=cuda " in out and out.rstrip().endswith("peers.py --tf32")


def test_an_unknown_profile_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.delenv("JAXRNN_BENCH_PROFILE", raising=False)
    with pytest.raises(ValueError, match="expected one of cpu, cuda, tpu"):
        dev.bench_args(["--profile", "gpu"])
    with pytest.raises(ValueError, match="needs a name"):
        dev.bench_args(["--profile"])
    assert dev.main(["bench", "--profile", "rocm"]) == 2
    assert "unknown bench profile 'rocm'" in capsys.readouterr().err
    monkeypatch.setenv("JAXRNN_BENCH_PROFILE", "gpu")
    assert dev.main(["bench"]) == 2
    assert "JAXRNN_BENCH_PROFILE" in capsys.readouterr().err


def test_a_jax_worker_without_its_platform_says_so(monkeypatch):
    monkeypatch.setenv("JAX_PLATFORMS", "nosuchplatform")
    worker = peers.Worker("jaxrnn")
    try:
        info = worker.ask(op="info")
    finally:
        worker.close()
    assert "JAX found no device (JAX_PLATFORMS='nosuchplatform'" in info["error"]

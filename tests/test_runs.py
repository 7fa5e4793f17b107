"""Runs that are never lost, stop cleanly, fail in one line, and compose with your own loop."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import jax
import jax.numpy as jnp
import jaxtyping
import numpy as np
import pytest

import jaxrnn
from jaxrnn import _cli, checkpoint, runlog, tasks, training
from jaxrnn.tasks import Batch
from tests.helpers import exit_code

TASK = tasks.adding(8)
MODEL = training.readout(jaxrnn.lstm(8, forget_bias=1.0), 1)
ENV = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")


def _fit(data=TASK, **kwargs):
    options = {"steps": 12, "batch_size": 8, "key": jax.random.key(0), "progress": False}
    return training.fit(MODEL, data, training.optimizer(1e-2), **(options | kwargs))


def _assert_same_state(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


def _without_timings(history):
    return [{k: v for k, v in line.items() if k != "steps_per_s"} for line in history]


# --------------------------------------------------------------------------- runs never lost


def test_a_fresh_run_never_replaces_an_earlier_one(tmp_path):
    _fit(out=tmp_path, steps=4, checkpoint_every=2)
    before = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    metrics = (tmp_path / "metrics.jsonl").read_text()
    with pytest.raises(runlog.RunDirError, match=r"already holds a run .*pass resume=True"):
        _fit(out=tmp_path, steps=4)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == before
    assert (tmp_path / "metrics.jsonl").read_text() == metrics

    _fit(out=tmp_path, steps=2, overwrite=True)  # moves the old run aside, deletes nothing
    (aside,) = tmp_path.parent.glob(f"{tmp_path.name}.old-*")
    assert sorted(p.name for p in (aside / "checkpoints").iterdir()) == before
    assert (aside / "metrics.jsonl").read_text() == metrics
    assert not (tmp_path / "checkpoints").exists()


def test_a_second_process_cannot_open_a_run_in_use(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", f"from jaxrnn import runlog; r = runlog.RunDir({str(tmp_path)!r})"
         "; print('locked', flush=True); import time; time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, env=ENV,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(runlog.RunDirError, match=f"in use by another run \\(pid {holder.pid}"):
            _fit(out=tmp_path, steps=1)
        assert exit_code(["train", "--steps", "1", "--out", str(tmp_path)]) == 2
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    with runlog.RunDir(tmp_path):  # the lock died with its process
        pass


def test_the_default_out_is_one_directory_per_configuration():
    parse = _cli._parser().parse_args

    def out(*flags):
        args = parse(["train", *flags])
        _cli.resolve_train(args)
        return _cli.default_out(_cli.train_config(args))

    assert out() == out("--steps", "5", "--quiet", "--checkpoint-every", "3")  # same computation
    assert len({out(), out("--hidden", "64"), out("--lr", "0.01"), out("--seed", "1")}) == 4
    assert out().parent.name == "runs" and out().name.startswith("adding-lstm-T100-seed0-")
    assert _cli.TASK_NAMES == tasks.NAMES


# --------------------------------------------------------------------------- resume


def _stop_at(evaluation, signum):
    """``extra_metrics`` that sends this process ``signum`` at its ``evaluation``-th call."""
    calls = []

    def extra(params, batch):
        calls.append(None)
        if len(calls) == evaluation:
            os.kill(os.getpid(), signum)
        return {}

    return extra


def test_a_stopped_run_resumes_bit_identical(tmp_path):
    signum = signal.SIGTERM
    kwargs = {"steps": 12, "log_every": 2, "eval_every": 3, "checkpoint_every": 5}
    whole = _fit(out=tmp_path / "whole", **kwargs)
    with pytest.raises(training.Stopped) as stop:
        _fit(out=tmp_path / "run", extra_metrics=_stop_at(2, signum), **kwargs)
    assert (stop.value.step, stop.value.exit_code) == (6, 128 + signum)  # the 2nd evaluation
    assert stop.value.checkpoint.name == "step_00000006"
    assert signal.getsignal(signum) is not None  # the previous handler is back
    resumed = _fit(out=tmp_path / "run", resume=True, **kwargs)
    assert resumed.summary["resumed_from"] == 6
    _assert_same_state(resumed.state, whole.state)
    on_disk = runlog.read_metrics(tmp_path / "run")
    assert _without_timings(on_disk) == _without_timings(whole.history)


def test_resume_falls_back_past_a_damaged_checkpoint_and_lines(tmp_path):
    kwargs = {"steps": 10, "log_every": 2, "checkpoint_every": 5}
    whole = _fit(out=tmp_path / "whole", **{**kwargs, "steps": 12})
    _fit(out=tmp_path / "run", **kwargs)
    (tmp_path / "run/checkpoints/step_00000010/arrays.npz").write_bytes(b"PK\x03\x04 torn")
    metrics = tmp_path / "run" / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    metrics.write_text("\n".join([lines[0], '{"step": 3, "lo', *lines[1:]]) + "\n")
    with pytest.warns(UserWarning, match="skipp") as caught:
        resumed = _fit(out=tmp_path / "run", resume=True, **{**kwargs, "steps": 12})
    messages = [str(w.message) for w in caught]
    assert any("step_00000010" in m and "arrays.npz" in m for m in messages)
    assert any("skipped 1 damaged line(s): 2" in m for m in messages)
    assert resumed.summary["resumed_from"] == 5
    _assert_same_state(resumed.state, whole.state)
    # the lines logged before the damaged one and after it up to step 5 are kept
    assert _without_timings(runlog.read_metrics(tmp_path / "run")) == _without_timings(
        whole.history
    )


def test_a_config_mismatch_is_named_before_any_array_is_read(tmp_path):
    _fit(out=tmp_path, steps=4, checkpoint_every=2, config={"hidden": 8, "lr": 0.01})
    for arrays in (tmp_path / "checkpoints").glob("*/arrays.npz"):
        arrays.write_bytes(b"")  # reading any array would fail
    with pytest.raises(training.ConfigMismatch) as e:
        _fit(out=tmp_path, steps=4, resume=True, config={"hidden": 16, "lr": 0.01})
    assert e.value.differences == {"hidden": (8, 16)}
    with pytest.raises(training.ConfigMismatch, match="key"):
        _fit(out=tmp_path, steps=4, resume=True, config={"hidden": 8, "lr": 0.01},
             key=jax.random.key(1))  # fmt: skip


def test_cli_resume_names_the_flags_and_nothing_to_resume(tmp_path, capsys):
    argv = ["train", "--seq-len", "8", "--hidden", "4", "--steps", "2", "--batch-size", "4"]
    out = ["--quiet", "--out", str(tmp_path / "run")]
    assert exit_code([*argv, *out]) == 0
    assert exit_code([*argv[:4], "8", *argv[5:], *out, "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.endswith("--resume: the run was made with other flags: --hidden 4 there, 8 now\n")
    assert exit_code([*argv, "--quiet", "--out", str(tmp_path / "empty"), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "--resume: nothing to resume, no run in" in err and err.count("\n") == 1
    assert exit_code([*argv, *out]) == 2
    err = capsys.readouterr().err
    assert "pass --resume to continue it or --overwrite to move it aside" in err


def test_sigterm_through_the_command_line_checkpoints_and_resumes(tmp_path):
    out = tmp_path / "run"
    argv = ["train", "--seq-len", "8", "--hidden", "4", "--steps", "100000", "--batch-size",
            "4", "--log-every", "1", "--quiet", "--out", str(out)]  # fmt: skip
    run = subprocess.Popen(
        [sys.executable, "-m", "jaxrnn", *argv], stderr=subprocess.PIPE, text=True, env=ENV
    )
    deadline = time.monotonic() + 120
    while not (out / "metrics.jsonl").exists() or len(runlog.read_metrics(out)) < 3:
        assert time.monotonic() < deadline and run.poll() is None
        time.sleep(0.1)
    run.send_signal(signal.SIGTERM)
    _, err = run.communicate(timeout=120)
    assert run.returncode == 143
    assert err.count("\n") == 1 and "stopped by SIGTERM after step" in err
    step = int(err.split("after step ")[1].split(";")[0])
    assert checkpoint.latest(out / "checkpoints").name == f"step_{step:08d}"
    resume = err.split("Resume with: ")[1].strip().split()
    assert resume[-1] == "--resume" and resume[:2] == ["jaxrnn", "train"]
    resume[resume.index("100000")] = str(step + 2)
    assert exit_code(resume[1:]) == 0
    assert json.loads((out / "summary.json").read_text())["resumed_from"] == step


# --------------------------------------------------------------------------- composable


def test_make_train_step_in_a_hand_written_loop_equals_fit():
    result = _fit(steps=6, eval_every=6)
    k_init, k_data, k_drop, _ = jax.random.split(jax.random.key(0), 4)
    tx = jax.tree.map(lambda x: x, training.optimizer(1e-2))
    import optax

    tx = optax.apply_if_finite(tx, max_consecutive_errors=2**31 - 1)
    step = jax.jit(training.make_train_step(MODEL, tx, TASK.loss, TASK.metric))
    state = training.TrainState.create(MODEL.init(k_init, TASK.input_size), tx)
    for s in range(6):
        state, stats = step(state, TASK.sample(jax.random.fold_in(k_data, s), 8), k_drop)
    _assert_same_state(state, result.state)
    assert stats["loss"].item() == result.history[-1]["loss"]


def _sum_data(n, seed):
    xs = jax.random.normal(jax.random.key(seed), (n, 6, 2))
    return Batch(xs, jnp.sum(xs[:, :, 0], axis=1), jnp.full((n,), 6))


def _mse_at_end(outputs, batch):
    return jnp.mean((outputs[:, -1, 0] - batch.targets) ** 2)


def test_fit_trains_on_the_users_arrays_and_batches():
    train, held_out = _sum_data(256, 0), _sum_data(64, 1)
    baseline = float(jnp.var(held_out.targets))  # the best constant prediction
    model = training.readout(jaxrnn.gru(16), 1)
    kwargs = {"steps": 150, "batch_size": 32, "key": jax.random.key(0), "progress": False}
    result = training.fit(model, train, training.optimizer(1e-2), loss=_mse_at_end,
                          eval_data=held_out, **kwargs)  # fmt: skip
    assert result.summary["final_eval_loss"] < 0.2 * baseline
    assert result.summary["baseline"] is None and result.summary["task"] is None

    batches = [
        Batch(train.xs[i : i + 32], train.targets[i : i + 32], None) for i in range(0, 96, 32)
    ]
    short = training.fit(model, batches, training.optimizer(1e-2), loss=_mse_at_end,
                         eval_data=[tuple(held_out)], **kwargs)  # fmt: skip
    assert short.summary["steps"] == 3  # the iterable ran out
    assert {"eval_loss", "loss"} <= set(short.history[-1])

    with pytest.raises(ValueError, match="loss: expected a function loss"):
        training.fit(model, train, training.optimizer(1e-2), **kwargs)
    with pytest.raises(ValueError, match="batch_size: expected at most the 256 sequences"):
        training.fit(model, train, training.optimizer(1e-2), loss=_mse_at_end,
                     **{**kwargs, "batch_size": 300})  # fmt: skip
    with pytest.raises(ValueError, match=r"data.targets: expected 256 rows"):
        training.fit(model, train._replace(targets=train.targets[:5]), training.optimizer(1e-2),
                     loss=_mse_at_end, **kwargs)  # fmt: skip
    with pytest.raises(ValueError, match="loss: a Task brings its own"):
        training.fit(model, TASK, training.optimizer(1e-2), loss=_mse_at_end, **kwargs)


def test_a_resumed_iterable_skips_the_batches_already_used(tmp_path):
    train = _sum_data(64, 0)
    batches = [Batch(train.xs[i : i + 8], train.targets[i : i + 8], None) for i in range(0, 64, 8)]
    kwargs = {"loss": _mse_at_end, "key": jax.random.key(0), "progress": False}
    whole = training.fit(MODEL, batches, training.optimizer(1e-2), steps=8, **kwargs)
    training.fit(MODEL, batches, training.optimizer(1e-2), steps=5, out=tmp_path,
                 checkpoint_every=5, **kwargs)  # fmt: skip
    resumed = training.fit(MODEL, batches, training.optimizer(1e-2), steps=8, out=tmp_path,
                           resume=True, **kwargs)  # fmt: skip
    _assert_same_state(resumed.state, whole.state)


def test_numpy_and_jax_scalars_are_numbers(tmp_path):
    config = {"lr": np.float32(1e-2), "hidden": np.int64(8), "steps": jnp.int32(2), "out": tmp_path}
    result = _fit(out=tmp_path / "run", steps=np.int64(2), config=config,
                  batch_size=jnp.int32(8))  # fmt: skip
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["config"] == {"lr": float(np.float32(1e-2)), "hidden": 8, "steps": 2,
                                 "out": str(tmp_path)}  # fmt: skip
    assert result.summary["steps"] == 2
    training.optimizer(
        np.float32(1e-3), clip=jnp.float32(1.0), schedule="cosine", steps=np.int64(5)
    )
    with pytest.raises(TypeError, match=r"config\['bad'\]: expected a JSON value .* got object"):
        _fit(steps=1, config={"bad": object()})
    with pytest.raises(ValueError, match="learning_rate: expected a positive number, got nan"):
        training.optimizer(float("nan"))


def test_evaluate_and_read_metrics(tmp_path):
    params = MODEL.init(jax.random.key(0), TASK.input_size)
    held_out = [TASK.sample(jax.random.key(i), 16, "eval") for i in range(2)]
    result = training.evaluate(MODEL, params, held_out, TASK.loss)
    losses = [TASK.loss(MODEL.apply(params, b.xs, b.lengths), b) for b in held_out]
    assert result == {"eval_loss": pytest.approx(float(np.mean(losses)), rel=1e-6)}
    run = _fit(out=tmp_path, steps=4, log_every=2)
    assert training.read_metrics(tmp_path) == run.history
    with pytest.raises(ValueError, match="batches: expected at least one batch"):
        training.evaluate(MODEL, params, [], TASK.loss)


# --------------------------------------------------------------------------- text and plots


def test_sample_text_is_the_models_own_continuation():
    task = tasks.text(16)
    model = training.readout(jaxrnn.gru(8), task.output_size)
    params = model.init(jax.random.key(0), task.input_size)
    greedy = training.sample_text(model, params, "def f", 4, jax.random.key(0), temperature=0)
    assert greedy.startswith("def f") and len(greedy) == 9
    # Greedy decoding by hand: the whole text re-read at every step gives the same characters.
    text = "def f"
    for _ in range(4):
        logits = model.apply(params, jax.nn.one_hot(tasks.encode(text), 97)[None])
        text += tasks.decode(jnp.argmax(logits[0, -1])[None])
    assert greedy == text
    cold = training.sample_text(model, params, "def f", 4, jax.random.key(0), temperature=1e-40)
    assert cold == greedy  # a tiny temperature sharpens towards the argmax, never overflows
    drawn = {training.sample_text(model, params, "x", 30, jax.random.key(k)) for k in range(3)}
    assert len(drawn) == 3  # draws from the distribution differ by key
    with pytest.raises(ValueError, match="prompt: expected a non-empty string"):
        training.sample_text(model, params, "", 5, jax.random.key(0))
    with pytest.raises(ValueError, match="model: expected 97 outputs"):
        training.sample_text(MODEL, MODEL.init(jax.random.key(0), 97), "a", 5, jax.random.key(0))


def test_sample_and_plot_commands(tmp_path, capsys):
    out = str(tmp_path / "text")
    argv = ["train", "--task", "text", "--seq-len", "8", "--hidden", "8", "--steps", "4",
            "--batch-size", "4", "--log-every", "1", "--checkpoint-every", "2", "--carry-grads",
            "--quiet", "--out", out]  # fmt: skip
    assert exit_code(argv) == 0
    capsys.readouterr()
    assert (
        exit_code(["sample", out, "--prompt", "for ", "--length", "40", "--temperature", "0"]) == 0
    )
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("# step_00000004 (step 4)") and printed[1].startswith("for ")
    assert exit_code(["plot", out]) == 0
    assert (tmp_path / "text" / "curves.png").is_file()
    assert (tmp_path / "text" / "carry_grad_heatmap.png").is_file()
    (tmp_path / "text" / "checkpoints" / "step_00000004" / "meta.json").write_text("{")
    capsys.readouterr()
    assert exit_code(["sample", out, "--length", "3", "--temperature", "0.00"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("# step_00000002 (step 2)")  # fell back past the damage
    assert "step_00000004: meta.json is unreadable" in captured.err
    assert exit_code(["plot", str(tmp_path / "none")]) == 2
    assert exit_code(["sample", str(tmp_path / "none")]) == 2
    assert capsys.readouterr().err.count("none is not a directory\n") == 2
    (tmp_path / "empty").mkdir()
    assert exit_code(["sample", str(tmp_path / "empty")]) == 2
    assert "RUN_DIR: no checkpoint in" in capsys.readouterr().err


# --------------------------------------------------------------------------- one-line errors


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["train", "--seed", str(2**64)], 2, "--seed: expected an integer in [0, 2**63)"),
        (["showcase", "--seed", "-1"], 2, "--seed: expected an integer in [0, 2**63)"),
        (["train", "--task", "text", "--cell", "lstm-chrono", "--seq-len", "1"], 2, "lstm-chrono"),
        (["train", "--resume", "--overwrite"], 2, "--overwrite: cannot be combined with --resume"),
        (["train", "--distributed", "--steps", "1"], 2, "--distributed: could not join"),
        (["sample", "."], 2, "RUN_DIR: no checkpoint in"),
    ],
)
def test_cli_failures_are_one_line(tmp_path, capsys, monkeypatch, argv, code, message):
    for name in ("JAX_COORDINATOR_ADDRESS", "SLURM_JOB_ID", "OMPI_COMM_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    assert exit_code(argv) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


@pytest.mark.smoke
def test_help_and_version_without_jax():
    probe = textwrap.dedent("""
        import sys
        from jaxrnn._cli import main
        try:
            main(["train", "--help"])
        except SystemExit:
            pass
        print("jax imported:", "jax" in sys.modules)
    """)
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            env=ENV, check=True)  # fmt: skip
    assert "jax imported: False" in result.stdout and "--overwrite" in result.stdout
    version = subprocess.run([sys.executable, "-m", "jaxrnn", "--version"], capture_output=True,
                             text=True, env=ENV, check=True)  # fmt: skip
    assert version.stdout.strip() == f"jaxrnn {jaxrnn.__version__}"


def test_progress_shows_an_eta():
    class Terminal:
        text = ""

        def write(self, text):
            self.text += text

        def flush(self):
            pass

        def isatty(self):
            return True

    stream = Terminal()
    progress = runlog.Progress(stream, 100, "correct")
    progress.show({"step": 25, "loss": 0.5, "correct": 0.1, "grad_norm": 1.0, "steps_per_s": 5.0})
    assert stream.text.endswith("ETA 15s") and " 25/100" in stream.text
    assert runlog.format_seconds(3725) == "1h02m" and runlog.format_seconds(75.2) == "1m15s"
    assert runlog.format_rate(12.5) == "12.5 steps/s" and runlog.format_rate(0.04) == "25.0 s/step"
    assert runlog.format_rate(None) == runlog.format_rate(float("nan")) == "n/a"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert runlog.read_metrics("/nonexistent/run") == []


# --------------------------------------------------------------------------- your own data


def _labelled(n, t, seed):
    xs = np.random.default_rng(seed).normal(size=(n, t, 2)).astype(np.float32)
    lengths = np.random.default_rng(seed + 1).integers(1, t + 1, n)
    first = xs[:, 0, 0] > 0  # the label is the sign of the first input
    return xs, first.astype(np.int32), lengths


def test_from_arrays_chooses_the_loss_the_targets_call_for():
    xs, labels, lengths = _labelled(40, 6, 0)
    per_step = np.tile(labels[:, None], (1, 6))
    regression = tasks.from_arrays(xs, xs[:, :, 1].sum(1), lengths)
    at_end = tasks.from_arrays(xs, labels, lengths)
    every = tasks.from_arrays(xs, per_step, lengths, eval_data=(xs[:8], per_step[:8]))
    assert (regression.output_size, regression.metric_name) == (1, "r2")
    assert (at_end.output_size, at_end.metric_name) == (2, "accuracy")
    assert every.output_size == 2 and every.seq_len == 6
    # A model that outputs the train split's class log-frequencies scores the baseline exactly.
    batch = at_end.sample(jax.random.key(0), 8, "eval")
    train = at_end.sample(jax.random.key(0), 10_000, "train")  # with replacement: all 36 rows
    counts = np.bincount(np.asarray(train.targets), minlength=2)
    assert counts.sum() == 10_000
    held = at_end.sample(jax.random.key(1), 4, "eval")
    assert held.xs.shape == (4, 6, 2) and batch.lengths.min() >= 1
    constant = jnp.zeros((8, 6, 1)) + float(np.mean(xs[:, :, 1].sum(1)))
    assert float(regression.loss(constant, regression.sample(jax.random.key(0), 8))) >= 0

    with pytest.raises(ValueError, match=r"targets: expected float \[N\] or \[N, O\]"):
        tasks.from_arrays(xs, labels[:5])
    with pytest.raises(ValueError, match=r"lengths: expected values in \[1, T=6\], got \[0"):
        tasks.from_arrays(xs, labels, np.zeros(40, np.int64))
    with pytest.raises(ValueError, match="xs: expected finite values"):
        tasks.from_arrays(np.full_like(xs, np.nan), labels)
    with pytest.raises(ValueError, match=r"targets: expected class indices in \[0, 2\*\*24\)"):
        tasks.from_arrays(xs, labels - 1)
    with pytest.raises(ValueError, match="eval_data: expected xs"):
        tasks.from_arrays(xs, labels, eval_data=(xs[:, :3], labels))


def test_the_baseline_is_the_loss_of_the_best_constant_prediction():
    xs, labels, _ = _labelled(50, 4, 3)
    held_xs, held_labels, _ = _labelled(20, 4, 4)
    task = tasks.from_arrays(xs, labels, eval_data=(held_xs, held_labels))
    frequencies = (np.bincount(labels, minlength=2) + 1) / (len(labels) + 2)
    logits = jnp.broadcast_to(jnp.log(jnp.asarray(frequencies, jnp.float32)), (20, 4, 2))
    whole = Batch(jnp.asarray(held_xs), jnp.asarray(held_labels), jnp.full((20,), 4))
    np.testing.assert_allclose(task.loss(logits, whole), task.baseline, rtol=1e-6)
    targets = xs[:, :, 0].sum(1)
    regression = tasks.from_arrays(xs, targets, eval_data=(held_xs, held_xs[:, :, 0].sum(1)))
    expected = np.mean((held_xs[:, :, 0].sum(1) - targets.mean()) ** 2)
    np.testing.assert_allclose(regression.baseline, expected, rtol=1e-5)


def test_train_on_your_own_data_from_the_command_line(tmp_path, capsys):
    xs, labels, lengths = _labelled(200, 5, 0)
    data = tmp_path / "signs.npz"
    np.savez(data, xs=xs, targets=labels, lengths=lengths)
    argv = ["train", "--data", str(data), "--cell", "gru", "--hidden", "8", "--steps", "200",
            "--batch-size", "16", "--lr", "0.01", "--quiet"]  # fmt: skip
    monkey_out = ["--out", str(tmp_path / "run")]
    assert exit_code([*argv, *monkey_out]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["task"] == "signs" and summary["final_eval_loss"] < 0.5 * summary["baseline"]
    np.savez(data, xs=xs, targets=1 - labels, lengths=lengths)  # the file changed
    assert exit_code([*argv, *monkey_out, "--resume"]) == 2
    assert "--data (the file's contents changed)" in capsys.readouterr().err
    for bad, message in [
        (["--task", "copy"], "--task: cannot be combined with --data"),
        (["--seq-len", "5"], "--seq-len: cannot be combined with --data"),
    ]:
        assert exit_code([*argv, *bad, *monkey_out]) == 2
        assert message in capsys.readouterr().err
    np.savez(data, inputs=xs)
    assert exit_code([*argv, "--out", str(tmp_path / "bad")]) == 2
    assert "lacks ['targets', 'xs']" in capsys.readouterr().err
    data.write_bytes(b"not a zip")
    assert exit_code([*argv, "--out", str(tmp_path / "bad2")]) == 2
    assert "--data: cannot read" in capsys.readouterr().err


# --------------------------------------------------------------------------- hostile uses


def test_only_runs_are_moved_aside(tmp_path, monkeypatch):
    project = tmp_path / "project"
    project.mkdir()
    (project / "notes.txt").write_text("mine")
    with pytest.raises(runlog.RunDirError, match="holds files that are not a run"):
        runlog.RunDir(project, overwrite=True)
    assert (project / "notes.txt").read_text() == "mine"
    with pytest.raises(runlog.RunDirError, match=r"resume: nothing to resume, no run in"):
        runlog.RunDir(tmp_path / "missing", resume=True)
    assert not (tmp_path / "missing").exists()  # nothing left behind
    (tmp_path / "file").write_text("")
    with pytest.raises(runlog.RunDirError, match="is a file, expected a directory"):
        runlog.RunDir(tmp_path / "file")
    run = tmp_path / "run"
    runlog.RunDir(run).close()
    (run / "metrics.jsonl").write_text('{"step": 1}\n')
    monkeypatch.chdir(run)
    with runlog.RunDir(".", overwrite=True) as moved:  # "." has no name of its own
        assert moved.moved_to.parent == tmp_path and moved.moved_to.name.startswith("run.old-")


def test_a_stop_asked_for_at_start_up_is_kept(tmp_path):
    # A known handler before, whatever an earlier test in this worker left installed.
    original = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with runlog.StopSignals() as outer:
            os.kill(os.getpid(), signal.SIGINT)  # e.g. while JAX is being imported
            assert outer.received == signal.SIGINT
            with pytest.raises(training.Stopped) as stop:
                _fit(out=tmp_path, steps=50)
        assert stop.value.step == 1 and stop.value.checkpoint.name == "step_00000001"
        assert stop.value.exit_code == 130
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, original)


def test_damaged_checkpoints_are_set_aside_on_resume(tmp_path):
    _fit(out=tmp_path, steps=4, checkpoint_every=2)
    (tmp_path / "checkpoints" / "step_00000098").mkdir()  # junk of a high step
    with pytest.warns(UserWarning, match="step_00000098: meta.json is missing"):
        _fit(out=tmp_path, steps=8, checkpoint_every=2, resume=True)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step_00000006", "step_00000008", "step_00000098.damaged"]
    with pytest.raises(ValueError, match=r"steps: the run in .* is at step 8; expected at least"):
        _fit(out=tmp_path, steps=5, resume=True)
    (tmp_path / "metrics.jsonl").unlink()
    with pytest.warns(UserWarning, match="no metric lines up to step 8"):
        _fit(out=tmp_path, steps=9, resume=True)


def test_summaries_are_strict_json(tmp_path):
    with runlog.RunDir(tmp_path) as run:
        run.write_summary({"final_eval_loss": float("nan"), "curve": [1.0, float("inf")]})

    def refuse(token):
        raise ValueError(token)

    summary = json.loads((tmp_path / "summary.json").read_text(), parse_constant=refuse)
    assert summary == {"final_eval_loss": None, "curve": [1.0, None]}


def test_api_misuse_is_named():
    params = MODEL.init(jax.random.key(0), TASK.input_size)
    with pytest.raises(TypeError, match=r"tx: expected an optax\.GradientTransformation"):
        training.TrainState.create(params, "adam")
    with pytest.raises(TypeError, match=r"tx: expected an optax\.GradientTransformation"):
        training.fit(MODEL, TASK, None, steps=1, batch_size=2, key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"metric: expected a scalar, got shape \(4,\)"):
        _fit(steps=1, batch_size=4, data=TASK._replace(metric=lambda o, b: o[:, -1, 0]))
    with pytest.raises(ValueError, match=r"steps: expected fewer than 2\*\*31"):
        _fit(steps=2**31)
    with pytest.raises(TypeError, match=r"data: expected a jaxrnn\.tasks\.Task, .* got dict"):
        training.fit(MODEL, {"xs": 1}, training.optimizer(1e-2), loss=_mse_at_end, steps=1,
                     key=jax.random.key(0))  # fmt: skip
    # (Under pytest the array annotations catch it first; elsewhere the check in the body.)
    with pytest.raises((ValueError, jaxtyping.TypeCheckError), match="xs"):
        MODEL.apply(params, jnp.ones((5, 2)))
    batch = TASK.sample(jax.random.key(0), 4, "eval")
    assert training.evaluate(MODEL, params, tuple(batch), TASK.loss) == training.evaluate(
        MODEL, params, [batch], TASK.loss
    )


def test_data_files_users_get_wrong(tmp_path, capsys):
    xs, labels, _ = _labelled(20, 4, 0)
    huge = labels.copy()
    huge[0] = 10**9
    with pytest.raises(ValueError, match=r"targets: expected class indices in \[0, 2\*\*24\)"):
        tasks.from_arrays(xs, huge)
    with pytest.raises(ValueError, match="targets: expected finite values"):
        tasks.from_arrays(xs, np.full(20, np.nan, np.float32))
    with pytest.raises(ValueError, match=r"targets: expected float \[N\] or \[N, O\]"):
        tasks.from_arrays(xs, np.zeros((20, 0), np.float32))
    argv = ["train", "--hidden", "4", "--steps", "1", "--batch-size", "2", "--quiet"]
    cases = {
        "one.npy": (lambda p: np.save(p, xs), "holds one array; expected an .npz"),
        "half.npz": (
            lambda p: np.savez(p, xs=xs, targets=labels, eval_xs=xs),
            "expected eval_xs and eval_targets together",
        ),
    }
    for i, (name, (write, message)) in enumerate(cases.items()):
        write(tmp_path / name)
        out = ["--out", str(tmp_path / f"run{i}")]
        assert exit_code([*argv, "--data", str(tmp_path / name), *out]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    (tmp_path / "afile").write_text("")
    assert exit_code([*argv, "--out", str(tmp_path / "afile")]) == 2
    assert "is a file, expected a directory" in capsys.readouterr().err
    assert exit_code(["plot", str(tmp_path), "--out", str(tmp_path / "afile")]) == 2
    assert "--out: cannot write to" in capsys.readouterr().err

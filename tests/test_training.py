"""Training: optax chains, skipped non-finite updates, metrics, checkpoints and resumption."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn
from jaxrnn import checkpoint, tasks, training

TASK = tasks.adding(8)


def _fit(model=None, tx=None, **kwargs):
    options = {"steps": 20, "batch_size": 8, "key": jax.random.key(0), "progress": False}
    model = model or training.readout(jaxrnn.lstm(8, forget_bias=1.0), 1)
    return training.fit(model, TASK, tx or training.optimizer(1e-2), **(options | kwargs))


@pytest.mark.smoke
def test_the_loss_decreases_and_the_step_compiles_once():
    model = training.readout(jaxrnn.gru(16), 1)
    params = model.init(jax.random.key(3), TASK.input_size)
    batch = TASK.sample(jax.random.key(4), 256, "eval")
    before = TASK.loss(model.apply(params, batch.xs, batch.lengths), batch)
    result = _fit(model, params=params, steps=60, eval_every=30, log_every=30)
    after = TASK.loss(model.apply(result.state.params, batch.xs, batch.lengths), batch)
    assert float(after) < 0.5 * float(before)  # from E[target²] ≈ 1.17 towards 1/6
    assert result.summary["compiles"] == 1
    assert [line["step"] for line in result.history] == [30, 60]
    assert int(result.state.step) == 60


def test_clipping_strategies():
    params = {"w": jnp.zeros(3)}
    g = {"w": jnp.array([3.0, -4.0, 0.0])}  # ‖g‖ = 5

    def first_update(**kwargs):
        tx = training.optimizer(0.1, name="sgd", clip=1.0, **kwargs)
        return tx.update(g, tx.init(params), params)[0]["w"]

    # SGD's first step is -lr·g (the momentum trace starts at g).
    np.testing.assert_allclose(first_update(clip_mode="norm"), -0.1 * g["w"] / 5, rtol=1e-6)
    np.testing.assert_allclose(first_update(clip_mode="value"), [-0.1, 0.1, 0.0], rtol=1e-6)
    assert np.isfinite(first_update(clip_mode="adaptive")).all()


def test_schedules_and_logged_learning_rate():
    result = _fit(tx=training.optimizer(0.01, schedule="cosine", steps=20), log_every=10)
    lrs = [line["lr"] for line in result.history if line["step"] in (10, 20)]
    # The logged lr is the one the last update used: cosine decay at steps 9 and 19 of 20.
    expected = [0.01 * 0.5 * (1 + np.cos(np.pi * s / 20)) for s in (9, 19)]
    np.testing.assert_allclose(lrs, expected, rtol=1e-5)
    with pytest.raises(ValueError, match="steps: schedule 'cosine' needs the number of steps"):
        training.optimizer(0.01, schedule="cosine")
    with pytest.raises(ValueError, match=r"clip_mode: expected one of \['adaptive', 'norm'"):
        training.optimizer(0.01, clip=1.0, clip_mode="elementwise")


def _poisoned(task, rate):
    """``task`` with the inputs of about ``rate`` of the batches replaced by NaN."""

    def sample(key, batch_size, split="train"):
        batch = task.sample(key, batch_size, split)
        bad = (jax.random.uniform(jax.random.fold_in(key, 7)) < rate) & (split == "train")
        return batch._replace(xs=jnp.where(bad, jnp.nan, batch.xs))

    return task._replace(sample=sample)


def test_non_finite_updates_are_skipped_and_counted():
    task = _poisoned(TASK, 0.3)
    model = training.readout(jaxrnn.elman(4), 1)
    result = training.fit(
        model,
        task,
        training.optimizer(1e-2),
        steps=30,
        batch_size=4,
        key=jax.random.key(1),
        log_every=1,
        progress=False,
    )
    nan_steps = sum(not np.isfinite(line["loss"]) for line in result.history)
    assert 0 < nan_steps < 30
    assert result.summary["skipped_updates"] == result.history[-1]["skipped"] == nan_steps
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(result.state.params))


def test_a_run_that_keeps_diverging_stops_with_an_error():
    with pytest.raises(
        FloatingPointError, match="training diverged: more than 2 non-finite gradients"
    ):
        training.fit(
            training.readout(jaxrnn.elman(4), 1),
            _poisoned(TASK, 1.0),
            training.optimizer(1e-2),
            steps=10,
            batch_size=4,
            key=jax.random.key(1),
            log_every=1,
            max_consecutive_skips=2,
            progress=False,
        )


class _Kill(BaseException):
    """Stands for the process being killed between two steps."""


def _killer(at_step):
    class Stream:
        def write(self, text):
            if f" {at_step}/" in text:
                raise _Kill

        def flush(self):
            pass

    return Stream()


def _without_timings(history):
    return [{k: v for k, v in line.items() if k != "steps_per_s"} for line in history]


def test_resuming_a_killed_run_is_bit_identical(tmp_path):
    kwargs = {"steps": 24, "log_every": 2, "eval_every": 6, "checkpoint_every": 5}
    whole = _fit(out=tmp_path / "whole", **kwargs)
    with pytest.raises(_Kill):
        _fit(out=tmp_path / "killed", progress=_killer(18), **kwargs)
    assert checkpoint.latest(tmp_path / "killed" / "checkpoints").name == "step_00000015"
    lines = (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["step"] == 18  # logged past the checkpoint before the kill
    resumed = _fit(out=tmp_path / "killed", resume=True, **kwargs)
    assert resumed.summary["resumed_from"] == 15 and resumed.summary["steps_this_run"] == 9
    for a, b in zip(jax.tree.leaves(resumed.state), jax.tree.leaves(whole.state), strict=True):
        np.testing.assert_array_equal(a, b)
    on_disk = [
        json.loads(line)
        for line in (tmp_path / "killed" / "metrics.jsonl").read_text().split("\n")
        if line
    ]
    assert _without_timings(on_disk) == _without_timings(whole.history)
    assert resumed.summary["final_eval_loss"] == whole.summary["final_eval_loss"]


def test_resume_refuses_another_run_and_an_empty_directory(tmp_path):
    _fit(out=tmp_path, steps=5, checkpoint_every=5, config={"hidden": 8})
    with pytest.raises(
        training.ConfigMismatch, match=r"another config: hidden \(saved 8, given 16\)"
    ):
        _fit(out=tmp_path, steps=5, resume=True, config={"hidden": 16})
    with pytest.raises(ValueError, match="resume: nothing to resume, no run in"):
        _fit(out=tmp_path / "empty", resume=True)
    with pytest.raises(
        ValueError, match="checkpoint_every: needs an output directory, got out=None"
    ):
        _fit(checkpoint_every=5)


def test_a_crash_while_saving_leaves_the_last_checkpoint(tmp_path, monkeypatch):
    state = {"w": np.arange(3.0)}
    first = checkpoint.save(tmp_path, 1, state)

    def crash(*args, **kwargs):
        raise _Kill

    monkeypatch.setattr(np.lib.format, "write_array", crash)
    with pytest.raises(_Kill):
        checkpoint.save(tmp_path, 2, {"w": np.zeros(3)})
    assert checkpoint.latest(tmp_path) == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_00000001"]
    restored, _ = checkpoint.restore(first, state)
    np.testing.assert_array_equal(restored["w"], state["w"])
    with pytest.raises(ValueError, match=r"w: expected shape \(4,\) and dtype float64"):
        checkpoint.restore(first, {"w": np.zeros(4)})


def test_readout_takes_stacks_and_user_cells():
    stack = jaxrnn.stack(jaxrnn.lstm(4), num_layers=2, bidirectional=True, dropout=0.5)
    model = training.readout(stack, 3)
    params = model.init(jax.random.key(0), 2)
    xs = jnp.ones((5, 7, 2))
    assert model.apply(params, xs).shape == (5, 7, 3)
    dropped = model.apply(params, xs, key=jax.random.key(1))
    assert not np.allclose(dropped, model.apply(params, xs))  # dropout is on with a key

    base = jaxrnn.elman(4)
    user = jaxrnn.Cell(base.init, base.initial_carry, lambda p, c, x: base.step(p, c, x))
    result = _fit(training.readout(user, 1), steps=3)
    assert result.summary["steps"] == 3
    with pytest.raises(TypeError, match=r"rnn: expected a jaxrnn\.Cell or jaxrnn\.Stack, got dict"):
        training.readout({}, 1)


def test_mixed_precision_trains_the_adding_problem_below_baseline():
    task = tasks.adding(10)
    model = training.readout(jaxrnn.lstm(32, forget_bias=1.0), 1, compute_dtype=jnp.bfloat16)
    result = training.fit(
        model,
        task,
        training.optimizer(1e-2, clip=1.0),
        steps=200,
        batch_size=32,
        key=jax.random.key(0),
        eval_every=200,
        progress=False,
    )
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(result.state.params))
    assert result.summary["final_eval_loss"] < 0.5 * task.baseline


def test_data_parallel_over_four_devices_matches_one_device():
    assert len(jax.devices()) == 4  # the test session's emulated CPU devices (conftest.py)
    model = training.readout(jaxrnn.lstm(8), 1)
    runs = [
        training.fit(model, tasks.adding(8), training.optimizer(1e-2), steps=6, batch_size=8,
                     key=jax.random.key(0), log_every=1, devices=d, progress=False)
        for d in (None, 4)
    ]  # fmt: skip
    assert len(runs[1].state.params.w_out.sharding.device_set) == 4
    one, four = ([line["loss"] for line in r.history] for r in runs)
    np.testing.assert_allclose(four, one, rtol=1e-5)


def test_data_parallel_errors():
    with pytest.raises(ValueError, match=r"devices: expected at most the 4 available device\(s\)"):
        _fit(devices=5)
    with pytest.raises(ValueError, match="devices: expected a positive integer, got 0"):
        _fit(devices=0)

"""Streaming TBPTT(k1, k2) against the full-sequence scan and hand-written updates."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxrnn

T, B, I, H = 47, 3, 2, 5
cell = jaxrnn.lstm(H)
params0 = cell.init(jax.random.key(0), I, jnp.float64)
xs = jax.random.normal(jax.random.key(1), (T, B, I), jnp.float64)
targets = jax.random.normal(jax.random.key(2), (T, B), jnp.float64)
carry0 = cell.initial_carry((B,), jnp.float64)


def apply(p, c, x):
    return jaxrnn.scan(cell, p, x, carry=c)


def loss_fn(ys, target):
    return jnp.mean((ys[..., 0] - target) ** 2)


@pytest.mark.parametrize(("k1", "k2"), [(5, 5), (4, 11)])
def test_with_frozen_params_the_state_runs_on_as_one_scan(k1, k2):
    run = jaxrnn.tbptt(apply, loss_fn, optax.sgd(0.0), k1, k2)
    state = run.init(params0, carry0)
    _, ys = apply(params0, carry0, xs)
    n = run.num_updates(T)
    assert n == (T - k2) // k1 + 1
    for u in range(n):
        state, loss = run.update(state, xs, targets)
        start = u * k1 + k2 - k1  # the k1 scored steps of update u
        np.testing.assert_allclose(
            loss, loss_fn(ys[start : start + k1], targets[start : start + k1]), rtol=1e-12
        )
    assert int(state.position) == n * k1
    carry_n, _ = apply(params0, carry0, xs[: n * k1])
    for a, b in zip(jax.tree.leaves(state.carry), jax.tree.leaves(carry_n), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_two_updates_equal_hand_written_sgd():
    k1, k2, lr = 6, 10, 0.1
    run = jaxrnn.tbptt(apply, loss_fn, optax.sgd(lr), k1, k2)
    state = run.init(params0, carry0)
    state, _ = run.update(state, xs, targets)
    state, _ = run.update(state, xs, targets)

    def window_loss(p, c, start):
        _, ys = apply(p, c, xs[start : start + k2])
        return loss_fn(ys[k2 - k1 :], targets[start + k2 - k1 : start + k2])

    step = lambda p, g: jax.tree.map(lambda a, b: a - lr * b, p, g)  # noqa: E731
    params1 = step(params0, jax.grad(window_loss)(params0, carry0, 0))
    carry_k1, _ = apply(params0, carry0, xs[:k1])  # the forward pass of update 1, old params
    params2 = step(params1, jax.grad(window_loss)(params1, carry_k1, k1))
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(params2), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-13)


def test_errors():
    with pytest.raises(ValueError, match="k2: expected at least k1 = 5, got 3"):
        jaxrnn.tbptt(apply, loss_fn, optax.sgd(0.1), 5, 3)
    with pytest.raises(ValueError, match="k1: expected a positive integer, got 0"):
        jaxrnn.tbptt(apply, loss_fn, optax.sgd(0.1), 0)
    run = jaxrnn.tbptt(apply, loss_fn, optax.sgd(0.1), 5, 60)
    with pytest.raises(ValueError, match="xs: expected a stream of at least k2 = 60 steps, got 47"):
        run.update(run.init(params0, carry0), xs, targets)
    assert run.num_updates(47) == 0


def dict_loss_fn(ys, target):
    return jnp.mean((ys[..., 0] - target["y"]) ** 2) + jnp.mean(target["w"] ** 2)


@pytest.mark.parametrize(
    ("stream", "loss", "message"),
    [
        (
            targets[:40],
            loss_fn,
            r"targets: expected a stream of 47 steps .*, got 40 steps \(shape \(40, 3\)\)",
        ),
        (
            targets[:, 0].sum(),
            loss_fn,
            r"targets: expected a stream of 47 steps .*, got a scalar \(shape \(\)\)",
        ),
        (
            {"y": targets, "w": targets[:46]},
            dict_loss_fn,
            r"targets\['w'\]: expected a stream of 47 steps .*, got 46 steps",
        ),
    ],
)
def test_targets_shorter_than_the_stream_are_refused_at_trace_time(stream, loss, message):
    # dynamic_slice clamps its start: a shorter stream would silently give misaligned targets.
    run = jaxrnn.tbptt(apply, loss, optax.sgd(0.1), 5)
    with pytest.raises(ValueError, match=message):
        run.update(run.init(params0, carry0), xs, stream)


def test_targets_as_a_pytree_of_full_streams_are_accepted():
    run = jaxrnn.tbptt(apply, dict_loss_fn, optax.sgd(0.0), 5)
    _, loss = run.update(run.init(params0, carry0), xs, {"y": targets, "w": 2 * targets})
    _, ys = apply(params0, carry0, xs[:5])
    np.testing.assert_allclose(
        loss, dict_loss_fn(ys, {"y": targets[:5], "w": 2 * targets[:5]}), rtol=1e-12
    )


@pytest.mark.parametrize("integer", [np.int64, np.int32, jnp.int32])
def test_window_sizes_may_be_numpy_or_jax_integers(integer):
    run = jaxrnn.tbptt(apply, loss_fn, optax.sgd(0.0), integer(4), integer(6))
    assert run.num_updates(T) == (T - 6) // 4 + 1
    state = run.init(params0, carry0)
    state, _ = run.update(state, xs, targets)
    state, _ = run.update(state, xs, targets)
    assert state.position.dtype == jnp.int32 and int(state.position) == 8
    carry_8, _ = apply(params0, carry0, xs[:8])
    for a, b in zip(jax.tree.leaves(state.carry), jax.tree.leaves(carry_8), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="k2: expected at least k1 = 4, got 3"):
        jaxrnn.tbptt(apply, loss_fn, optax.sgd(0.1), integer(4), integer(3))

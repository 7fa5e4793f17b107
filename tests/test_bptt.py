"""Truncated BPTT, checkpointing through time and per-step carry-gradient clipping."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn
from tests.helpers import random_carry, vjp_all

T, B, I = 10, 3, 2
LENGTHS = jnp.array([10, 7, 0])
CELLS = {"lstm": lambda: jaxrnn.lstm(4), "gru": lambda: jaxrnn.gru(4)}


def _setup(name):
    cell = CELLS[name]()
    k_params, k_carry, k_x = jax.random.split(jax.random.key(0), 3)
    params = cell.init(k_params, I, jnp.float64)
    carry = random_carry(cell, k_carry, (B,), jnp.float64)
    xs = jax.random.normal(k_x, (T, B, I), jnp.float64)
    return cell, params, carry, xs


def _assert_tree_close(a, b, tol=1e-12):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(u, v, rtol=tol, atol=tol)


def _chunked_reference(cell, k, reverse):
    """BPTT(k) written out: one sequence at a time, a stop_gradient at every chunk start."""

    def run(params, xs, carry, lengths):
        finals, ys = [], []
        for b in range(xs.shape[1]):
            c = jax.tree.map(lambda a, b=b: a[b], carry)
            n = int(lengths[b])
            order = list(reversed(range(n))) if reverse else list(range(n))
            out = [jnp.zeros(c.h.shape if hasattr(c, "h") else c.shape, xs.dtype)] * xs.shape[0]
            for index, t in enumerate(order):
                if index > 0 and index % k == 0:
                    c = jax.lax.stop_gradient(c)
                c, out[t] = cell.step(params, c, xs[t, b])
            finals.append(c)
            ys.append(jnp.stack(out))
        return jax.tree.map(lambda *a: jnp.stack(a), *finals), jnp.stack(ys, axis=1)

    return run


@pytest.mark.parametrize("name", list(CELLS))
@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_truncate_equals_hand_chunked_bptt(name, k, reverse):
    cell, params, carry, xs = _setup(name)
    got = vjp_all(
        lambda p, x, c: jaxrnn.scan(
            cell, p, x, carry=c, lengths=LENGTHS, reverse=reverse, truncate=k
        ),
        (params, xs, carry),
    )
    reference = _chunked_reference(cell, k, reverse)
    want = vjp_all(lambda p, x, c: reference(p, x, c, LENGTHS), (params, xs, carry))
    _assert_tree_close(got, want)


def test_truncate_without_lengths_is_a_chunked_loop_of_scans():
    cell, params, carry, xs = _setup("lstm")

    def chunked(p, x, c):
        ys = []
        for start in range(0, T, 4):
            c, y = jaxrnn.scan(cell, p, x[start : start + 4], carry=c)
            c = jax.lax.stop_gradient(c) if start + 4 < T else c
            ys.append(y)
        return c, jnp.concatenate(ys)

    # stop_gradient sits before chunks 2 and 3 in BPTT(4); written so, the loop above
    # stops it after chunks 1 and 2, which is the same graph.
    got = vjp_all(lambda p, x, c: jaxrnn.scan(cell, p, x, carry=c, truncate=4), (params, xs, carry))
    _assert_tree_close(got, vjp_all(chunked, (params, xs, carry)))


@pytest.mark.parametrize("k", [T, 100])
def test_truncate_at_or_beyond_t_is_full_bptt(k):
    cell, params, carry, xs = _setup("gru")
    # truncate >= T is full BPTT: the same (fused) computation as no truncation, bit for bit.
    full = vjp_all(lambda p, x: jaxrnn.scan(cell, p, x, carry=carry), (params, xs))
    cut = vjp_all(lambda p, x: jaxrnn.scan(cell, p, x, carry=carry, truncate=k), (params, xs))
    _assert_tree_close(cut, full, 0)


# T = 10: k = 4 leaves a short last chunk, 5 divides T, 15 is one chunk; each
# (direction, lengths) setting once, with truncation on top.
CHECKPOINTS = [(4, False, None), (5, True, None), (15, False, LENGTHS), (4, True, LENGTHS)]


@pytest.mark.parametrize(
    ("k", "reverse", "lengths"),
    CHECKPOINTS,
    ids=[
        f"{k}-{'reverse' if r else 'forward'}-{'full' if n is None else 'lengths'}"
        for k, r, n in CHECKPOINTS
    ],
)
def test_checkpoint_leaves_outputs_and_gradients_unchanged(k, reverse, lengths):
    cell, params, carry, xs = _setup("lstm")

    def run(checkpoint, truncate=None):
        return vjp_all(
            lambda p, x, c: jaxrnn.scan(
                cell,
                p,
                x,
                carry=c,
                lengths=lengths,
                reverse=reverse,
                checkpoint=checkpoint,
                truncate=truncate,
            ),
            (params, xs, carry),
        )

    _assert_tree_close(run(k), run(None))
    _assert_tree_close(run(k, truncate=3), run(None, truncate=3))


def test_checkpoint_shrinks_what_the_backward_pass_stores():
    cell = jaxrnn.lstm(64)
    params = cell.init(jax.random.key(0), 8)
    xs = jnp.zeros((1000, 8, 8), jnp.float32)

    def temp_bytes(checkpoint):
        loss = lambda p: jaxrnn.scan(cell, p, xs, checkpoint=checkpoint)[1].sum()  # noqa: E731
        compiled = jax.jit(jax.grad(loss)).lower(params).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    plain, checked = temp_bytes(None), temp_bytes(32)
    # Residuals drop from ~T steps to T/k chunk carries + one chunk's steps.
    assert checked < plain / 4, (checked, plain)


def _carry_cotangents(cell, params, xs):
    """∂L/∂carry entering every step, by differentiating zero perturbations added there."""

    def probe_step(params, carry, inputs):
        x, eps = inputs
        carry = jax.tree.map(jnp.add, carry, eps)
        return cell.step(params, carry, x)

    probe = jaxrnn.Cell(cell.init, cell.initial_carry, probe_step)
    template = cell.initial_carry((xs.shape[1],), xs.dtype)
    eps = jax.tree.map(lambda a: jnp.zeros((xs.shape[0], *a.shape), a.dtype), template)

    def loss(eps):
        carry, ys = jax.lax.scan(lambda c, inp: probe.step(params, c, inp), template, (xs, eps))
        return jnp.sum(ys[-1] * 3.0) + sum(jnp.sum(c) for c in jax.tree.leaves(carry))

    return jax.grad(loss)(eps)


@pytest.mark.parametrize("name", list(CELLS))
def test_clip_carry_grad_bounds_every_steps_carry_gradient(name):
    cell, params, _, _ = _setup(name)
    # Large weights and inputs make the unclipped carry gradients grow large.
    params = jax.tree.map(lambda a: 3.0 * a, params)
    xs = jax.random.normal(jax.random.key(4), (30, B, I), jnp.float64)
    raw = _carry_cotangents(cell, params, xs)

    def norms(cot):
        return jnp.sqrt(sum(jnp.sum(g**2, axis=-1) for g in jax.tree.leaves(cot)))

    bound = 0.5
    assert float(norms(raw).max()) > 2 * bound  # the test would be vacuous otherwise
    clipped = _carry_cotangents(jaxrnn.clip_carry_grad(cell, bound), params, xs)
    assert float(norms(clipped).max()) <= bound * (1 + 1e-9)
    by_value = _carry_cotangents(jaxrnn.clip_carry_grad(cell, 0.1, mode="value"), params, xs)
    assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(by_value)) <= 0.1
    # A bound no gradient reaches changes nothing.
    loose = _carry_cotangents(jaxrnn.clip_carry_grad(cell, 1e9), params, xs)
    _assert_tree_close(loose, raw, 0)


def test_clip_carry_grad_leaves_the_forward_pass_alone():
    cell, params, carry, xs = _setup("lstm")
    clipped = jaxrnn.clip_carry_grad(cell, 0.01)
    _assert_tree_close(
        jaxrnn.scan(clipped, params, xs, carry=carry),
        jaxrnn.scan(cell, params, xs, carry=carry, backward="autodiff"),
        0,
    )


def test_bad_options():
    cell, params, _, xs = _setup("gru")
    with pytest.raises(ValueError, match="truncate: expected a positive integer, got 0"):
        jaxrnn.scan(cell, params, xs, truncate=0)
    with pytest.raises(ValueError, match=r"checkpoint: expected a positive integer, got 2\.5"):
        jaxrnn.scan(cell, params, xs, checkpoint=2.5)
    with pytest.raises(ValueError, match="bound: expected a positive number, got -1"):
        jaxrnn.clip_carry_grad(cell, -1)
    with pytest.raises(ValueError, match="mode: expected 'norm' or 'value', got 'l1'"):
        jaxrnn.clip_carry_grad(cell, 1.0, mode="l1")


def test_stack_passes_truncate_and_checkpoint_to_every_layer():
    rnn = jaxrnn.stack(jaxrnn.gru(3), num_layers=2, bidirectional=True)
    params = rnn.init(jax.random.key(0), I, jnp.float64)
    xs = jax.random.normal(jax.random.key(1), (T, B, I), jnp.float64)
    # (one gradient through the fused path, two through autodiff with the options)
    full = vjp_all(lambda p: rnn.apply(p, xs, lengths=LENGTHS), (params,))
    checked = vjp_all(lambda p: rnn.apply(p, xs, lengths=LENGTHS, checkpoint=4), (params,))
    _assert_tree_close(checked, full)
    cut = vjp_all(lambda p: rnn.apply(p, xs, lengths=LENGTHS, truncate=2), (params,))
    assert not np.allclose(cut[1][0].first.forward.w_hh, full[1][0].first.forward.w_hh)

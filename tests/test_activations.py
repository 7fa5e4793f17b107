"""`gate_fn` / `activation_fn` of `jaxrnn.lstm` and `jaxrnn.gru`: numpy equations, paths, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jaxrnn
from jaxrnn import _fused
from tests.helpers import random_carry, vjp_all

T, B, I, H = 5, 3, 3, 4
LENGTHS = jnp.array([5, 2, 0])


def np_hard_sigmoid(x):
    return np.clip(x + 3.0, 0.0, 6.0) / 6.0


def np_soft_sign(x):
    return x / (1.0 + np.abs(x))


def np_sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _affine(x, w, b):
    return x @ np.asarray(w).T + np.asarray(b)


def numpy_lstm(gate, act):
    def step(p, carry, x):
        h, c = (np.asarray(a, np.float64) for a in carry)
        z = _affine(x, p.w_ih, p.b_ih) + _affine(h, p.w_hh, p.b_hh)
        i, f, g, o = np.split(z, 4, axis=-1)
        c = gate(f) * c + gate(i) * act(g)
        h = gate(o) * act(c)
        return (h, c), h

    return step


def numpy_gru(gate, act):
    def step(p, h, x):
        h = np.asarray(h, np.float64)
        i_r, i_z, i_n = np.split(_affine(x, p.w_ih, p.b_ih), 3, axis=-1)
        h_r, h_z, h_n = np.split(_affine(h, p.w_hh, p.b_hh), 3, axis=-1)
        r, z = gate(i_r + h_r), gate(i_z + h_z)
        n = act(i_n + r * h_n)
        h = (1 - z) * n + z * h
        return h, h

    return step


# (factory, numpy step for the given numpy activations, carry of numpy arrays -> tuple)
CELLS = {
    "lstm": (jaxrnn.lstm, numpy_lstm, lambda c: (np.asarray(c.h), np.asarray(c.c))),
    "gru": (jaxrnn.gru, numpy_gru, np.asarray),
}
CUSTOM = {"gate_fn": jax.nn.hard_sigmoid, "activation_fn": jax.nn.soft_sign}


def _setup(name, dtype=jnp.float64, **kwargs):
    factory, _, _ = CELLS[name]
    cell = factory(H, **kwargs)
    k_params, k_carry, k_x = jax.random.split(jax.random.key(0), 3)
    # Scaled up so that hard_sigmoid's flat parts and kinks are reached.
    params = jax.tree.map(lambda a: 4 * a, cell.init(k_params, I, dtype))
    carry = random_carry(cell, k_carry, (B,), dtype)
    xs = jax.random.normal(k_x, (T, B, I), dtype)
    return cell, params, carry, xs


def numpy_scan(step, params, xs, carry, lengths, reverse):
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    xs = np.asarray(xs, np.float64)
    ys = np.zeros((*xs.shape[:2], H))
    finals = []
    for n in range(xs.shape[1]):
        state = jax.tree.map(lambda a, n=n: a[n], carry)
        valid = range(int(lengths[n]))
        for t in reversed(valid) if reverse else valid:
            state, ys[t, n] = step(p, state, xs[t, n])
        finals.append(state)
    return jax.tree.map(lambda *a: np.stack(a), *finals), ys


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("name", list(CELLS))
def test_custom_activations_change_outputs_as_numpy_predicts(name, reverse):
    _, numpy_step, as_np = CELLS[name]
    cell, params, carry, xs = _setup(name, **CUSTOM)
    final, ys = jaxrnn.scan(cell, params, xs, carry=carry, lengths=LENGTHS, reverse=reverse)
    want_final, want_ys = numpy_scan(
        numpy_step(np_hard_sigmoid, np_soft_sign), params, xs, as_np(carry), LENGTHS, reverse
    )
    np.testing.assert_allclose(ys, want_ys, rtol=1e-12, atol=1e-12)
    for u, v in zip(jax.tree.leaves(final), jax.tree.leaves(want_final), strict=True):
        np.testing.assert_allclose(u, v, rtol=1e-12, atol=1e-12)
    # ... and differ from what the default activations give.
    _, default_ys = numpy_scan(
        numpy_step(np_sigmoid, np.tanh), params, xs, as_np(carry), LENGTHS, reverse
    )
    assert np.abs(np.asarray(ys) - default_ys).max() > 0.1


@pytest.mark.parametrize("name", list(CELLS))
def test_only_the_default_activations_take_the_fused_path(name):
    options = jaxrnn.ScanOptions()

    def fused(**kwargs):
        cell, params, carry, xs = _setup(name, jnp.float32, **kwargs)
        takes = _fused.takes(cell, params, xs, carry, options, 1)
        jaxpr = jax.make_jaxpr(lambda p: jaxrnn.scan(cell, p, xs, carry=carry))(params)
        assert ("custom_vjp_call" in str(jaxpr)) == takes  # what runs is what takes() said
        return takes

    assert fused() and fused(gate_fn=jax.nn.sigmoid, activation_fn=jnp.tanh)
    assert not fused(gate_fn=jax.nn.hard_sigmoid)
    assert not fused(activation_fn=jax.nn.soft_sign)
    # σ written as another function is another function: autodiff, same numbers.
    assert not fused(gate_fn=lambda z: jax.nn.sigmoid(z))


@pytest.mark.parametrize("name", list(CELLS))
def test_a_rewritten_default_by_autodiff_equals_the_fused_path(name):
    fused_cell, params, carry, xs = _setup(name)
    plain_cell = CELLS[name][0](H, gate_fn=lambda z: 1 / (1 + jnp.exp(-z)))

    def run(cell):
        return vjp_all(
            lambda p, x, c: jaxrnn.scan(cell, p, x, carry=c, lengths=LENGTHS), (params, xs, carry)
        )

    for u, v in zip(
        jax.tree.leaves(run(fused_cell)), jax.tree.leaves(run(plain_cell)), strict=True
    ):
        np.testing.assert_allclose(u, v, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", list(CELLS))
def test_custom_activation_gradients(name):
    cell, params, carry, xs = _setup(name, gate_fn=jax.nn.hard_sigmoid, activation_fn=jnp.sin)
    # The hand-written BPTT of jaxrnn.reference uses the cell's activations too.
    dys = jax.random.normal(jax.random.key(5), (T, B, H), jnp.float64)
    dparams, dxs, dcarry = jaxrnn.reference.bptt(cell, params, xs, dys, carry)
    _, vjp = jax.vjp(lambda p, x, c: jaxrnn.scan(cell, p, x, carry=c)[1], params, xs, carry)
    for u, v in zip(
        jax.tree.leaves((dparams, dxs, dcarry)), jax.tree.leaves(vjp(dys)), strict=True
    ):
        np.testing.assert_allclose(u, v, rtol=1e-12, atol=1e-12)
    # Finite differences, away from hard_sigmoid's kinks: a smooth gate here.
    smooth, params, carry, xs = _setup(name, gate_fn=jax.nn.soft_sign, activation_fn=jnp.sin)
    run = jax.jit(lambda p, x, c: jaxrnn.scan(smooth, p, x, carry=c, lengths=LENGTHS))
    check_grads(run, (params, xs, carry), order=1, modes=("fwd", "rev"), eps=1e-5)


@pytest.mark.parametrize("name", list(CELLS))
@pytest.mark.parametrize("argument", ["gate_fn", "activation_fn"])
def test_a_non_callable_activation_is_a_type_error_naming_it(name, argument):
    with pytest.raises(TypeError, match=f"{argument}: expected a callable .* got str 'relu'"):
        CELLS[name][0](H, **{argument: "relu"})
    with pytest.raises(TypeError, match=f"{argument}: expected a callable"):
        CELLS[name][0](H, **{argument: None})

"""jaxrnn.gates: every step's gates against the cells' equations recomputed in numpy.

The numpy gate functions below are written from the papers' equations, not
from the library's code; the carry between steps comes from the numpy steps
of ``tests/helpers.py``. A second set of tests checks that the gates
reproduce the carry update of the library's own scan.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jaxrnn
from tests.helpers import (
    INPUT_SIZE,
    numpy_gru,
    numpy_lru,
    numpy_lstm,
    numpy_mingru,
    numpy_minlstm,
    random_carry,
)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _affine(x, w, b):
    out = x @ np.asarray(w, np.float64).T
    return out if b is None else out + np.asarray(b, np.float64)


def lstm_gates(p, carry, x):
    """i, f, g, o of Hochreiter & Schmidhuber in PyTorch's gate order."""
    z = _affine(x, p.w_ih, p.b_ih) + _affine(np.asarray(carry.h), p.w_hh, p.b_hh)
    i, f, g, o = np.split(z, 4, axis=-1)
    return _sigmoid(i), _sigmoid(f), np.tanh(g), _sigmoid(o)


def gru_gates(p, h, x):
    """r, z, n of PyTorch's GRU (the reset gate multiplies W_hn h + b_hn)."""
    i_r, i_z, i_n = np.split(_affine(x, p.w_ih, p.b_ih), 3, axis=-1)
    h_r, h_z, h_n = np.split(_affine(h, p.w_hh, p.b_hh), 3, axis=-1)
    r = _sigmoid(i_r + h_r)
    return r, _sigmoid(i_z + h_z), np.tanh(i_n + r * h_n)


def mingru_gates(p, h, x):
    """a = 1 - z, b = z ⊙ h̃ (Feng et al. 2024)."""
    g_z, g_h = np.split(_affine(x, p.w_ih, p.b_ih), 2, axis=-1)
    z = _sigmoid(g_z)
    return 1 - z, z * g_h


def minlstm_gates(p, h, x):
    """a = f / (f + i), b = i / (f + i) ⊙ h̃ (Feng et al. 2024)."""
    g_f, g_i, g_h = np.split(_affine(x, p.w_ih, p.b_ih), 3, axis=-1)
    f, i = _sigmoid(g_f), _sigmoid(g_i)
    return f / (f + i), i / (f + i) * g_h


def lru_gates(p, h, x):
    """a = λ = exp(−exp(ν) + i exp(θ)), b = γ ⊙ B x (Orvieto et al. 2023)."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), p)
    lam = np.exp(-np.exp(p.nu_log) + 1j * np.exp(p.theta_log))
    b = np.exp(p.gamma_log) * (x @ (p.w_ih + 1j * p.w_ih_im).T)
    return np.broadcast_to(lam, b.shape), b


CASES = {
    "lstm": (lambda: jaxrnn.lstm(4), numpy_lstm, lstm_gates),
    "lstm_proj_nobias": (
        lambda: jaxrnn.lstm(4, proj_size=2, use_bias=False),
        numpy_lstm,
        lstm_gates,
    ),
    "gru": (lambda: jaxrnn.gru(4), numpy_gru, gru_gates),
    "mingru": (lambda: jaxrnn.mingru(4), numpy_mingru, mingru_gates),
    "minlstm": (lambda: jaxrnn.minlstm(4), numpy_minlstm, minlstm_gates),
    "lru": (lambda: jaxrnn.lru(4, r_min=0.5), numpy_lru, lru_gates),
}


def _numpy_gates(numpy_step, numpy_gate_fn, params, carry, xs, lengths, reverse):
    """The specification, one Python loop per sequence: gates before each valid step."""
    num_steps, batch = xs.shape[:2]
    out = None
    for b in range(batch):
        c = jax.tree.map(lambda a, b=b: np.asarray(a[b], np.float64), carry)
        steps = range(int(lengths[b]))
        for t in reversed(steps) if reverse else steps:
            x = np.asarray(xs[t, b], np.float64)
            values = numpy_gate_fn(params, c, x)
            if out is None:
                out = [np.zeros((num_steps, batch, v.shape[-1]), v.dtype) for v in values]
            for o, v in zip(out, values, strict=True):
                o[t, b] = v
            c = numpy_step(params, c, x)[0]
    return out


def _setup(name, batch_shape=(3,), num_steps=6, seed=0):
    make, _, _ = CASES[name]
    cell = make()
    k_p, k_c, k_x = jax.random.split(jax.random.key(seed), 3)
    params = cell.init(k_p, INPUT_SIZE, jnp.float64)
    carry = random_carry(cell, k_c, batch_shape, jnp.float64)
    xs = jax.random.normal(k_x, (num_steps, *batch_shape, INPUT_SIZE), jnp.float64)
    return cell, params, carry, xs


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("name", list(CASES))
def test_gates_match_the_numpy_equations_with_lengths(name, reverse):
    cell, params, carry, xs = _setup(name)
    lengths = np.array([6, 3, 0])
    got = jaxrnn.gates(cell, params, xs, carry=carry, lengths=jnp.asarray(lengths), reverse=reverse)
    _, numpy_step, numpy_gate_fn = CASES[name]
    want = _numpy_gates(numpy_step, numpy_gate_fn, params, carry, xs, lengths, reverse)
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape == (6, 3, 4)
        np.testing.assert_allclose(np.asarray(g), w, rtol=1e-12, atol=1e-12)
    for g in got:  # padded steps: exactly zero
        assert (g[3:, 1] == 0).all() and (g[:, 2] == 0).all()


def _carries(cell, params, xs, carry, reverse=False):
    """Every step's carry after it, from the library's scan (a step that outputs its carry)."""

    leaves, treedef = jax.tree.flatten(carry)
    splits = np.cumsum([leaf.shape[-1] for leaf in leaves])[:-1].tolist()

    def step(p, c, x):  # the carry's leaves side by side: outputs are arrays
        new, _ = cell.step(p, c, x)
        return new, jnp.concatenate(jax.tree.leaves(new), axis=-1)

    flat = jaxrnn.scan(cell._replace(step=step), params, xs, carry=carry, reverse=reverse)[1]
    return jax.tree.unflatten(treedef, jnp.split(flat, splits, axis=-1))


@pytest.mark.parametrize("proj", [None, 2], ids=["lstm", "lstm_proj"])
def test_lstm_gates_reproduce_the_carry_update(proj):
    cell = jaxrnn.lstm(4, proj_size=proj)
    k_p, k_c, k_x = jax.random.split(jax.random.key(1), 3)
    params = cell.init(k_p, INPUT_SIZE, jnp.float64)
    carry = random_carry(cell, k_c, (2,), jnp.float64)
    xs = jax.random.normal(k_x, (5, 2, INPUT_SIZE), jnp.float64)
    g = jaxrnn.gates(cell, params, xs, carry=carry)
    after = _carries(cell, params, xs, carry)
    c_prev = jnp.concatenate([carry.c[None], after.c[:-1]])
    np.testing.assert_allclose(after.c, g.forget * c_prev + g.input * g.candidate, atol=1e-12)
    h = g.output * jnp.tanh(after.c)
    if proj is not None:
        h = h @ params.w_hr.T
    np.testing.assert_allclose(after.h, h, atol=1e-12)


def test_gru_gates_reproduce_the_carry_update_in_reverse():
    cell, params, carry, xs = _setup("gru", batch_shape=(2,))
    g = jaxrnn.gates(cell, params, xs, carry=carry, reverse=True)
    after = _carries(cell, params, xs, carry, reverse=True)
    h_prev = jnp.concatenate([after[1:], carry[None]])  # reverse: step t follows step t + 1
    np.testing.assert_allclose(
        after, (1 - g.update) * g.candidate + g.update * h_prev, rtol=1e-12, atol=1e-12
    )


@pytest.mark.parametrize("name", ["mingru", "minlstm", "lru"])
def test_linear_coefficients_reproduce_the_state_update(name):
    cell, params, carry, xs = _setup(name, batch_shape=(2,))
    coef = jaxrnn.gates(cell, params, xs, carry=carry)
    assert isinstance(coef, jaxrnn.LinearCoefficients)
    after = _carries(cell, params, xs, carry)
    state, prev = cell.spec.to_state(after), cell.spec.to_state(carry)
    h_prev = jnp.concatenate([prev[None], state[:-1]])
    np.testing.assert_allclose(state, coef.a * h_prev + coef.b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("batch_shape", [(), (2, 3)], ids=["unbatched", "2d_batch"])
def test_batch_shapes_and_batch_major_layout(batch_shape):
    cell, params, carry, xs = _setup("lstm", batch_shape=batch_shape, num_steps=4)
    got = jaxrnn.gates(cell, params, xs, carry=carry)
    assert got.input.shape == (4, *batch_shape, 4)
    xs_bm = jnp.moveaxis(xs, 0, len(batch_shape))
    got_bm = jaxrnn.gates(cell, params, xs_bm, carry=carry, time_major=False)
    for a, b in zip(got, got_bm, strict=True):
        np.testing.assert_array_equal(np.moveaxis(np.asarray(b), len(batch_shape), 0), a)
    if batch_shape:  # each sequence on its own, unbatched
        one = jaxrnn.gates(cell, params, xs[:, 1, 2], carry=jax.tree.map(lambda c: c[1, 2], carry))
        for a, b in zip(got, one, strict=True):
            np.testing.assert_allclose(a[:, 1, 2], b, rtol=1e-12)


def test_no_steps_give_empty_gates():
    cell, params, _, _ = _setup("gru")
    got = jaxrnn.gates(cell, params, jnp.zeros((0, 3, INPUT_SIZE)), lengths=jnp.zeros(3, int))
    assert [a.shape for a in got] == [(0, 3, 4)] * 3


def test_jit_and_vmap_and_traced_lengths_outside_the_range():
    cell, params, carry, xs = _setup("lstm")
    run = jax.jit(lambda xs, lengths: jaxrnn.gates(cell, params, xs, carry=carry, lengths=lengths))
    # Under jit, lengths outside [0, T] act as the nearest end, as in jaxrnn.scan.
    traced = run(xs, jnp.array([9, -2, 4]))
    clipped = jaxrnn.gates(cell, params, xs, carry=carry, lengths=jnp.array([6, 0, 4]))
    for a, b in zip(traced, clipped, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    # vmap over the batch axis equals the batched call.
    mapped = jax.vmap(
        lambda x, c: jaxrnn.gates(cell, params, x, carry=c), in_axes=(1, 0), out_axes=1
    )(xs, carry)
    for a, b in zip(mapped, jaxrnn.gates(cell, params, xs, carry=carry), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12)


def test_nan_in_the_padding_stays_out_and_gradients_are_right():
    cell, params, carry, xs = _setup("lstm")
    lengths = jnp.array([6, 2, 0])
    poisoned = xs.at[2:, 1].set(jnp.nan).at[:, 2].set(jnp.inf)
    got = jaxrnn.gates(cell, params, poisoned, carry=carry, lengths=lengths)
    clean = jaxrnn.gates(cell, params, xs, carry=carry, lengths=lengths)
    for a, b in zip(got, clean, strict=True):
        np.testing.assert_array_equal(a, b)

    def mean_forget(p, xs):
        return jaxrnn.gates(cell, p, xs, carry=carry, lengths=lengths).forget.mean()

    check_grads(mean_forget, (params, xs), order=1, modes=["rev"])
    grads = jax.grad(mean_forget, argnums=(0, 1))(params, poisoned)
    assert all(bool(jnp.isfinite(leaf).all()) for leaf in jax.tree.leaves(grads))


def test_bfloat16_gates_are_float32():
    cell = jaxrnn.gru(4)
    params = cell.init(jax.random.key(0), INPUT_SIZE, jnp.bfloat16)
    got = jaxrnn.gates(cell, params, jnp.ones((3, 2, INPUT_SIZE), jnp.bfloat16))
    assert {a.dtype for a in got} == {jnp.dtype(jnp.float32)}


def test_cells_without_gates_are_refused():
    xs = jnp.ones((3, INPUT_SIZE))
    elman = jaxrnn.elman(4)
    with pytest.raises(ValueError, match="ElmanSpec has no gates"):
        jaxrnn.gates(elman, elman.init(jax.random.key(0), INPUT_SIZE), xs)
    lstm = jaxrnn.lstm(4)
    params = lstm.init(jax.random.key(0), INPUT_SIZE)
    user = jaxrnn.Cell(lstm.init, lstm.initial_carry, lstm.step)
    with pytest.raises(ValueError, match="without a spec"):
        jaxrnn.gates(user, params, xs)
    replaced = lstm._replace(step=lambda p, c, x: lstm.step(p, c, 2 * x))
    with pytest.raises(ValueError, match="replaced or wrapped"):
        jaxrnn.gates(replaced, params, xs)
    with pytest.raises(ValueError, match="without a spec"):
        jaxrnn.gates(jaxrnn.clip_carry_grad(lstm, 1.0), params, xs)
    with pytest.raises(TypeError, match=r"cell: expected a jaxrnn\.Cell"):
        jaxrnn.gates(jaxrnn.stack(lstm), params, xs)


class UserParams(NamedTuple):
    w_ih: jax.Array  # [2, I]


def test_a_users_cell_with_gates_in_its_spec():
    """The spec's gates field is what jaxrnn.gates reads: a user's cell can have one too."""

    def step(p, h, x):
        z = jax.nn.sigmoid(x @ p.w_ih.T)
        h = z * h + (1 - z)
        return h, h

    def gates_fn(p, h, x):
        return (jax.nn.sigmoid(x @ p.w_ih.T),)

    cell = jaxrnn.Cell(
        lambda key, i, dtype=jnp.float32: UserParams(jax.random.normal(key, (2, i), dtype)),
        lambda batch=(), dtype=jnp.float32: jnp.zeros((*batch, 2), dtype),
        step,
        jaxrnn.Spec(step=step, gates=gates_fn),
    )
    params = cell.init(jax.random.key(0), INPUT_SIZE, jnp.float64)
    xs = jax.random.normal(jax.random.key(1), (4, INPUT_SIZE), jnp.float64)
    (z,) = jaxrnn.gates(cell, params, xs, lengths=jnp.array(3))
    want = _sigmoid(np.asarray(xs) @ np.asarray(params.w_ih).T)
    np.testing.assert_allclose(z[:3], want[:3], rtol=1e-12)
    assert (z[3] == 0).all()


def test_bad_arguments_are_named():
    cell, params, _, xs = _setup("lstm")
    with pytest.raises(ValueError, match=r"lengths: expected values in \[0, T=6\]"):
        jaxrnn.gates(cell, params, xs, lengths=jnp.array([7, 1, 1]))
    with pytest.raises(ValueError, match="x: expected shape"):
        jaxrnn.gates(cell, params, jnp.ones((0, 3, INPUT_SIZE + 1)))
    with pytest.raises(TypeError, match="reverse: expected a bool"):
        jaxrnn.gates(cell, params, xs, reverse=1)


def _hard_sigmoid(x):
    return np.clip(x + 3, 0, 6) / 6


def _soft_sign(x):
    return x / (1 + np.abs(x))


def _custom_lstm(p, carry, x):
    """LSTM gates and step with σ → hard sigmoid and tanh → soft sign."""
    z = _affine(x, p.w_ih, p.b_ih) + _affine(np.asarray(carry.h), p.w_hh, p.b_hh)
    i, f, g, o = np.split(z, 4, axis=-1)
    gates = _hard_sigmoid(i), _hard_sigmoid(f), _soft_sign(g), _hard_sigmoid(o)
    c = gates[1] * np.asarray(carry.c) + gates[0] * gates[2]
    return gates, jaxrnn.LSTMCarry(gates[3] * _soft_sign(c), c)


def _custom_gru(p, h, x):
    """GRU gates and step with σ → hard sigmoid and tanh → soft sign."""
    i_r, i_z, i_n = np.split(_affine(x, p.w_ih, p.b_ih), 3, axis=-1)
    h_r, h_z, h_n = np.split(_affine(h, p.w_hh, p.b_hh), 3, axis=-1)
    r, z = _hard_sigmoid(i_r + h_r), _hard_sigmoid(i_z + h_z)
    n = _soft_sign(i_n + r * h_n)
    return (r, z, n), (1 - z) * n + z * h


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_gates_use_the_activations_the_cell_was_built_with(kind):
    make, numpy_both = (jaxrnn.lstm, _custom_lstm) if kind == "lstm" else (jaxrnn.gru, _custom_gru)
    cell = make(4, gate_fn=jax.nn.hard_sigmoid, activation_fn=jax.nn.soft_sign)
    k_p, k_c, k_x = jax.random.split(jax.random.key(2), 3)
    params = cell.init(k_p, INPUT_SIZE, jnp.float64)
    carry = random_carry(cell, k_c, (2,), jnp.float64)
    xs = 2 * jax.random.normal(k_x, (5, 2, INPUT_SIZE), jnp.float64)  # reach the flat parts
    lengths = np.array([5, 2])
    got = jaxrnn.gates(cell, params, xs, carry=carry, lengths=jnp.asarray(lengths), reverse=True)
    want = _numpy_gates(
        lambda p, c, x: (numpy_both(p, c, x)[1], None),
        lambda p, c, x: numpy_both(p, c, x)[0],
        params,
        carry,
        xs,
        lengths,
        reverse=True,
    )
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(np.asarray(g), w, rtol=1e-12, atol=1e-12)

"""The initialisers: exact structural properties, not numbers from a run."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn

H, I = 16, 5


@pytest.mark.parametrize(
    "cell", [jaxrnn.elman(H), jaxrnn.lstm(H), jaxrnn.gru(H)], ids=["elman", "lstm", "gru"]
)
def test_default_is_pytorchs_uniform(cell):
    params = cell.init(jax.random.key(0), I)
    bound = 1 / math.sqrt(H)
    for leaf in jax.tree.leaves(params):
        assert float(jnp.abs(leaf).max()) <= bound
    w_hh = np.asarray(params.w_hh)
    # Uniform on (-b, b): mean 0, variance b²/3 — loose enough to hold for any seed.
    assert abs(w_hh.mean()) < 0.1 * bound
    assert abs(w_hh.var() - bound**2 / 3) < 0.15 * bound**2 / 3


@pytest.mark.parametrize(
    ("cell", "blocks"),
    [
        (jaxrnn.elman(H, recurrent_init="orthogonal"), 1),
        (jaxrnn.lstm(H, recurrent_init="orthogonal"), 4),
        (jaxrnn.gru(H, recurrent_init="orthogonal"), 3),
    ],
    ids=["elman", "lstm", "gru"],
)
def test_orthogonal_recurrent_blocks(cell, blocks):
    w_hh = cell.init(jax.random.key(0), I, jnp.float64).w_hh
    assert w_hh.shape == (blocks * H, H)
    for q in jnp.split(w_hh, blocks):
        np.testing.assert_allclose(q.T @ q, np.eye(H), atol=1e-10)


def test_irnn_is_identity_with_zero_bias():
    params = jaxrnn.elman(H, activation="relu", recurrent_init="identity").init(
        jax.random.key(0), I
    )
    np.testing.assert_array_equal(params.w_hh, np.eye(H))
    np.testing.assert_array_equal(params.b_ih, 0)
    np.testing.assert_array_equal(params.b_hh, 0)
    explicit = jaxrnn.elman(H, recurrent_init="identity", bias_init="uniform")
    assert float(jnp.abs(explicit.init(jax.random.key(0), I).b_ih).max()) > 0


def test_lstm_forget_bias():
    params = jaxrnn.lstm(H, forget_bias=1.0).init(jax.random.key(0), I)
    np.testing.assert_array_equal(params.b_ih[H : 2 * H], 1.0)
    np.testing.assert_array_equal(params.b_hh[H : 2 * H], 0.0)
    default = jaxrnn.lstm(H).init(jax.random.key(0), I)
    np.testing.assert_array_equal(params.b_ih[:H], default.b_ih[:H])  # other gates unchanged


@pytest.mark.parametrize("t_max", [2, 10, 784])
def test_lstm_chrono(t_max):
    params = jaxrnn.lstm(H, chrono=t_max).init(jax.random.key(0), I, jnp.float64)
    b_f = params.b_ih[H : 2 * H]
    assert float(b_f.min()) >= 0.0 and float(b_f.max()) <= math.log(t_max - 1) + 1e-12
    np.testing.assert_array_equal(params.b_ih[:H], -b_f)
    np.testing.assert_array_equal(params.b_hh[: 2 * H], 0.0)


def test_gru_chrono_biases_the_update_gate():
    params = jaxrnn.gru(H, chrono=100).init(jax.random.key(0), I, jnp.float64)
    b_z = params.b_ih[H : 2 * H]
    assert float(b_z.min()) >= 0.0 and float(b_z.max()) <= math.log(99) + 1e-12
    np.testing.assert_array_equal(params.b_hh[H : 2 * H], 0.0)


def test_callable_recurrent_init_is_applied_per_block():
    init = jax.nn.initializers.constant(0.5)
    w_hh = jaxrnn.lstm(H, recurrent_init=init).init(jax.random.key(0), I).w_hh
    np.testing.assert_array_equal(w_hh, 0.5)


def test_no_bias_and_projection_shapes():
    params = jaxrnn.lstm(H, proj_size=4, use_bias=False).init(jax.random.key(0), I)
    assert params.b_ih is None and params.b_hh is None
    assert params.w_hh.shape == (4 * H, 4) and params.w_hr.shape == (4, H)
    carry = jaxrnn.lstm(H, proj_size=4).initial_carry((2,))
    assert carry.h.shape == (2, 4) and carry.c.shape == (2, H)


def test_init_is_deterministic_and_jittable():
    cell = jaxrnn.lstm(H, chrono=50)
    a = cell.init(jax.random.key(7), I)
    b = jax.jit(cell.init, static_argnums=1)(jax.random.key(7), I)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(u, v)

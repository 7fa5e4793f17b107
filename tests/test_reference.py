"""The hand-written BPTT against autodiff, finite differences and forward-mode RTRL."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn
from tests.helpers import CELL_IDS, CELLS, INPUT_SIZE, random_carry

T, B = 5, 3


def _setup(case, batch_shape=(B,)):
    cell = case.make()
    k_params, k_carry, k_x, k_dy = jax.random.split(jax.random.key(0), 4)
    params = cell.init(k_params, INPUT_SIZE, jnp.float64)
    carry = random_carry(cell, k_carry, batch_shape, jnp.float64)
    xs = jax.random.normal(k_x, (T, *batch_shape, INPUT_SIZE), jnp.float64)
    ys = jaxrnn.scan(cell, params, xs, carry=carry)[1]
    dys = jax.random.normal(k_dy, ys.shape, jnp.float64)
    return cell, params, carry, xs, dys


def _assert_tree_close(a, b, tol):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(u, v, rtol=tol, atol=tol)


@pytest.mark.parametrize("case", CELLS, ids=CELL_IDS)
def test_bptt_equals_the_vjp_of_scan(case):
    _check_against_vjp(case, (B,))


@pytest.mark.parametrize("name", ["elman_output_layer", "lstm_proj"])
@pytest.mark.parametrize("batch_shape", [(), (2, 2)], ids=str)
def test_bptt_with_any_batch_axes(name, batch_shape):
    _check_against_vjp(next(c for c in CELLS if c.name == name), batch_shape)


def _check_against_vjp(case, batch_shape):
    cell, params, carry, xs, dys = _setup(case, batch_shape)
    _, vjp = jax.vjp(lambda p, x, c: jaxrnn.scan(cell, p, x, carry=c)[1], params, xs, carry)
    _assert_tree_close(jaxrnn.reference.bptt(cell, params, xs, dys, carry), vjp(dys), 1e-10)


@pytest.mark.parametrize("case", CELLS, ids=CELL_IDS)
def test_bptt_passes_a_central_difference_check(case):
    cell, params, carry, xs, dys = _setup(case)
    dparams, dxs, dcarry = jaxrnn.reference.bptt(cell, params, xs, dys, carry)
    primals = (params, xs, carry)
    leaves, treedef = jax.tree.flatten(primals)
    keys = jax.random.split(jax.random.key(5), len(leaves))
    direction = jax.tree.unflatten(
        treedef, [jax.random.normal(k, a.shape, a.dtype) for k, a in zip(keys, leaves, strict=True)]
    )

    def loss(p, x, c):  # L = Σ_t ⟨dy_t, y_t⟩, evaluated by the reference forward loop
        return jnp.vdot(dys, jaxrnn.reference.forward(cell, p, x, c)[1])

    eps = 1e-5
    shifted = [jax.tree.map(lambda a, d, s=s: a + s * eps * d, primals, direction) for s in (1, -1)]
    numeric = (loss(*shifted[0]) - loss(*shifted[1])) / (2 * eps)
    analytic = sum(
        jnp.vdot(g, d)
        for g, d in zip(
            jax.tree.leaves((dparams, dxs, dcarry)), jax.tree.leaves(direction), strict=True
        )
    )
    np.testing.assert_allclose(analytic, numeric, rtol=1e-7)


@pytest.mark.parametrize("case", CELLS, ids=CELL_IDS)
def test_forward_loop_equals_scan(case):
    cell, params, carry, xs, _ = _setup(case)
    _assert_tree_close(
        jaxrnn.reference.forward(cell, params, xs, carry),
        jaxrnn.scan(cell, params, xs, carry=carry),
        1e-12,
    )


@pytest.mark.parametrize("name", ["elman_output_layer", "lstm_proj", "gru"])
def test_bptt_equals_forward_mode_rtrl(name):
    """Untruncated BPTT computes the gradient of offline RTRL (forward-mode sensitivities)."""
    case = next(c for c in CELLS if c.name == name)
    cell, params, carry, xs, dys = _setup(case)

    def loss(p, backward):
        return jnp.vdot(dys, jaxrnn.scan(cell, p, xs, carry=carry, backward=backward)[1])

    rtrl = jax.jacfwd(loss)(params, "autodiff")
    _assert_tree_close(jaxrnn.reference.bptt(cell, params, xs, dys, carry)[0], rtrl, 1e-10)
    _assert_tree_close(jax.grad(loss)(params, "fused"), rtrl, 1e-10)


def test_a_user_activation_is_differentiated_too():
    cell = jaxrnn.elman(4, activation=jax.nn.softplus, output_size=2, output_activation=jnp.sin)
    params = cell.init(jax.random.key(0), 3, jnp.float64)
    xs = jax.random.normal(jax.random.key(1), (4, 2, 3), jnp.float64)
    dys = jnp.ones((4, 2, 2), jnp.float64)
    _, vjp = jax.vjp(lambda p: jaxrnn.scan(cell, p, xs)[1], params)
    _assert_tree_close(jaxrnn.reference.bptt(cell, params, xs, dys)[0], vjp(dys)[0], 1e-10)


def test_errors():
    user = jaxrnn.Cell(*jaxrnn.gru(2)[:3])  # no spec: a user's cell
    params = user.init(jax.random.key(0), 3)
    with pytest.raises(ValueError, match="cell: the reference BPTT is written out for"):
        jaxrnn.reference.bptt(user, params, jnp.ones((2, 3)), jnp.ones((2, 2)))
    cell = jaxrnn.gru(2)
    with pytest.raises(ValueError, match=r"dys: expected shape \(2, 2\), got \(2, 3\)"):
        jaxrnn.reference.bptt(cell, params, jnp.ones((2, 3)), jnp.ones((2, 3)))

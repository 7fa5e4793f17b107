"""One suite run over every built-in cell: the Cell contract and the cell equations.

The cells linear in their carry (minGRU, minLSTM, LRU) run the same suite
(``LINEAR_CELLS``): they are kept out of ``CELLS``, which the fused-path and
reference-BPTT suites take as theirs.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jaxrnn
from tests.helpers import CELL_IDS, CELLS, INPUT_SIZE, LINEAR_CELLS, LINEAR_IDS, random_carry

BATCH_SHAPES = [(), (3,), (2, 3)]


SUITE = CELLS + LINEAR_CELLS
SUITE_IDS = CELL_IDS + LINEAR_IDS


@pytest.fixture(params=SUITE, ids=SUITE_IDS)
def case(request):
    return request.param


def _setup(case, dtype=jnp.float32, batch_shape=(3,), seed=0):
    cell = case.make()
    k_params, k_carry, k_x = jax.random.split(jax.random.key(seed), 3)
    params = cell.init(k_params, INPUT_SIZE, dtype)
    carry = random_carry(cell, k_carry, batch_shape, dtype)
    x = jax.random.normal(k_x, (*batch_shape, INPUT_SIZE), dtype)
    return cell, params, carry, x


def _assert_tree_allclose(a, b, **kw):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(u, np.float64), np.asarray(v, np.float64), **kw)


# Each dtype with one batch shape: every cell runs every dtype and every batch shape once.
@pytest.mark.parametrize(
    ("dtype", "batch_shape"),
    list(zip([jnp.float32, jnp.float64, jnp.bfloat16], BATCH_SHAPES, strict=True)),
    ids=str,
)
def test_step_keeps_carry_structure_shape_and_dtype(case, batch_shape, dtype):
    cell, params, _, x = _setup(case, dtype, batch_shape)
    carry = cell.initial_carry(batch_shape, dtype)
    for leaf in jax.tree.leaves(carry):
        assert leaf.dtype == jnp.promote_types(dtype, jnp.float32)
        assert leaf.shape[:-1] == batch_shape
    new_carry, y = jax.jit(cell.step)(params, carry, x)
    assert jax.tree.structure(new_carry) == jax.tree.structure(carry)
    for new, old in zip(jax.tree.leaves(new_carry), jax.tree.leaves(carry), strict=True):
        assert (new.shape, new.dtype) == (old.shape, old.dtype)
    assert y.shape[:-1] == batch_shape
    assert y.dtype == dtype


def test_params_have_the_requested_dtype(case):
    for dtype in (jnp.float32, jnp.float64, jnp.bfloat16):
        params = case.make().init(jax.random.key(0), INPUT_SIZE, dtype)
        assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {jnp.dtype(dtype)}


@pytest.mark.smoke
def test_step_matches_the_numpy_equations(case):
    cell, params, carry, x = _setup(case, jnp.float64)
    new_carry, y = cell.step(params, carry, x)
    as_np = jax.tree.map(lambda a: np.asarray(a, np.float64), (params, carry, x))
    want_carry, want_y = case.numpy_step(*as_np)
    _assert_tree_allclose(new_carry, want_carry, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(y, want_y, rtol=1e-12, atol=1e-12)


def test_bfloat16_stays_close_to_float32(case):
    cell, params, carry, x = _setup(case, jnp.float32)
    low = jax.tree.map(lambda a: a.astype(jnp.bfloat16), (params, x))
    c32, y32 = cell.step(params, carry, x)
    c16, y16 = cell.step(low[0], carry, low[1])
    _assert_tree_allclose(c16, c32, rtol=0.05, atol=0.05)
    np.testing.assert_allclose(np.asarray(y16, np.float32), y32, rtol=0.05, atol=0.05)


def test_jit_equals_no_jit(case):
    cell, params, carry, x = _setup(case)
    _assert_tree_allclose(
        jax.jit(cell.step)(params, carry, x), cell.step(params, carry, x), rtol=1e-6, atol=1e-6
    )
    xs = jnp.stack([x, 2 * x, -x])
    scan = functools.partial(jaxrnn.scan, cell)
    _assert_tree_allclose(
        jax.jit(scan)(params, xs, carry=carry), scan(params, xs, carry=carry), rtol=1e-6, atol=1e-6
    )


def test_vmap_equals_a_python_loop_and_the_batched_step(case):
    cell, params, carry, x = _setup(case, jnp.float64, batch_shape=(4,))
    vmapped = jax.vmap(cell.step, in_axes=(None, 0, 0))(params, carry, x)
    looped = [cell.step(params, jax.tree.map(lambda a, b=b: a[b], carry), x[b]) for b in range(4)]
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *looped)
    _assert_tree_allclose(vmapped, stacked, rtol=1e-12, atol=1e-12)
    _assert_tree_allclose(cell.step(params, carry, x), stacked, rtol=1e-12, atol=1e-12)


def test_vmap_over_params(case):
    cell = case.make()
    keys = jax.random.split(jax.random.key(1), 2)
    params = jax.vmap(lambda k: cell.init(k, INPUT_SIZE))(keys)
    xs = jax.random.normal(jax.random.key(2), (5, 3, INPUT_SIZE), jnp.float32)
    _, ys = jax.vmap(lambda p: jaxrnn.scan(cell, p, xs))(params)
    for i in range(2):
        _, want = jaxrnn.scan(cell, jax.tree.map(lambda a, i=i: a[i], params), xs)
        np.testing.assert_allclose(ys[i], want, rtol=1e-6, atol=1e-6)


def test_a_second_call_does_not_retrace(case):
    cell, params, carry, x = _setup(case)
    traces = 0

    def counted_step(params, carry, x):
        nonlocal traces
        traces += 1
        return cell.step(params, carry, x)

    counted = cell._replace(step=counted_step)
    run = jax.jit(lambda p, xs, c: jaxrnn.scan(counted, p, xs, carry=c))
    xs = jnp.stack([x, x])
    jax.block_until_ready(run(params, xs, carry))
    first = traces
    jax.block_until_ready(run(params, 2 * xs, carry))
    assert first > 0
    assert traces == first


# Variants that differ only in their initialisation share the step of their base cell.
GRAD_CELLS = [c for c in SUITE if not c.name.endswith(("chrono", "orthogonal"))]


@pytest.mark.parametrize("case", GRAD_CELLS, ids=[c.name for c in GRAD_CELLS])
@pytest.mark.parametrize(
    ("lengths", "order"), [(None, 2), ((3, 1, 0), 1)], ids=["full-order2", "lengths-order1"]
)
def test_check_grads_through_scan_float64(case, lengths, order):
    cell, params, carry, _ = _setup(case, jnp.float64)
    xs = jax.random.normal(jax.random.key(3), (3, 3, INPUT_SIZE), jnp.float64)
    lengths = None if lengths is None else jnp.array(lengths)

    @jax.jit
    def run(params, xs, carry):  # forward mode needs autodiff; test_fused covers the rest
        return jaxrnn.scan(cell, params, xs, carry=carry, lengths=lengths, backward="autodiff")

    check_grads(run, (params, xs, carry), order=order, modes=("fwd", "rev"), eps=1e-4)


def test_initial_carry_is_zeros(case):
    carry = case.make().initial_carry((2,), jnp.float64)
    assert all(bool((leaf == 0).all()) for leaf in jax.tree.leaves(carry))

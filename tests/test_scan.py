"""`jaxrnn.scan` against the specification loop: masking, direction, layout, transforms."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn
from tests.helpers import CELLS, INPUT_SIZE, random_carry, reference_scan

T, B = 6, 4
LENGTHS = (6, 3, 1, 0)


def _setup(case, dtype=jnp.float64):
    cell = case.make()
    k_params, k_carry, k_x = jax.random.split(jax.random.key(0), 3)
    params = cell.init(k_params, INPUT_SIZE, dtype)
    carry = random_carry(cell, k_carry, (B,), dtype)
    xs = jax.random.normal(k_x, (T, B, INPUT_SIZE), dtype)
    return cell, params, carry, xs


def _assert_tree_close(a, b, tol=1e-12):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(u, v, rtol=tol, atol=tol)


# Each cell in one of the four (lengths, direction) settings, in turn: tests/test_paths.py
# holds the cells with gradients to the same loop on every path; this adds the variants
# that differ in activation, bias and initialisation.
SETTINGS = [(None, False), (LENGTHS, True), (None, True), (LENGTHS, False)]
LOOP_CASES = [(case, *SETTINGS[i % len(SETTINGS)]) for i, case in enumerate(CELLS)]


@pytest.mark.parametrize(
    ("case", "lengths", "reverse"),
    LOOP_CASES,
    ids=[
        f"{c.name}-{'lengths' if n else 'full'}-{'reverse' if r else 'forward'}"
        for c, n, r in LOOP_CASES
    ],
)
def test_scan_equals_the_reference_loop(case, lengths, reverse):
    cell, params, carry, xs = _setup(case)
    lengths = None if lengths is None else jnp.array(lengths)
    got = jaxrnn.scan(cell, params, xs, carry=carry, lengths=lengths, reverse=reverse)
    want = reference_scan(cell, params, xs, carry=carry, lengths=lengths, reverse=reverse)
    _assert_tree_close(got, want)


@pytest.mark.parametrize("case", CELLS[:1] + CELLS[4:5], ids=[CELLS[0].name, CELLS[4].name])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_batch_major_equals_time_major(case, reverse):
    cell, params, carry, xs = _setup(case)
    lengths = jnp.array(LENGTHS)
    want_carry, want_ys = jaxrnn.scan(
        cell, params, xs, carry=carry, lengths=lengths, reverse=reverse
    )
    got_carry, got_ys = jaxrnn.scan(
        cell,
        params,
        jnp.swapaxes(xs, 0, 1),
        carry=carry,
        lengths=lengths,
        reverse=reverse,
        time_major=False,
    )
    _assert_tree_close(got_carry, want_carry, 0)
    np.testing.assert_array_equal(got_ys, jnp.swapaxes(want_ys, 0, 1))


@pytest.mark.smoke
def test_padding_outputs_are_exactly_zero_and_carry_stops_at_the_length():
    cell = jaxrnn.lstm(4)
    params = cell.init(jax.random.key(0), 2, jnp.float64)
    xs = jax.random.normal(jax.random.key(1), (5, 3, 2), jnp.float32) + 10.0
    lengths = jnp.array([5, 2, 0])
    final, ys = jaxrnn.scan(cell, params, xs, lengths=lengths)
    assert bool((ys[2:, 1] == 0).all()) and bool((ys[:, 2] == 0).all())
    assert bool((ys[:2, 1] != 0).all())
    short_final, _ = jaxrnn.scan(cell, params, xs[:2, 1:2])
    np.testing.assert_allclose(final.h[1], short_final.h[0], rtol=1e-12)
    np.testing.assert_array_equal(final.c[2], jnp.zeros(4))


def test_reverse_with_lengths_reverses_each_sequence_within_its_length():
    cell = jaxrnn.elman(3)
    params = cell.init(jax.random.key(0), 2, jnp.float64)
    xs = jax.random.normal(jax.random.key(1), (5, 2, 2), jnp.float64)
    lengths = jnp.array([5, 3])
    _, ys = jaxrnn.scan(cell, params, xs, lengths=lengths, reverse=True)
    # The second sequence reversed within its length is a plain forward scan of xs[2::-1].
    _, want = jaxrnn.scan(cell, params, xs[2::-1, 1])
    np.testing.assert_allclose(ys[:3, 1], want[::-1], rtol=1e-12)
    assert bool((ys[3:, 1] == 0).all())


def test_unbatched_and_many_batch_axes():
    cell = jaxrnn.gru(4)
    params = cell.init(jax.random.key(0), 2, jnp.float64)
    xs = jax.random.normal(jax.random.key(1), (5, 2, 3, 2), jnp.float64)
    lengths = jnp.array([[5, 4, 0], [1, 2, 3]])
    final, ys = jaxrnn.scan(cell, params, xs, lengths=lengths)
    for i in range(2):
        for j in range(3):
            f, y = jaxrnn.scan(cell, params, xs[:, i, j], lengths=lengths[i, j])
            np.testing.assert_allclose(ys[:, i, j], y, rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(final[i, j], f, rtol=1e-12, atol=1e-12)


def test_vmap_of_scan_equals_batched_scan():
    cell = jaxrnn.lstm(4)
    params = cell.init(jax.random.key(0), 2, jnp.float64)
    xs = jax.random.normal(jax.random.key(1), (5, 3, 2), jnp.float64)
    lengths = jnp.array([5, 2, 0])
    batched = jaxrnn.scan(cell, params, xs, lengths=lengths)
    vmapped = jax.vmap(
        lambda x, n: jaxrnn.scan(cell, params, x, lengths=n), in_axes=(1, 0), out_axes=(0, 1)
    )(xs, lengths)
    _assert_tree_close(vmapped, batched)


def test_lengths_under_jit_and_grad():
    cell = jaxrnn.lstm(4)
    params = cell.init(jax.random.key(0), 2, jnp.float64)
    xs = jax.random.normal(jax.random.key(1), (5, 3, 2), jnp.float64)
    lengths = jnp.array([5, 2, 0])

    def loss(params, lengths):
        return jaxrnn.scan(cell, params, xs, lengths=lengths)[1].sum()

    np.testing.assert_allclose(jax.jit(loss)(params, lengths), loss(params, lengths), rtol=1e-12)
    grads = jax.jit(jax.grad(loss))(params, lengths)
    # Sequence 2 has length 0, so its inputs get no gradient; sequence 1 only on its 2 steps.
    dxs = jax.grad(lambda xs: jaxrnn.scan(cell, params, xs, lengths=lengths)[1].sum())(xs)
    assert bool((dxs[:, 2] == 0).all()) and bool((dxs[2:, 1] == 0).all())
    assert bool((dxs[:2, 1] != 0).all())
    assert all(bool(jnp.isfinite(g).all()) for g in jax.tree.leaves(grads))


def test_scan_inside_a_users_scan():
    cell = jaxrnn.gru(4)
    params = cell.init(jax.random.key(0), 2, jnp.float64)
    chunks = jax.random.normal(jax.random.key(1), (3, 5, 2), jnp.float64)  # 3 chunks of 5 steps

    def body(carry, chunk):
        return jaxrnn.scan(cell, params, chunk[:, None], carry=carry)

    final, ys = jax.lax.scan(body, cell.initial_carry((1,), jnp.float64), chunks)
    want_final, want_ys = jaxrnn.scan(cell, params, chunks.reshape(15, 1, 2))
    np.testing.assert_allclose(final, want_final, rtol=1e-12)
    np.testing.assert_allclose(ys.reshape(15, 1, 4), want_ys, rtol=1e-12)


def test_a_user_cell_following_the_contract():
    """Any Cell works: an exponential moving average written by a user."""

    def init(key, input_size, dtype=jnp.float32):
        del key
        return jnp.full((input_size,), 0.5, dtype)

    def initial_carry(batch_shape=(), dtype=jnp.float32):
        return jnp.zeros((*batch_shape, 2), dtype)

    def step(decay, carry, x):
        carry = decay * carry + x
        return carry, carry

    cell = jaxrnn.Cell(init, initial_carry, step)
    xs = jnp.ones((3, 2), jnp.float64)
    final, ys = jaxrnn.scan(cell, cell.init(None, 2, jnp.float64), xs)  # no batch axis
    np.testing.assert_allclose(ys[:, 0], [1.0, 1.5, 1.75])
    np.testing.assert_allclose(final, [1.75, 1.75])


def test_unroll_gives_the_same_result():
    cell = jaxrnn.lstm(4)
    params = cell.init(jax.random.key(0), 2, jnp.float64)
    xs = jax.random.normal(jax.random.key(1), (7, 3, 2), jnp.float64)
    run = functools.partial(jaxrnn.scan, cell, params, xs, lengths=jnp.array([7, 3, 5]))
    _assert_tree_close(run(unroll=3), run())
    _assert_tree_close(run(unroll=True), run())

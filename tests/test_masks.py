"""length_mask, last_valid and bidirectional_last against numpy loops, and their errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn


def _numpy_mask(lengths, num_steps):
    """``[T, *batch]``: one Python comparison per entry."""
    lengths = np.asarray(lengths)
    mask = np.zeros((num_steps, *lengths.shape), bool)
    for index in np.ndindex(lengths.shape):
        for t in range(num_steps):
            mask[(t, *index)] = t < lengths[index]
    return mask


def _numpy_last(ys, lengths):
    """``ys[lengths[b] - 1, b]`` for time-major ``ys``, zeros where the length is 0."""
    lengths = np.asarray(lengths)
    out = np.zeros(ys.shape[1:], ys.dtype)
    for index in np.ndindex(lengths.shape):
        if lengths[index] > 0:
            out[index] = ys[(lengths[index] - 1, *index)]
    return out


@pytest.mark.parametrize(
    ("lengths", "num_steps"),
    [([4, 0, 2], 4), (3, 5), ([[1, 5], [0, 2]], 5), ([0, 0], 0)],
    ids=["batch", "no_batch", "2d_batch", "no_steps"],
)
def test_length_mask_matches_numpy_in_both_layouts(lengths, num_steps):
    want = _numpy_mask(lengths, num_steps)
    got = jaxrnn.length_mask(jnp.asarray(lengths), num_steps)
    assert got.dtype == jnp.bool_
    np.testing.assert_array_equal(got, want)
    got_bm = jaxrnn.length_mask(np.asarray(lengths), num_steps, time_major=False)
    np.testing.assert_array_equal(got_bm, np.moveaxis(want, 0, -1))


def test_length_mask_under_jit_treats_lengths_outside_the_range_as_its_ends():
    got = jax.jit(jaxrnn.length_mask, static_argnums=1)(jnp.array([-3, 9, 2]), 4)
    np.testing.assert_array_equal(got, _numpy_mask([0, 4, 2], 4))


@pytest.mark.parametrize("batch_shape", [(), (3,), (2, 3)], ids=str)
@pytest.mark.parametrize("features", [(), (4,), (2, 3)], ids=str)
def test_last_valid_matches_numpy(batch_shape, features):
    num_steps = 5
    rng = np.random.default_rng(0)
    ys = rng.normal(size=(num_steps, *batch_shape, *features))
    lengths = rng.integers(0, num_steps + 1, size=batch_shape)
    if batch_shape == (3,):
        lengths = np.array([0, num_steps, 1])  # both ends
    want = _numpy_last(ys, lengths)
    got = jaxrnn.last_valid(jnp.asarray(ys), jnp.asarray(lengths))
    np.testing.assert_array_equal(got, want)
    ys_bm = np.moveaxis(ys, 0, len(batch_shape))
    np.testing.assert_array_equal(jaxrnn.last_valid(ys_bm, lengths, time_major=False), want)


def test_last_valid_equals_the_final_carry_of_a_scan():
    cell = jaxrnn.gru(4)
    params = cell.init(jax.random.key(0), 3, jnp.float64)
    xs = jax.random.normal(jax.random.key(1), (3, 6, 3), jnp.float64)  # [B, T, I]
    lengths = jnp.array([6, 0, 2])
    carry, ys = jaxrnn.scan(cell, params, xs, lengths=lengths, time_major=False)
    last = jaxrnn.last_valid(ys, lengths, time_major=False)
    np.testing.assert_array_equal(last[jnp.array([0, 2])], carry[jnp.array([0, 2])])
    assert (last[1] == 0).all()  # length 0: zeros, not the initial carry


def test_last_valid_with_no_steps_jit_and_nan_padding():
    assert jaxrnn.last_valid(jnp.zeros((0, 2, 3)), jnp.zeros(2, jnp.int32)).shape == (2, 3)
    ys = jnp.arange(12.0).reshape(4, 3)  # [T, B]
    got = jax.jit(jaxrnn.last_valid)(ys, jnp.array([7, -1, 2]))  # traced: clipped to [0, T]
    np.testing.assert_array_equal(got, _numpy_last(np.asarray(ys), [4, 0, 2]))
    # Padding holding NaN is never read, neither by the value nor by its gradient.
    lengths = jnp.array([4, 0, 2])
    poisoned = jnp.where(jaxrnn.length_mask(lengths, 4), ys, jnp.nan)
    grad = jax.grad(lambda y: jaxrnn.last_valid(y, lengths).sum())(poisoned)
    want_grad = np.zeros((4, 3))
    want_grad[3, 0] = want_grad[1, 2] = 1
    np.testing.assert_array_equal(grad, want_grad)
    assert bool(jnp.isfinite(jaxrnn.last_valid(poisoned, lengths)).all())


def test_last_valid_under_vmap():
    ys = jnp.arange(24.0).reshape(2, 4, 3)  # vmapped over the leading axis: [T, B] each
    lengths = jnp.array([[4, 0, 1], [2, 3, 0]])
    got = jax.vmap(jaxrnn.last_valid)(ys, lengths)
    for k in range(2):
        np.testing.assert_array_equal(got[k], _numpy_last(np.asarray(ys[k]), lengths[k]))


def test_bidirectional_last_matches_numpy_and_the_stacks_final_carries():
    rnn = jaxrnn.stack(jaxrnn.lstm(4), num_layers=2, bidirectional=True)
    params = rnn.init(jax.random.key(0), 3, jnp.float64)
    xs = jax.random.normal(jax.random.key(1), (6, 3, 3), jnp.float64)
    lengths = jnp.array([6, 3, 1])
    carry, ys = rnn.apply(params, xs, lengths=lengths)
    got = jaxrnn.bidirectional_last(ys, lengths)
    y = np.asarray(ys)
    want = np.concatenate([_numpy_last(y[..., :4], lengths), y[0, :, 4:]], axis=-1)
    np.testing.assert_array_equal(got, want)
    # What PyTorch calls h_n of the last layer: forward and backward final hidden states.
    h_n = jnp.concatenate([carry.h[-1, 0], carry.h[-1, 1]], axis=-1)
    np.testing.assert_allclose(got, h_n, rtol=1e-12)
    got_bm = jaxrnn.bidirectional_last(jnp.moveaxis(ys, 0, 1), lengths, time_major=False)
    np.testing.assert_array_equal(got_bm, got)


def test_bidirectional_last_zeros_for_empty_sequences():
    ys = jnp.ones((3, 2, 4))  # outputs that were not zeroed at padded steps
    got = jaxrnn.bidirectional_last(ys, jnp.array([0, 3]))
    np.testing.assert_array_equal(got, [[0, 0, 0, 0], [1, 1, 1, 1]])
    empty = jaxrnn.bidirectional_last(jnp.ones((0, 2, 4)), jnp.array([0, 0]))
    np.testing.assert_array_equal(empty, np.zeros((2, 4)))


def test_bad_arguments_are_named():
    ys = jnp.ones((4, 3, 2))
    with pytest.raises(TypeError, match="lengths: expected an integer dtype"):
        jaxrnn.last_valid(ys, jnp.array([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match=r"lengths: expected values in \[0, T=4\]"):
        jaxrnn.last_valid(ys, jnp.array([1, 5, 3]))
    with pytest.raises(ValueError, match=r"lengths: expected values in \[0, T=4\]"):
        jaxrnn.length_mask(np.array([-1, 2]), 4)
    with pytest.raises(ValueError, match=r"ys: expected shape \[T, \*batch, \.\.\.\]"):
        jaxrnn.last_valid(ys, jnp.array([1, 2]))
    with pytest.raises(ValueError, match=r"ys: expected shape \[\*batch, T, \.\.\.\]"):
        jaxrnn.last_valid(ys, jnp.array([1, 2, 3]), time_major=False)
    with pytest.raises(ValueError, match="ys: expected shape"):
        jaxrnn.last_valid(jnp.ones(3), jnp.array([[1]]))
    with pytest.raises(ValueError, match="even last axis"):
        jaxrnn.bidirectional_last(jnp.ones((4, 3, 5)), jnp.array([1, 2, 3]))
    with pytest.raises(ValueError, match="even last axis"):
        jaxrnn.bidirectional_last(jnp.ones((4, 3)), jnp.array([1, 2, 3]))  # no feature axis
    with pytest.raises(ValueError, match="num_steps: expected a non-negative integer"):
        jaxrnn.length_mask(jnp.array([1]), -1)
    with pytest.raises(ValueError, match="num_steps: expected a non-negative integer"):
        jaxrnn.length_mask(jnp.array([1]), 2.0)
    with pytest.raises(TypeError, match="time_major: expected a bool"):
        jaxrnn.length_mask(jnp.array([1]), 2, time_major=0)

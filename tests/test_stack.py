"""Multi-layer and bidirectional stacks against layer-by-layer composition of `jaxrnn.scan`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jaxrnn

T, B, I = 5, 3, 2
LENGTHS = jnp.array([5, 2, 0])


def _layer(params, i):
    return params.first if i == 0 else jax.tree.map(lambda a: a[i - 1], params.rest)


def _composed(cell, params, xs, carry, num_layers, bidirectional, lengths, merge):
    """The stack written out: layer by layer, direction by direction, with jaxrnn.scan."""
    finals = []
    for i in range(num_layers):
        layer = _layer(params, i)
        c_fwd, y_fwd = jaxrnn.scan(
            cell,
            layer.forward,
            xs,
            carry=jax.tree.map(lambda a, i=i: a[i, 0], carry),
            lengths=lengths,
        )
        if bidirectional:
            c_bwd, y_bwd = jaxrnn.scan(
                cell,
                layer.backward,
                xs,
                carry=jax.tree.map(lambda a, i=i: a[i, 1], carry),
                lengths=lengths,
                reverse=True,
            )
            finals.append(jax.tree.map(lambda f, b: jnp.stack([f, b]), c_fwd, c_bwd))
            xs = merge(y_fwd, y_bwd)
        else:
            finals.append(jax.tree.map(lambda f: f[None], c_fwd))
            xs = y_fwd
    return jax.tree.map(lambda *a: jnp.stack(a), *finals), xs


def _random_carry(rnn, key):
    template = rnn.initial_carry((B,), jnp.float64)
    leaves, treedef = jax.tree.flatten(template)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(
        treedef, [jax.random.normal(k, a.shape, a.dtype) for k, a in zip(keys, leaves, strict=True)]
    )


CELLS = {
    "lstm": lambda: jaxrnn.lstm(4),
    "gru": lambda: jaxrnn.gru(4),
    "elman_output": lambda: jaxrnn.elman(4, output_size=3),
}


@pytest.mark.parametrize("cell_name", list(CELLS))
@pytest.mark.parametrize("num_layers", [1, 3])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_stack_equals_layer_by_layer_composition(cell_name, num_layers, bidirectional):
    cell = CELLS[cell_name]()
    merge = jaxrnn.concat if cell_name != "gru" else (lambda f, b: f + b)
    rnn = jaxrnn.stack(cell, num_layers=num_layers, bidirectional=bidirectional, merge=merge)
    params = rnn.init(jax.random.key(0), I, jnp.float64)
    xs = jax.random.normal(jax.random.key(1), (T, B, I), jnp.float64)
    carry = _random_carry(rnn, jax.random.key(2))
    got = rnn.apply(params, xs, carry=carry, lengths=LENGTHS)
    want = _composed(cell, params, xs, carry, num_layers, bidirectional, LENGTHS, merge)
    for u, v in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(u, v, rtol=1e-12, atol=1e-12)


def test_layers_after_the_first_are_stacked():
    rnn = jaxrnn.stack(jaxrnn.lstm(4), num_layers=4, bidirectional=True)
    params = rnn.init(jax.random.key(0), 7)
    assert params.first.forward.w_ih.shape == (16, 7)
    assert params.rest.forward.w_ih.shape == (3, 16, 8)
    assert params.rest.backward.w_hh.shape == (3, 16, 4)
    assert jaxrnn.stack(jaxrnn.lstm(4)).init(jax.random.key(0), 7).rest is None
    # Every layer and direction draws its own weights.
    assert not np.allclose(params.rest.forward.w_hh[0], params.rest.forward.w_hh[1])
    assert not np.allclose(params.first.forward.w_hh, params.first.backward.w_hh)


def test_batch_major_equals_time_major():
    rnn = jaxrnn.stack(jaxrnn.gru(4), num_layers=2, bidirectional=True)
    params = rnn.init(jax.random.key(0), I, jnp.float64)
    xs = jax.random.normal(jax.random.key(1), (T, B, I), jnp.float64)
    c_tm, y_tm = rnn.apply(params, xs, lengths=LENGTHS)
    c_bm, y_bm = rnn.apply(params, jnp.swapaxes(xs, 0, 1), lengths=LENGTHS, time_major=False)
    np.testing.assert_array_equal(c_tm, c_bm)
    np.testing.assert_array_equal(jnp.swapaxes(y_tm, 0, 1), y_bm)


def test_dropout_only_with_a_key_and_only_between_layers():
    xs = jax.random.normal(jax.random.key(1), (T, B, I), jnp.float32)
    plain = jaxrnn.stack(jaxrnn.lstm(8), num_layers=2)
    dropped = jaxrnn.stack(jaxrnn.lstm(8), num_layers=2, dropout=0.5)
    params = plain.init(jax.random.key(0), I)
    _, want = plain.apply(params, xs)
    _, no_key = dropped.apply(params, xs)
    np.testing.assert_array_equal(no_key, want)
    _, a = dropped.apply(params, xs, key=jax.random.key(3))
    _, b = dropped.apply(params, xs, key=jax.random.key(3))
    _, c = dropped.apply(params, xs, key=jax.random.key(4))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, want) and not np.allclose(a, c)
    # With one layer there is no layer after which to drop (PyTorch's semantics).
    single = jaxrnn.stack(jaxrnn.lstm(8), dropout=0.5)
    p1 = single.init(jax.random.key(0), I)
    np.testing.assert_array_equal(
        single.apply(p1, xs, key=jax.random.key(3))[1], single.apply(p1, xs)[1]
    )


def test_dropout_zeroes_or_rescales_the_first_layers_outputs():
    # An identity first layer (IRNN, identity activation, zero input) exposes the mask:
    # the second layer is an Elman cell with identity input weights and no recurrence.
    rnn = jaxrnn.stack(
        jaxrnn.elman(2, activation="identity", use_bias=False), num_layers=2, dropout=0.25
    )
    params = rnn.init(jax.random.key(0), 2, jnp.float64)
    eye = jnp.eye(2, dtype=jnp.float64)
    zero = jnp.zeros((2, 2), jnp.float64)
    first = params.first._replace(forward=jaxrnn.ElmanParams(eye, zero, None, None))
    rest = params.rest._replace(forward=jaxrnn.ElmanParams(eye[None], zero[None], None, None))
    params = params._replace(first=first, rest=rest)
    xs = jnp.ones((400, 2), jnp.float64)
    _, ys = rnn.apply(params, xs, key=jax.random.key(0))
    values = np.unique(np.asarray(ys))
    np.testing.assert_allclose(values, [0.0, 1 / 0.75])
    assert 0.15 < float((ys == 0).mean()) < 0.35


def test_no_retrace_and_jit_equals_no_jit():
    traces = 0
    rnn = jaxrnn.stack(jaxrnn.lstm(4), num_layers=3, bidirectional=True)

    def run(params, xs):
        nonlocal traces
        traces += 1
        return rnn.apply(params, xs, lengths=LENGTHS)

    params = rnn.init(jax.random.key(0), I)
    xs = jax.random.normal(jax.random.key(1), (T, B, I), jnp.float32)
    jitted = jax.jit(run)
    got = jitted(params, xs)
    jitted(params, 2 * xs)
    assert traces == 1
    for u, v in zip(jax.tree.leaves(got), jax.tree.leaves(run(params, xs)), strict=True):
        np.testing.assert_allclose(u, v, rtol=1e-6, atol=1e-6)


@pytest.mark.smoke
def test_check_grads_through_a_bidirectional_stack():
    rnn = jaxrnn.stack(jaxrnn.gru(3), num_layers=2, bidirectional=True)
    params = rnn.init(jax.random.key(0), I, jnp.float64)
    xs = jax.random.normal(jax.random.key(1), (3, 2, I), jnp.float64)
    lengths = jnp.array([3, 1])
    run = jax.jit(lambda p, x: rnn.apply(p, x, lengths=lengths, backward="autodiff"))
    check_grads(run, (params, xs), order=1, modes=("fwd", "rev"), eps=1e-4)

"""jaxrnn.decode: teacher forcing equals scan, free running equals a loop over cell.step."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jaxrnn

I, H, B, N = 3, 4, 2, 5
F64 = jnp.float64


def _setup(make=lambda: jaxrnn.lstm(H)):
    cell = make()
    params = cell.init(jax.random.key(0), I, F64)
    carry = jax.tree.map(
        lambda a: jax.random.normal(jax.random.key(1), a.shape, a.dtype),
        cell.initial_carry((B,), F64),
    )
    return cell, params, carry


def _feedback(a):
    """A deterministic float sampler: the next input from a readout [*batch, I]."""
    return lambda key, out: jnp.tanh(out @ a.T)


@pytest.mark.parametrize("make", [lambda: jaxrnn.lstm(H), lambda: jaxrnn.gru(H)])
def test_teacher_forcing_equals_scan(make):
    cell, params, carry = _setup(make)
    xs = jax.random.normal(jax.random.key(2), (N, B, I), F64)
    want_carry, want = jaxrnn.scan(cell, params, xs, carry=carry)
    w = jax.random.normal(jax.random.key(3), (7, H), F64)
    got_carry, out = jaxrnn.decode(cell, params, carry, inputs=xs, readout=lambda y: y @ w.T)
    jax.tree.map(
        functools.partial(np.testing.assert_allclose, rtol=1e-12, atol=1e-15), got_carry, want_carry
    )
    np.testing.assert_allclose(out.outputs, want @ w.T, rtol=1e-12, atol=1e-15)
    assert out.samples is None


def test_free_running_equals_a_loop_over_the_step():
    cell, params, carry = _setup()
    a = jax.random.normal(jax.random.key(4), (I, H), F64)
    x0 = jax.random.normal(jax.random.key(5), (B, I), F64)
    got_carry, out = jaxrnn.decode(cell, params, carry, x0, N, sample=_feedback(a))
    c, x, outs, samples = carry, x0, [], []
    for _ in range(N):
        c, y = cell.step(params, c, x)
        x = jnp.asarray(np.tanh(np.asarray(y) @ np.asarray(a).T))
        outs.append(y)
        samples.append(x)
    np.testing.assert_allclose(out.outputs, np.stack(outs), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(out.samples, np.stack(samples), rtol=1e-12, atol=1e-15)
    jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-12), got_carry, c)
    # Teacher forcing on the inputs the free run fed itself gives the same run.
    fed = jnp.concatenate([x0[None], out.samples[:-1]])
    _, forced = jaxrnn.decode(cell, params, carry, inputs=fed, sample=_feedback(a))
    np.testing.assert_allclose(forced.outputs, out.outputs, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(forced.samples, out.samples, rtol=1e-12, atol=1e-15)


def test_token_decoding_with_a_readout_and_an_embedding():
    V = 6
    cell = jaxrnn.gru(H)
    params = cell.init(jax.random.key(0), V, F64)
    w = jax.random.normal(jax.random.key(1), (V, H), F64)
    first = jax.nn.one_hot(jnp.array([0, 3]), V, dtype=F64)
    _, out = jaxrnn.decode(
        cell,
        params,
        cell.initial_carry((B,), F64),
        first,
        N,
        readout=lambda h: h @ w.T,
        sample=lambda key, logits: jnp.argmax(logits, axis=-1),
        embed=lambda ids: jax.nn.one_hot(ids, V, dtype=F64),
    )
    # Greedy decoding by hand: re-run the whole sequence fed so far at every step.
    ids = [np.array([0, 3])]
    for _ in range(N):
        seq = jax.nn.one_hot(np.stack(ids), V, dtype=F64)
        _, hs = jaxrnn.scan(cell, params, seq)
        ids.append(np.argmax(np.asarray(hs[-1]) @ np.asarray(w).T, axis=-1))
    np.testing.assert_array_equal(out.samples, np.stack(ids[1:]))
    assert out.outputs.shape == (N, B, V)


def test_step_keys_are_folded_from_the_key():
    cell, params, carry = _setup()
    x0 = jnp.zeros((B, I), F64)

    def draw(key, out):
        return jax.random.normal(key, (*out.shape[:-1], I), F64)

    key = jax.random.key(7)
    _, a = jaxrnn.decode(cell, params, carry, x0, N, sample=draw, key=key)
    _, again = jaxrnn.decode(cell, params, carry, x0, N, sample=draw, key=key)
    _, other = jaxrnn.decode(cell, params, carry, x0, N, sample=draw, key=jax.random.key(8))
    np.testing.assert_array_equal(a.samples, again.samples)
    assert (np.asarray(a.samples) != np.asarray(other.samples)).all()
    for t in range(N):
        want = jax.random.normal(jax.random.fold_in(key, t), (B, I), F64)
        np.testing.assert_array_equal(a.samples[t], want)
    # A longer run repeats the shorter one's steps: a step's key does not depend on N.
    _, longer = jaxrnn.decode(cell, params, carry, x0, N + 3, sample=draw, key=key)
    np.testing.assert_array_equal(longer.samples[:N], a.samples)
    # Without a key, sample gets None.
    seen = []
    jaxrnn.decode(cell, params, carry, x0, 1, sample=lambda k, out: seen.append(k) or x0)
    assert seen and all(k is None for k in seen)  # traced twice: shapes, then the loop


def test_zero_steps_and_batch_shape_scalar():
    cell, params, carry = _setup()
    x0 = jnp.ones((B, I), F64)
    got, out = jaxrnn.decode(cell, params, carry, x0, 0, sample=lambda k, y: x0)
    jax.tree.map(np.testing.assert_array_equal, got, carry)
    assert out.outputs.shape == (0, B, H) and out.samples.shape == (0, B, I)
    got, out = jaxrnn.decode(cell, params, carry, inputs=jnp.zeros((0, B, I), F64))
    jax.tree.map(np.testing.assert_array_equal, got, carry)
    assert out.outputs.shape == (0, B, H)
    single = jax.tree.map(lambda a: a[0], carry)
    a = jax.random.normal(jax.random.key(4), (I, H), F64)
    _, one = jaxrnn.decode(cell, params, single, x0[0], N, sample=_feedback(a))
    _, both = jaxrnn.decode(cell, params, carry, x0, N, sample=_feedback(a))
    np.testing.assert_allclose(one.outputs, both.outputs[:, 0], rtol=1e-12, atol=1e-15)


def test_jit_vmap_and_gradients():
    cell, params, carry = _setup(lambda: jaxrnn.elman(H))
    a = jax.random.normal(jax.random.key(4), (I, H), F64)
    x0 = jax.random.normal(jax.random.key(5), (B, I), F64)
    xs = jax.random.normal(jax.random.key(2), (N, B, I), F64)

    def free(params, x0):
        return jaxrnn.decode(cell, params, carry, x0, N, sample=_feedback(a))[1].outputs

    np.testing.assert_allclose(jax.jit(free)(params, x0), free(params, x0), rtol=1e-12)
    many = jax.random.normal(jax.random.key(6), (3, B, I), F64)
    batched = jax.vmap(free, in_axes=(None, 0))(params, many)
    for got, x in zip(batched, many, strict=True):
        np.testing.assert_allclose(got, free(params, x), rtol=1e-12, atol=1e-15)
    check_grads(free, (params, x0), order=2, modes=("rev",))
    # Teacher forcing differentiates like scan, with the same random cotangent.
    cot = jax.random.normal(jax.random.key(9), (N, B, H), F64)

    def forced(params, xs):
        return jnp.sum(jaxrnn.decode(cell, params, carry, inputs=xs)[1].outputs * cot)

    def scanned(params, xs):
        return jnp.sum(jaxrnn.scan(cell, params, xs, carry=carry)[1] * cot)

    got = jax.grad(forced, argnums=(0, 1))(params, xs)
    want = jax.grad(scanned, argnums=(0, 1))(params, xs)
    jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-10, atol=1e-12), got, want)


def test_a_recurrent_dropout_cell_decodes_with_its_mask():
    cell = jaxrnn.recurrent_dropout(jaxrnn.elman(H), 0.5)
    params = cell.init(jax.random.key(0), I, F64)
    carry = cell.draw(jax.random.key(1), cell.initial_carry((B,), F64))
    xs = jax.random.normal(jax.random.key(2), (N, B, I), F64)
    got_carry, out = jaxrnn.decode(cell, params, carry, inputs=xs)
    want_carry, want = jaxrnn.scan(cell, params, xs, carry=carry)
    np.testing.assert_array_equal(out.outputs, want)
    np.testing.assert_array_equal(got_carry.noise, want_carry.noise)


def test_errors_name_the_argument():
    cell, params, carry = _setup()
    x0 = jnp.zeros((B, I), F64)
    same = lambda k, y: x0  # noqa: E731
    xs = jnp.zeros((N, B, I), F64)
    with pytest.raises(ValueError, match="num_steps: expected a non-negative integer"):
        jaxrnn.decode(cell, params, carry, x0, -1, sample=same)
    with pytest.raises(ValueError, match="num_steps: expected a non-negative integer"):
        jaxrnn.decode(cell, params, carry, x0, 2.0, sample=same)
    with pytest.raises(ValueError, match="sample: expected a callable"):
        jaxrnn.decode(cell, params, carry, x0, N)
    with pytest.raises(ValueError, match="first_input: expected the first step's input"):
        jaxrnn.decode(cell, params, carry, None, N, sample=same)
    with pytest.raises(ValueError, match="first_input: expected None with inputs"):
        jaxrnn.decode(cell, params, carry, x0, inputs=xs)
    with pytest.raises(ValueError, match="num_steps: expected None or the length of inputs 5"):
        jaxrnn.decode(cell, params, carry, num_steps=4, inputs=xs)
    with pytest.raises(ValueError, match="inputs: expected arrays"):
        jaxrnn.decode(cell, params, carry, inputs=jnp.float64(1.0))
    with pytest.raises(TypeError, match=r"sample: expected embed\(sample\(key, outputs\)\)"):
        jaxrnn.decode(cell, params, carry, x0, N, sample=lambda k, y: y)  # [B, H], not [B, I]
    with pytest.raises(TypeError, match=r"sample: expected embed\(sample\(key, outputs\)\)"):
        jaxrnn.decode(cell, params, carry, x0, N, sample=lambda k, y: x0.astype(jnp.float32))
    with pytest.raises(ValueError, match=r"carry.h: expected shape \(2, 4\)"):  # the step's check
        jaxrnn.decode(cell, params, carry._replace(h=carry.h[..., :1]), x0, N, sample=same)
    narrowing = cell._replace(
        step=lambda p, c, x: jax.tree.map(lambda a: a.astype(jnp.float32), cell.step(p, c, x))
    )
    with pytest.raises(TypeError, match=r"carry: expected a carry that cell\.step returns"):
        jaxrnn.decode(narrowing, params, carry, x0, N, sample=same)
    with pytest.raises(TypeError, match="readout: expected a callable or None"):
        jaxrnn.decode(cell, params, carry, x0, N, sample=same, readout=3)
    with pytest.raises(TypeError, match=r"cell: expected a jaxrnn\.Cell"):
        jaxrnn.decode(jaxrnn.stack(cell), params, carry, x0, N, sample=same)

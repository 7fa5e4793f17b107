"""Sequence parallelism: one sequence split along time across the test session's 4 CPU devices.

Every result is compared with the same call on one device: outputs, final
carry and the VJP of a random cotangent, in float32, to 1e-6 relative to the
largest entry of each array (the associative scans and DEER's solves combine
the steps in another order when split, so rounding differs).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import jaxrnn
from jaxrnn._time_axis import collectives

T, B, I = 32, 3, 2
LENGTHS = np.array([32, 9, 0])  # whole, ending inside the second of four chunks, empty


@pytest.fixture(scope="module")
def mesh():
    assert len(jax.devices()) >= 4, "conftest.py gives the test session 4 CPU devices"
    return jax.make_mesh((4,), ("time",), (jax.sharding.AxisType.Auto,), devices=jax.devices()[:4])


def _close(got, want, tol=1e-6):
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        scale = max(1.0, float(jnp.abs(w).max(initial=0.0)))
        np.testing.assert_allclose(g, w, rtol=0, atol=tol * scale)


def _problem(cell, seed=0):
    params = cell.init(jax.random.key(seed), input_size=I, dtype=jnp.float32)
    xs = jax.random.normal(jax.random.key(seed + 1), (T, B, I), jnp.float32)
    carry = jax.tree.map(
        lambda c: jax.random.uniform(jax.random.key(seed + 2), c.shape, c.dtype, -0.5, 0.5),
        cell.initial_carry((B,), jnp.float32),
    )
    return params, xs, carry


def _vjp(run, params, xs, carry):
    """Outputs, final carry, and the VJP of one fixed random cotangent w.r.t. all three inputs."""
    (final, ys), vjp = jax.vjp(run, params, xs, carry)
    cotangent = jax.tree.map(
        lambda a: jax.random.normal(jax.random.key(7), a.shape, a.dtype), (final, ys)
    )
    return final, ys, vjp(cotangent)


CASES = {  # cell, method, DEER options
    "mingru-associative": (lambda: jaxrnn.mingru(5), "associative", None),
    "lru-associative": (lambda: jaxrnn.lru(4), "associative", None),
    "gru-deer": (lambda: jaxrnn.gru(3), "deer", None),
    "lstm-quasi-deer": (lambda: jaxrnn.lstm(3), "quasi-deer", None),
    "gru-deer-damped": (
        lambda: jaxrnn.gru(3),
        "deer",
        jaxrnn.DEEROptions(damping=0.05, throw=False),
    ),
}


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("case", list(CASES))
def test_split_time_equals_one_device(mesh, case, reverse):
    """Under jit with the mesh set, and inside the user's own shard_map: the one-device answer."""
    make, method, method_options = CASES[case]
    cell = make()
    params, xs, carry = _problem(cell)
    lengths = jnp.asarray(LENGTHS)

    def run(p, x, c, lengths=lengths, **split):
        return jaxrnn.scan(cell, p, x, carry=c, lengths=lengths, reverse=reverse, method=method,
                           method_options=method_options, **split)  # fmt: skip

    want = _vjp(run, params, xs, carry)
    with jax.set_mesh(mesh):
        got = jax.jit(lambda *a: _vjp(lambda *b: run(*b, sequence_axis="time"), *a))(
            params, xs, carry
        )
        # Inside, the lengths arrive traced (and out of range: clipped to [0, T] as documented).
        inner = jax.shard_map(
            lambda p, x, c, n: run(p, x, c, n, sequence_axis="time"),
            in_specs=(P(), P("time"), P(), P()),
            out_specs=(P(), P("time")),
        )
        traced = jnp.asarray(LENGTHS + np.array([5, 0, -2]))
        got_inside = jax.jit(
            lambda p, x, c, n: _vjp(lambda *a: inner(*a, n), p, x, c)
        )(params, xs, carry, traced)  # fmt: skip
    _close(got, want)
    _close(got_inside, want)


@pytest.mark.smoke
def test_padding_never_reaches_a_gradient_on_any_device(mesh):
    cell = jaxrnn.mingru(4)
    params, xs, _ = _problem(cell)
    lengths = jnp.asarray(LENGTHS)
    poisoned = jnp.where(jnp.arange(T)[:, None, None] >= lengths[None, :, None], jnp.nan, xs)

    def loss(p, x):
        _, ys = jaxrnn.scan(cell, p, x, lengths=lengths, method="associative",
                            sequence_axis="time")  # fmt: skip
        return ys.sum()

    with jax.set_mesh(mesh):
        grads = jax.jit(jax.grad(loss, (0, 1)))(params, poisoned)
        clean = jax.jit(jax.grad(loss, (0, 1)))(params, xs)
    assert all(bool(jnp.isfinite(g).all()) for g in jax.tree.leaves(grads[0]))
    _close(grads[0], clean[0], tol=0)
    valid = np.arange(T)[:, None] < LENGTHS[None, :]
    np.testing.assert_array_equal(np.asarray(grads[1])[valid], np.asarray(clean[1])[valid])


def test_a_stack_and_deer_info_split_the_same_way(mesh):
    """Options travel through a bidirectional stack (batch-major, on a 2-D mesh whose other
    axis is left alone); jaxrnn.deer returns the one-device DEERInfo too."""
    rnn = jaxrnn.stack(jaxrnn.mingru(4), num_layers=2, bidirectional=True)
    params = rnn.init(jax.random.key(0), input_size=I)
    xs = jax.random.normal(jax.random.key(1), (B, T, I), jnp.float32)  # batch-major
    lengths = jnp.asarray(LENGTHS)
    want = rnn.apply(params, xs, lengths=lengths, time_major=False, method="associative")
    two_axes = jax.make_mesh((2, 2), ("data", "time"), devices=jax.devices()[:4])
    with jax.set_mesh(two_axes):
        split = jaxrnn.ScanOptions(method="associative", sequence_axis="time")
        got = jax.jit(
            lambda p, x: rnn.apply(p, x, lengths=lengths, time_major=False, options=split)
        )(params, xs)
    _close(got, want)

    cell = jaxrnn.gru(3)
    params, xs, carry = _problem(cell)
    want = jaxrnn.deer(cell, params, xs, carry=carry, lengths=jnp.asarray(LENGTHS))
    with jax.set_mesh(mesh):
        got = jaxrnn.deer(cell, params, xs, carry=carry, lengths=jnp.asarray(LENGTHS),
                          sequence_axis="time")  # fmt: skip
    _close(got[:2], want[:2])
    np.testing.assert_array_equal(got[2].iterations, want[2].iterations)
    np.testing.assert_array_equal(got[2].converged, want[2].converged)


def test_scan_reduce_sums_over_the_whole_split_sequence(mesh):
    cell = jaxrnn.mingru(4)
    params, xs, _ = _problem(cell)
    lengths = jnp.asarray(LENGTHS)
    targets = jax.random.normal(jax.random.key(5), (T, B, 4), jnp.float32)

    def fn(y, target):
        return ((y - target) ** 2).sum(-1)

    def run(p, x, t, **split):
        return jaxrnn.scan_reduce(cell, p, x, fn, t, lengths=lengths, method="associative",
                                  **split)  # fmt: skip

    want = jax.value_and_grad(lambda p: run(p, xs, targets)[1].sum())(params)
    with jax.set_mesh(mesh):
        got = jax.jit(
            jax.value_and_grad(lambda p: run(p, xs, targets, sequence_axis="time")[1].sum())
        )(params)
        inner = jax.shard_map(
            lambda p, x, t: run(p, x, t, sequence_axis="time"),
            in_specs=(P(), P("time"), P("time")),
            out_specs=(P(), P()),
        )
        got_inside = jax.jit(jax.value_and_grad(lambda p: inner(p, xs, targets)[1].sum()))(params)
    _close(got, want)
    _close(got_inside, want)


def test_zero_steps_give_the_initial_carry(mesh):
    cell = jaxrnn.mingru(4)
    params, _, carry = _problem(cell)
    with jax.set_mesh(mesh):
        final, ys = jaxrnn.scan(cell, params, jnp.zeros((0, B, I)), carry=carry,
                                method="associative", sequence_axis="time")  # fmt: skip
    assert ys.shape == (0, B, 4)
    _close(final, carry, tol=0)


@pytest.mark.parametrize("method", ["associative", "deer", "quasi-deer"])
def test_communication_does_not_grow_with_the_sequence(mesh, method):
    """The compiled forward and backward pass hold the same collectives for T = 64 and 1024.

    Each moves O(devices × batch × state) numbers (one chunk total per device,
    one state to a neighbour) or the params' gradient, never a time axis.
    """
    cell = jaxrnn.mingru(3) if method == "associative" else jaxrnn.gru(3)
    params = cell.init(jax.random.key(0), input_size=I)

    def program(num_steps):
        def loss(p, x):
            _, ys = jaxrnn.scan(cell, p, x, lengths=jnp.array([num_steps, 5]), method=method,
                                sequence_axis="time")  # fmt: skip
            return ys.sum()

        xs = jax.ShapeDtypeStruct((num_steps, 2, I), jnp.float32)
        with jax.set_mesh(mesh):
            return jax.jit(jax.grad(loss)).lower(params, xs).compile().as_text()

    short, long = collectives(program(64)), collectives(program(1024))
    assert short and short == long
    state = 3 * 3 if method == "deer" else 3  # a dense Jacobian, or a state / diagonal
    gathered = 4 * 2 * state * 4  # 4 devices × batch 2 × state × 4 bytes
    # and one all-reduce of the params' gradient (every chunk reads the params)
    param_bytes = sum(leaf.nbytes for leaf in jax.tree.leaves(params))
    assert max(size for _, size in short) <= max(gathered, param_bytes)


def test_errors_name_sequence_axis(mesh):
    cell = jaxrnn.mingru(3)
    params = cell.init(jax.random.key(0), input_size=I)
    xs = jnp.ones((T, B, I))
    with pytest.raises(ValueError, match=r"sequence_axis: only for method='associative'"):
        jaxrnn.scan(cell, params, xs, sequence_axis="time")
    with pytest.raises(TypeError, match=r"sequence_axis: expected the name of a mesh axis"):
        jaxrnn.scan(cell, params, xs, method="associative", sequence_axis=0)
    with pytest.raises(ValueError, match=r"sequence_axis: .* got 'time'; no mesh is set"):
        jaxrnn.scan(cell, params, xs, method="associative", sequence_axis="time")
    with jax.set_mesh(mesh):
        with pytest.raises(ValueError, match=r"got 'seq'; the current mesh has axes \('time',\)"):
            jaxrnn.scan(cell, params, xs, method="associative", sequence_axis="seq")
        with pytest.raises(ValueError, match=r"xs: expected a number of steps divisible by the 4"):
            jaxrnn.scan(cell, params, xs[:30], method="associative", sequence_axis="time")

    def inside(lengths):  # lengths of the whole sequence, checked as such in each chunk
        return jax.shard_map(
            lambda x: jaxrnn.scan(cell, params, x, lengths=lengths, method="associative",
                                  sequence_axis="time"),
            mesh=mesh, in_specs=P("time"), out_specs=(P(), P("time")),
        )  # fmt: skip

    with pytest.raises(ValueError, match=r"lengths: expected values in \[0, T=32\]"):
        inside(np.array([33, 0, 0]))(xs)
    lengths = np.array([32, 9, 0])
    want = jaxrnn.scan(cell, params, xs, lengths=lengths, method="associative")
    _close(inside(lengths)(xs), want)

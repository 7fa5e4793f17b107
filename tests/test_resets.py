"""``resets``: the carry restarts inside a sequence, on every path of :func:`jaxrnn.scan`.

The specification (:func:`segment_reference`): each sequence is cut at its
valid resets into segments, and each segment is run on its own from the
initial carry by :func:`tests.helpers.reference_scan`, the Python loop of
the cell's step (backwards with ``reverse``). Outputs, final carry (forward:
the last segment's; reverse: the first segment's, the last one processed)
and the VJP of a random cotangent with respect to params, inputs and the
initial carry are compared, in float64. The resets hit every corner: step
0, two in a row, the last valid step, steps in the padding, and a sequence
that is all padding.

The matrix of cells and paths is covered cyclically: every path runs twice,
once forward and once in reverse, each time with another cell.
"""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P
from jax.test_util import check_grads

import jaxrnn
from tests.helpers import random_carry, reference_scan, vjp_all, wrap_step

T, B, H, I = 7, 3, 4, 3
LENGTHS = np.array([7, 4, 0])
RESETS = np.zeros((T, B), bool)
RESETS[[0, 2, 3, 6], 0] = True  # step 0, two in a row, the last step
RESETS[[3, 5], 1] = True  # the last valid step, and one in the padding
RESETS[[1, 6], 2] = True  # all padding: ignored

CELLS = {
    "elman": lambda: jaxrnn.elman(H),
    "lstm": lambda: jaxrnn.lstm(H),
    "lstm_proj": lambda: jaxrnn.lstm(H, proj_size=2),
    "gru": lambda: jaxrnn.gru(H),
    "mingru": lambda: jaxrnn.mingru(H),
    "minlstm": lambda: jaxrnn.minlstm(H),
    "lru": lambda: jaxrnn.lru(H, r_min=0.5),
    "wrapped_gru": lambda: wrap_step(jaxrnn.gru(H)),
    "wrapped_lstm": lambda: wrap_step(jaxrnn.lstm(H)),
}
PATHS: dict[str, dict] = {
    "fused": {},
    "autodiff": {"backward": "autodiff"},
    "fused_checkpoint": {"checkpoint": 3},
    "autodiff_checkpoint": {"backward": "autodiff", "checkpoint": 3},
    "truncate": {"truncate": 2},
    "associative": {"method": "associative"},
    "deer": {"method": "deer"},
    "quasi_deer": {"method": "quasi-deer"},
}
# (path, cell, reverse): each path forward and in reverse, the cells in turn.
MATRIX = [
    ("fused", "lstm", False),
    ("fused", "gru", True),
    ("autodiff", "wrapped_gru", False),
    ("autodiff", "elman", True),
    ("fused_checkpoint", "gru", False),
    ("fused_checkpoint", "lstm", True),
    ("autodiff_checkpoint", "lstm_proj", False),
    ("autodiff_checkpoint", "elman", True),
    ("truncate", "gru", False),
    ("truncate", "mingru", True),
    ("associative", "lru", False),
    ("associative", "minlstm", True),
    ("deer", "wrapped_lstm", False),
    ("deer", "gru", True),
    ("quasi_deer", "elman", False),
    ("quasi_deer", "lstm", True),
]


def segments(resets: np.ndarray, length: int) -> list[tuple[int, int]]:
    """The segments ``[start, end)`` of one sequence's valid steps, cut at its resets."""
    cuts = [0] + [t for t in range(1, length) if resets[t]] + [length]
    return [(s, e) for s, e in itertools.pairwise(cuts) if e > s]


def segment_reference(cell, params, xs, carry, lengths, resets, reverse=False, truncate=None):
    """The specification: every segment of every sequence run alone from the initial carry."""
    num_steps, batch = xs.shape[:2]
    y_size = jax.eval_shape(cell.step, params, jax.tree.map(lambda a: a[0], carry), xs[0, 0])[1]
    ys, finals = [], []
    for b in range(batch):
        init = jax.tree.map(lambda a, b=b: a[b : b + 1], carry)
        out = [jnp.zeros((1, *y_size.shape), xs.dtype)] * num_steps
        final = init
        parts = segments(resets[:, b], int(lengths[b]))
        for s, e in parts:
            c, y = reference_scan(
                cell, params, xs[s:e, b : b + 1], carry=init, reverse=reverse, truncate=truncate
            )
            out[s:e] = list(y)
            # The last segment processed: the last in time, or the first with reverse.
            if (s, e) == (parts[0] if reverse else parts[-1]):
                final = c
        ys.append(jnp.stack(out))
        finals.append(final)
    return jax.tree.map(lambda *a: jnp.concatenate(a), *finals), jnp.concatenate(ys, axis=1)


@functools.cache
def _setup(name: str, dtype=jnp.float64):
    cell = CELLS[name]()
    k_params, k_carry, k_x = jax.random.split(jax.random.key(3), 3)
    params = cell.init(k_params, I, dtype)
    carry = random_carry(cell, k_carry, (B,), dtype)
    xs = jax.random.normal(k_x, (T, B, I), dtype)
    return cell, params, xs, carry


def _assert_close(got, want, tol=1e-9):
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for u, v in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert u.shape == v.shape and u.dtype == v.dtype
        np.testing.assert_allclose(u, v, rtol=tol, atol=tol)


MATRIX_IDS = [f"{p}-{n}-{'rev' if r else 'fwd'}" for p, n, r in MATRIX]


@pytest.mark.parametrize(("path", "name", "reverse"), MATRIX, ids=MATRIX_IDS)
def test_resets_equal_each_segment_run_alone(path, name, reverse):
    cell, params, xs, carry = _setup(name)
    options = PATHS[path]
    one_step = cell._replace(step=jax.jit(cell.step))

    def want_fn(p, x, c):
        return segment_reference(
            one_step, p, x, c, LENGTHS, RESETS, reverse, options.get("truncate")
        )

    def got_fn(p, x, c):
        return jaxrnn.scan(
            cell,
            p,
            x,
            carry=c,
            lengths=jnp.asarray(LENGTHS),
            resets=jnp.asarray(RESETS),
            reverse=reverse,
            **options,
        )

    _assert_close(vjp_all(got_fn, (params, xs, carry)), vjp_all(want_fn, (params, xs, carry)))


def test_the_matrix_runs_every_path_both_ways_and_every_cell():
    for path in PATHS:
        assert {r for p, _, r in MATRIX if p == path} == {False, True}, path
    assert {n for _, n, _ in MATRIX} == set(CELLS)


def test_the_fused_path_keeps_its_custom_vjp_with_resets():
    """No silent fallback: the fused custom VJP is what runs, with and without checkpoint."""
    cell, params, xs, _ = _setup("gru")
    for options in ({}, {"checkpoint": 3}):
        run = functools.partial(jaxrnn.scan, cell, resets=jnp.asarray(RESETS), **options)
        jaxpr = jax.make_jaxpr(run)(params, xs)
        assert "custom_vjp_call" in str(jaxpr), options


def test_fused_gradients_with_resets_match_finite_differences():
    cell, params, xs, carry = _setup("lstm")
    resets = jnp.asarray(RESETS)

    def f(p, x, c):
        final, ys = jaxrnn.scan(cell, p, x, carry=c, resets=resets, reverse=True)
        return ys, final

    check_grads(f, (params, xs, carry), order=1, modes=("rev",), eps=1e-6)


def test_resets_change_the_result_and_a_reset_at_step_0_does_not():
    cell, params, xs, carry = _setup("gru")
    first = jnp.zeros((T, B), bool).at[0].set(True)
    plain = jaxrnn.scan(cell, params, xs, carry=carry)
    _assert_close(jaxrnn.scan(cell, params, xs, carry=carry, resets=first), plain, 0)
    _, ys = jaxrnn.scan(cell, params, xs, carry=carry, resets=jnp.asarray(RESETS))
    assert not np.allclose(ys[2:, 0], plain[1][2:, 0])


def test_every_step_a_reset_is_one_step_from_the_initial_carry():
    """An exact value: with a reset at every step, y_t = step(carry, x_t) for each t alone."""
    cell, params, xs, carry = _setup("elman")
    _, ys = jaxrnn.scan(cell, params, xs, carry=carry, resets=jnp.ones((T, B), bool))
    want = jax.vmap(lambda x: cell.step(params, carry, x)[1])(xs)
    _assert_close(ys, want, 1e-12)


def test_batch_major_jit_and_vmap_equal_the_time_major_call():
    cell, params, xs, carry = _setup("gru")
    resets, lengths = jnp.asarray(RESETS), jnp.asarray(LENGTHS)
    want = jaxrnn.scan(cell, params, xs, carry=carry, lengths=lengths, resets=resets)
    final, ys = jax.jit(
        lambda x, r: jaxrnn.scan(
            cell, params, x, carry=carry, lengths=lengths, resets=r, time_major=False
        )
    )(jnp.swapaxes(xs, 0, 1), resets.T)
    _assert_close((final, jnp.swapaxes(ys, 0, 1)), want, 1e-12)

    def one(x, c, n, r):  # one sequence: batch shape ()
        return jaxrnn.scan(cell, params, x, carry=c, lengths=n, resets=r)

    mapped = jax.vmap(one, in_axes=(1, 0, 0, 1), out_axes=(0, 1))(xs, carry, lengths, resets)
    _assert_close(mapped, want, 1e-12)


@pytest.mark.parametrize(
    "options",
    [{}, {"method": "associative"}, {"method": "deer"}],
    ids=["fused", "associative", "deer"],
)
def test_nan_in_padding_never_reaches_a_gradient(options):
    name = "mingru" if options.get("method") == "associative" else "gru"
    cell, params, xs, carry = _setup(name)
    lengths = jnp.asarray(LENGTHS)
    pad = jnp.arange(T)[:, None, None] >= lengths[None, :, None]
    poisoned = jnp.where(pad, jnp.nan, xs)

    def loss(p, x, c):
        final, ys = jaxrnn.scan(
            cell,
            p,
            x,
            carry=c,
            lengths=lengths,
            resets=jnp.asarray(RESETS),
            reverse=True,
            **options,
        )
        return ys.sum() + sum(a.sum() for a in jax.tree.leaves(final))

    grads = jax.grad(loss, (0, 1, 2))(params, poisoned, carry)
    assert all(bool(jnp.isfinite(g).all()) for g in jax.tree.leaves(grads))
    assert bool((jnp.where(pad, grads[1], 0) == 0).all())


def test_no_steps():
    cell, params, _, carry = _setup("lstm")
    xs = jnp.zeros((0, B, I))
    for method in ("sequential", "deer"):
        final, ys = jaxrnn.scan(
            cell, params, xs, carry=carry, resets=jnp.zeros((0, B), bool), method=method
        )
        assert ys.shape == (0, B, H)
        _assert_close(final, carry, 0)


def test_scan_reduce_with_resets_equals_scan_then_sum():
    lengths, resets = jnp.asarray(LENGTHS), jnp.asarray(RESETS)
    mask = jnp.arange(T)[:, None] < lengths[None]
    for name, options in (("lstm", {"checkpoint": 3}), ("minlstm", {"method": "associative"})):
        cell, params, xs, carry = _setup(name)
        final, ys = segment_reference(cell, params, xs, carry, LENGTHS, RESETS, reverse=True)
        got_final, sums = jaxrnn.scan_reduce(
            cell,
            params,
            xs,
            lambda y, _: jnp.sin(y).sum(-1),
            carry=carry,
            lengths=lengths,
            resets=resets,
            reverse=True,
            **options,
        )
        _assert_close(got_final, final)
        _assert_close(sums, jnp.where(mask, jnp.sin(ys).sum(-1), 0).sum(0))


def test_stack_restarts_every_layer_and_both_directions():
    rnn = jaxrnn.stack(jaxrnn.gru(H), num_layers=2, bidirectional=True)
    params = rnn.init(jax.random.key(0), I, jnp.float64)
    carry = jax.tree.map(
        lambda a: jax.random.normal(jax.random.key(1), a.shape, a.dtype),
        rnn.initial_carry((B,), jnp.float64),
    )
    xs = jax.random.normal(jax.random.key(2), (B, T, I), jnp.float64)  # batch-major

    # Every segment as one padded sequence of T steps with its length: one compiled program.
    segment = jax.jit(
        lambda p, x, c, n: rnn.apply(p, x, carry=c, lengths=n, time_major=False)
    )  # fmt: skip

    def want_fn(p):
        ys, finals = [], []
        for b in range(B):
            init = carry[:, :, b : b + 1]
            out = jnp.zeros((1, T, 2 * H))
            parts = segments(RESETS[:, b], int(LENGTHS[b]))
            fwd, bwd = init[:, 0], init[:, 1]
            for s, e in parts:
                padded = jnp.zeros((1, T, I), xs.dtype).at[:, : e - s].set(xs[b : b + 1, s:e])
                c, y = segment(p, padded, init, jnp.array([e - s]))
                out = out.at[:, s:e].set(y[:, : e - s])
                fwd = c[:, 0] if (s, e) == parts[-1] else fwd
                bwd = c[:, 1] if (s, e) == parts[0] else bwd
            ys.append(out)
            finals.append(jnp.stack([fwd, bwd], axis=1))
        return jnp.concatenate(finals, axis=2), jnp.concatenate(ys)

    def got_fn(p):
        return rnn.apply(
            p,
            xs,
            carry=carry,
            lengths=jnp.asarray(LENGTHS),
            resets=jnp.asarray(RESETS).T,
            time_major=False,
        )

    # Values only: every layer runs jaxrnn.scan, whose gradients the matrix above checks.
    _assert_close(got_fn(params), want_fn(params))


def test_nnx_modules_forward_resets():
    nnx = pytest.importorskip("flax.nnx")
    import jaxrnn.nnx as jnnx

    rnn = jnnx.LSTM(I, H, bidirectional=True, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(2), (B, T, I), jnp.float32)
    resets, lengths = jnp.asarray(RESETS).T, jnp.asarray(LENGTHS)
    final, ys = rnn(x, seq_lengths=lengths, resets=resets, return_carry=True)
    want_final, want_ys = rnn.stack.apply(
        rnn.to_params(), x, lengths=lengths, resets=resets, time_major=False
    )
    # one bidirectional layer: nnx.Bidirectional's pair of Flax (c, h) carries
    want_pair = tuple((want_final.c[0, d], want_final.h[0, d]) for d in range(2))
    _assert_close((ys, final), (want_ys, want_pair), 0)
    assert not np.allclose(ys, rnn(x, seq_lengths=lengths))


def test_deer_takes_resets_like_scan():
    cell, params, xs, carry = _setup("gru")
    kw = {"carry": carry, "lengths": jnp.asarray(LENGTHS), "resets": jnp.asarray(RESETS)}
    final, ys, info = jaxrnn.deer(cell, params, xs, reverse=True, quasi=True, **kw)
    _assert_close((final, ys), jaxrnn.scan(cell, params, xs, reverse=True, **kw))
    assert bool(info.converged.all())


@pytest.mark.parametrize(
    ("name", "method", "reverse"),
    [("mingru", "associative", True), ("gru", "quasi-deer", True)],
)
def test_sequence_parallel_with_resets_equals_one_device(name, method, reverse):
    assert len(jax.devices()) >= 4, "conftest.py gives the test session 4 CPU devices"
    mesh = jax.make_mesh((4,), ("time",), (jax.sharding.AxisType.Auto,), devices=jax.devices()[:4])
    cell = CELLS[name]()
    steps = 16  # 4 steps per device; resets on chunk boundaries and inside chunks
    params = cell.init(jax.random.key(0), I, jnp.float32)
    xs = jax.random.normal(jax.random.key(1), (steps, B, I), jnp.float32)
    carry = random_carry(cell, jax.random.key(2), (B,), jnp.float32)
    resets = np.zeros((steps, B), bool)
    resets[[3, 4, 8, 13], 0] = True
    resets[[5, 12], 1] = True
    resets = jnp.asarray(resets)
    lengths = jnp.asarray([16, 11, 0])

    def run(p, x, c, r, **split):
        return jaxrnn.scan(
            cell, p, x, carry=c, lengths=lengths, resets=r, reverse=reverse, method=method, **split
        )

    want = vjp_all(lambda p, x, c: run(p, x, c, resets), (params, xs, carry))
    inner = jax.shard_map(
        lambda p, x, c, r: run(p, x, c, r, sequence_axis="time"),
        mesh=mesh,
        in_specs=(P(), P("time"), P(), P("time")),
        out_specs=(P(), P("time")),
    )
    inside = jax.jit(lambda p, x, c: vjp_all(lambda *a: inner(*a, resets), (p, x, c)))
    with jax.set_mesh(mesh):
        outside = jax.jit(
            lambda p, x, c: vjp_all(lambda *a: run(*a, resets, sequence_axis="time"), (p, x, c))
        )
        got = outside(params, xs, carry)
    _assert_close(got, want, 2e-5)
    _assert_close(inside(params, xs, carry), want, 2e-5)


def test_bad_resets_raise_naming_them():
    cell, params, xs, _ = _setup("gru")
    with pytest.raises(TypeError, match=r"resets: expected a bool array.*int"):
        jaxrnn.scan(cell, params, xs, resets=jnp.zeros((T, B), jnp.int32))
    with pytest.raises(ValueError, match=r"resets: expected shape \[T, \*batch\] = \(7, 3\)"):
        jaxrnn.scan(cell, params, xs, resets=jnp.zeros((B, T), bool))
    with pytest.raises(ValueError, match=r"resets: expected shape \[\*batch, T\] = \(3, 7\)"):
        jaxrnn.scan(
            cell, params, jnp.swapaxes(xs, 0, 1), resets=jnp.zeros((T, B), bool), time_major=False
        )
    with pytest.raises(ValueError, match="resets: expected shape"):
        jaxrnn.scan_reduce(cell, params, xs, lambda y, _: y.sum(-1), resets=jnp.zeros(T, bool))
    with pytest.raises(TypeError, match="resets: expected a bool array"):
        jaxrnn.deer(cell, params, xs, resets=np.zeros((T, B)))
    rnn = jaxrnn.stack(jaxrnn.gru(H))
    with pytest.raises(ValueError, match="resets: expected shape"):
        rnn.apply(rnn.init(jax.random.key(0), I), xs, resets=jnp.zeros((T, B, 1), bool))

"""`jaxrnn.scan_reduce` against `jaxrnn.scan` followed by the same reduction.

``jaxrnn.scan`` is the specification here (tests/test_paths.py holds it to
the loop of each cell's own step, path by path): ``scan_reduce`` with the
same options must give its final carry and the sum over valid steps of
``fn(ys[t], targets[t])``, and the same random-cotangent VJPs with respect
to params, inputs, the initial carry, the targets and an array ``fn``
closes over (a readout head), in float64. Then what only the reduction
promises: no ``[T, *batch, O]`` array in the gradient's program, padding
that contributes exactly zero, T = 0, and errors naming the argument.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn
from tests.helpers import random_carry, vjp_all, wrap_step

T, B, H, I, O = 7, 3, 4, 3, 2
LENGTHS = jnp.array([7, 4, 0])
CELLS = {
    "elman_output": lambda: jaxrnn.elman(H, output_size=2, output_activation="sigmoid"),
    "lstm": lambda: jaxrnn.lstm(H),
    "lstm_proj": lambda: jaxrnn.lstm(H, proj_size=2),
    "gru": lambda: jaxrnn.gru(H),
    "mingru": lambda: jaxrnn.mingru(H),
    "minlstm": lambda: jaxrnn.minlstm(H),
    "lru": lambda: jaxrnn.lru(H, r_min=0.5),
    "wrapped_lstm": lambda: wrap_step(jaxrnn.lstm(H)),
    "wrapped_elman": lambda: wrap_step(jaxrnn.elman(H)),
}
# Each cell runs one option set, in turn: every set runs at least once, and lengths,
# no lengths and both directions all occur. checkpoint=3 divides neither T nor the length 4.
OPTIONS = [
    ({"checkpoint": 3}, True, False),
    ({"checkpoint": 3}, True, True),
    ({}, False, True),
    ({"truncate": 3, "checkpoint": 2}, True, True),
    ({"backward": "autodiff", "checkpoint": 3}, True, False),
    ({"truncate": 2}, False, False),
]
MATRIX = [(name, *OPTIONS[i % len(OPTIONS)]) for i, name in enumerate(CELLS)]
MATRIX += [
    ("mingru", {"method": "associative"}, True, True),
    ("gru", {"method": "deer"}, True, False),
]


@functools.cache
def _setup(name: str):
    cell = CELLS[name]()
    k_params, k_carry, k_x, k_target, k_head = jax.random.split(jax.random.key(0), 5)
    params = cell.init(k_params, I, jnp.float64)
    carry = random_carry(cell, k_carry, (B,), jnp.float64)
    xs = jax.random.normal(k_x, (T, B, I), jnp.float64)
    out = jax.eval_shape(cell.step, params, carry, xs[0])[1].shape[-1]
    targets = jax.random.normal(k_target, (T, B, O), jnp.float64)
    head = jax.random.normal(k_head, (out, O), jnp.float64)
    return cell, params, xs, carry, targets, head


def _per_step(head, y, target):
    """A linear head's squared error and a count of positive outputs, per sequence."""
    error = jnp.sum((y @ head - target) ** 2, axis=-1)
    return {"loss": error, "positive": jnp.sum(y > 0, axis=-1)}


def _reduced(ys, targets, head, lengths):
    """The reduction of ``_per_step`` over all of ``scan``'s outputs."""
    values = jax.vmap(functools.partial(_per_step, head))(ys, targets)
    if lengths is not None:
        mask = jnp.arange(ys.shape[0])[:, None] < lengths[None, :]
        values = jax.tree.map(lambda v: jnp.where(mask, v, 0), values)
    return jax.tree.map(lambda v: v.sum(0), values)


@pytest.mark.parametrize(
    ("name", "options", "with_lengths", "reverse"),
    MATRIX,
    ids=[
        f"{n}-{'-'.join(f'{k}{v}' for k, v in o.items()) or 'plain'}-{'lengths' if w else 'full'}"
        f"-{'reverse' if r else 'forward'}"
        for n, o, w, r in MATRIX
    ],
)
def test_scan_reduce_equals_scan_then_the_reduction(name, options, with_lengths, reverse):
    cell, params, xs, carry, targets, head = _setup(name)
    lengths = LENGTHS if with_lengths else None

    def fused(p, x, c, tg, w):
        return jaxrnn.scan_reduce(
            cell,
            p,
            x,
            functools.partial(_per_step, w),
            tg,
            carry=c,
            lengths=lengths,
            reverse=reverse,
            **options,
        )

    def reference(p, x, c, tg, w):
        final, ys = jaxrnn.scan(cell, p, x, carry=c, lengths=lengths, reverse=reverse, **options)
        return final, _reduced(ys, tg, w, lengths)

    primals = (params, xs, carry, targets, head)
    # Integer counts have float0 cotangents: differentiate the float leaves only.
    got_out, got_vjp = vjp_all(lambda *a: _floats(fused(*a)), primals)
    want_out, want_vjp = vjp_all(lambda *a: _floats(reference(*a)), primals)
    tol = 1e-8 if "method" in options else 1e-10
    for got, want in ((got_out, want_out), (got_vjp, want_vjp)):
        assert jax.tree.structure(got) == jax.tree.structure(want)
        for u, v in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            assert u.shape == v.shape and u.dtype == v.dtype
            np.testing.assert_allclose(u, v, rtol=tol, atol=tol)
    counts = fused(*primals)[1]["positive"]
    assert jnp.issubdtype(counts.dtype, jnp.integer)
    np.testing.assert_array_equal(counts, reference(*primals)[1]["positive"])


def _floats(out):
    final, totals = out
    return final, totals["loss"]


def test_the_matrix_runs_every_option_set_and_both_directions():
    for options, *_ in OPTIONS:
        assert any(o == options for _, o, *_ in MATRIX), options
    assert {r for *_, r in MATRIX} == {False, True}
    assert {w for _, _, w, _ in MATRIX} == {False, True}


def _avals(jaxpr):
    """Every abstract value of a jaxpr and of the jaxprs nested in its equations."""
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    for var in (*jaxpr.invars, *jaxpr.constvars):
        yield var.aval
    for eqn in jaxpr.eqns:
        for var in eqn.outvars:
            yield var.aval
        for param in eqn.params.values():
            for sub in param if isinstance(param, list | tuple) else (param,):
                if hasattr(sub, "eqns") or hasattr(getattr(sub, "jaxpr", None), "eqns"):
                    yield from _avals(sub)


@pytest.mark.parametrize("backward", ["fused", "autodiff"])
def test_the_gradient_holds_no_array_of_all_outputs(backward):
    """With checkpoint=k no [T, B, H] outputs nor [T, B, V] logits exist; scan's gradient has."""
    steps, batch, hidden, vocab, chunk = 240, 2, 8, 11, 12
    cell = jaxrnn.lstm(hidden)
    params = {"rnn": cell.init(jax.random.key(0), 1), "w": jnp.ones((hidden, vocab))}
    xs = jnp.ones((steps, batch, 1))
    labels = jnp.zeros((steps, batch), jnp.int32)

    def per_step(params, h, label):
        log_p = jax.nn.log_softmax(h @ params["w"])
        return -jnp.take_along_axis(log_p, label[:, None], axis=-1)[:, 0]

    def reduced(params):
        fn = functools.partial(per_step, params)
        _, total = jaxrnn.scan_reduce(
            cell, params["rnn"], xs, fn, labels, checkpoint=chunk, backward=backward
        )
        return total.sum()

    def materialised(params):
        _, hs = jaxrnn.scan(cell, params["rnn"], xs, checkpoint=chunk, backward=backward)
        return jax.vmap(functools.partial(per_step, params))(hs, labels).sum()

    def largest(fn):
        return max(int(np.prod(a.shape)) for a in _avals(jax.make_jaxpr(jax.grad(fn))(params)))

    outputs = steps * batch * hidden
    assert largest(materialised) >= outputs  # the check can fail
    assert largest(reduced) < outputs / 4
    np.testing.assert_allclose(reduced(params), materialised(params), rtol=1e-5)


def test_padded_steps_contribute_exactly_zero_even_when_they_hold_nan():
    cell, params, xs, _, targets, head = _setup("lstm")
    padded = jnp.arange(T)[:, None] >= LENGTHS[None, :]
    bad_xs = jnp.where(padded[..., None], jnp.nan, xs)
    bad_targets = jnp.where(padded[..., None], jnp.inf, targets)

    @jax.jit
    def totals(p, x, tg):
        def fn(y, target):  # a step worth exactly 1 counts the valid steps
            return {"loss": jnp.sum((y @ head - target) ** 2, axis=-1), "one": jnp.ones(B)}

        sums = jaxrnn.scan_reduce(cell, p, x, fn, tg, lengths=LENGTHS, checkpoint=3)[1]
        return sums["loss"].sum(), sums["one"]

    (_, ones), dirty = jax.value_and_grad(totals, has_aux=True)(params, bad_xs, bad_targets)
    np.testing.assert_array_equal(ones, LENGTHS.astype(ones.dtype))
    clean = jax.value_and_grad(totals, has_aux=True)(params, xs, targets)[1]
    for u, v in zip(jax.tree.leaves(dirty), jax.tree.leaves(clean), strict=True):
        assert np.isfinite(u).all()
        np.testing.assert_allclose(u, v, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("options", [{}, {"checkpoint": 4}, {"method": "associative"}])
def test_zero_steps_give_the_initial_carry_and_zero_totals(options):
    cell = jaxrnn.mingru(H)
    params = cell.init(jax.random.key(0), I)
    carry = random_carry(cell, jax.random.key(1), (B,))
    xs = jnp.ones((0, B, I), jnp.float32)

    def fn(y, _):
        return y.sum(-1), y[:, 0] > 0

    final, totals = jaxrnn.scan_reduce(cell, params, xs, fn, carry=carry, **options)
    np.testing.assert_array_equal(final, carry)
    assert totals[0].shape == (B,) and totals[0].dtype == jnp.float32
    assert totals[1].shape == (B,) and jnp.issubdtype(totals[1].dtype, jnp.integer)
    assert not totals[0].any() and not totals[1].any()


def test_batch_major_targets_and_multi_axis_batch():
    """time_major=False moves each target leaf's time axis like xs's; batch shapes may be 2-D."""
    cell = jaxrnn.gru(H)
    params = cell.init(jax.random.key(0), I)
    xs = jax.random.normal(jax.random.key(1), (2, 3, 5, I))  # [B1, B2, T, I]
    targets = {"y": jax.random.normal(jax.random.key(2), (2, 3, 5)), "w": jnp.ones((2, 3, 5))}
    lengths = jnp.array([[5, 2, 0], [1, 5, 3]])

    def fn(y, tg):
        return tg["w"] * (y.sum(-1) - tg["y"]) ** 2

    final, total = jaxrnn.scan_reduce(
        cell, params, xs, fn, targets, lengths=lengths, time_major=False, checkpoint=2
    )
    want_final, ys = jaxrnn.scan(cell, params, xs, lengths=lengths, time_major=False)
    mask = jnp.arange(5)[None, None, :] < lengths[..., None]
    want = jnp.where(mask, (ys.sum(-1) - targets["y"]) ** 2, 0).sum(-1)
    np.testing.assert_allclose(total, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(final, want_final, rtol=1e-6)


def test_works_under_jit_and_vmap():
    cell = jaxrnn.lstm(H)
    params = cell.init(jax.random.key(0), I)
    xs = jax.random.normal(jax.random.key(1), (4, T, I))  # 4 independent sequences

    def one(x):  # an unbatched sequence [T, I]
        return jaxrnn.scan_reduce(cell, params, x, lambda y, _: jnp.sum(y**2), checkpoint=2)[1]

    got = jax.jit(jax.vmap(one))(xs)
    _, ys = jaxrnn.scan(cell, params, xs, time_major=False)
    np.testing.assert_allclose(got, (ys**2).sum((1, 2)), rtol=1e-5)


def test_errors_name_the_argument():
    cell = jaxrnn.lstm(H)
    params = cell.init(jax.random.key(0), I)
    xs = jnp.ones((T, B, I))

    def run(fn, targets=None, **kwargs):
        return jaxrnn.scan_reduce(cell, params, xs, fn, targets, **kwargs)

    with pytest.raises(ValueError, match=r"fn: expected every value to have the batch shape"):
        run(lambda y, _: y.sum())  # a scalar: the batch was reduced inside fn
    with pytest.raises(ValueError, match=r"fn:.*\['bad'\]"):
        run(lambda y, _: {"ok": y.sum(-1), "bad": y.sum(0)})
    with pytest.raises(TypeError, match="fn: expected a function"):
        run(None)
    with pytest.raises(ValueError, match=r"targets\['labels'\]: expected \[T, \*batch, \.\.\.\]"):
        run(lambda y, t: y.sum(-1), {"labels": jnp.zeros((T + 1, B))})
    with pytest.raises(ValueError, match=r"targets: expected \[\*batch, T, \.\.\.\].*\(3,\)"):
        run(lambda y, t: y.sum(-1), jnp.zeros((B,)), time_major=False)
    with pytest.raises(ValueError, match="lengths"):
        run(lambda y, t: y.sum(-1), lengths=jnp.array([1, 2]))
    with pytest.raises(ValueError, match="checkpoint"):
        run(lambda y, t: y.sum(-1), checkpoint=0)
    with pytest.raises(TypeError, match="raised by fn"):
        run(lambda y, t: y.sum(-1) + t)  # t is None without targets
    layers = jaxrnn.stack(cell, num_layers=2)
    for call in (jaxrnn.scan, functools.partial(jaxrnn.scan_reduce, fn=lambda y, t: y)):
        with pytest.raises(TypeError, match=r"cell: expected a jaxrnn\.Cell, got Stack: a Stack"):
            call(layers, layers.init(jax.random.key(0), I), xs)


def test_training_on_a_per_step_task_scores_inside_the_loop_with_the_same_values():
    """make_train_step and evaluate with the task's step_loss equal them on the outputs."""
    from jaxrnn import tasks, training

    task = tasks.text(12)
    assert task.step_loss is not None
    model = training.readout(jaxrnn.lstm(8), task.output_size, checkpoint=5)
    assert model.reduce is not None
    params = model.init(jax.random.key(0), task.input_size)
    batch = task.sample(jax.random.key(1), 3)
    batch = batch._replace(lengths=jnp.array([12, 5, 0], jnp.int32))
    tx = training.optimizer(1e-2)
    state = training.TrainState.create(params, tx)
    results = []
    for step_loss in (None, task.step_loss):
        step = jax.jit(
            training.make_train_step(model, tx, task.loss, task.metric, step_loss=step_loss)
        )
        new, stats = step(state, batch)
        results.append((new.params, stats["loss"], stats["metric"]))
    (p0, l0, m0), (p1, l1, m1) = results
    np.testing.assert_allclose(l1, l0, rtol=1e-6)
    np.testing.assert_allclose(m1, m0, rtol=1e-6)
    held = training.evaluate(model, params, batch, task.loss, task.metric, step_loss=task.step_loss)
    assert held == pytest.approx({"eval_loss": float(l0), "eval_metric": float(m0)}, rel=1e-6)
    for u, v in zip(jax.tree.leaves(p1), jax.tree.leaves(p0), strict=True):
        np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-7)
    stacked = training.readout(jaxrnn.stack(jaxrnn.lstm(8), num_layers=2), task.output_size)
    assert stacked.reduce is None  # layer after layer: trained on its outputs


def test_long_text_eval_windows_are_the_whole_split_padded():
    from jaxrnn import tasks

    task = tasks.text(60_000)  # the eval split holds about 46k characters
    batch = task.sample(jax.random.key(0), 1, "eval")
    length = int(batch.lengths[0])
    assert 40_000 < length < 60_000 and batch.xs.shape == (1, 60_000, 97)
    assert not batch.xs[0, length:].any() and not batch.targets[0, length:].any()
    assert bool((batch.xs[0, :length].sum(-1) == 1).all())
    assert tasks.decode(batch.xs[0, 1:length].argmax(-1)) == tasks.decode(
        batch.targets[0, : length - 1]
    )
    assert int(task.sample(jax.random.key(0), 1).lengths[0]) == 60_000

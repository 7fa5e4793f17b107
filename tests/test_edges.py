"""The edges of issue 14, each with one answer on every path, and the options that flow.

Every case asserts the outcome and, for an error, the argument the message
names. Expected values come from the loop of the cell's own step
(:func:`tests.helpers.reference_scan`), from the same call with clean input,
or from the definition (T = 0: the initial carry).
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxrnn
import jaxrnn._scan
import jaxrnn.nnx
from jaxrnn import ScanOptions, diagnostics, training
from jaxrnn._checks import ScanKwargs
from tests.helpers import random_carry, reference_scan, vjp_all, wrap_step

I = 3
BUILT_IN = {  # hidden size 4 unless told
    "elman": lambda h=4: jaxrnn.elman(h),
    "elman_output": lambda h=4: jaxrnn.elman(h, output_size=2),
    "lstm": lambda h=4: jaxrnn.lstm(h),
    "lstm_proj": lambda h=4: jaxrnn.lstm(h, proj_size=2),
    "gru": lambda h=4: jaxrnn.gru(h),
    "mingru": lambda h=4: jaxrnn.mingru(h),
    "minlstm": lambda h=4: jaxrnn.minlstm(h),
    "lru": lambda h=4: jaxrnn.lru(h, r_min=0.5),
}
LINEAR = ("mingru", "minlstm", "lru")
FACTORIES = [jaxrnn.elman, jaxrnn.lstm, jaxrnn.gru, jaxrnn.mingru, jaxrnn.minlstm, jaxrnn.lru]


@functools.cache
def _setup(name: str, num_steps: int = 5, batch: int = 3):
    cell = BUILT_IN[name]()
    k_params, k_carry, k_x = jax.random.split(jax.random.key(0), 3)
    params = cell.init(k_params, I, jnp.float64)
    carry = random_carry(cell, k_carry, (batch,), jnp.float64)
    xs = jax.random.normal(k_x, (num_steps, batch, I), jnp.float64)
    return cell, params, xs, carry


def _assert_close(got, want, tol=1e-10):
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for u, v in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert u.shape == v.shape
        np.testing.assert_allclose(u, v, rtol=tol, atol=tol)


def _max_diff(a, b) -> float:
    return max(
        float(jnp.abs(u - v).max())
        for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


# ------------------------------------------------------------------ a wrapped step is honoured


@pytest.mark.parametrize("name", ["lstm", "gru", "elman_output", "mingru"])
@pytest.mark.parametrize(
    "options",
    [{}, {"backward": "autodiff"}, {"method": "deer"}],
    ids=["default", "autodiff", "deer"],
)
def test_a_wrapped_step_is_run_not_the_built_in_equations(name, options):
    cell, params, xs, carry = _setup(name)
    wrapped = wrap_step(cell)
    lengths = jnp.array([5, 2, 0])
    got = jaxrnn.scan(wrapped, params, xs, carry=carry, lengths=lengths, **options)
    want = reference_scan(wrapped, params, xs, carry=carry, lengths=lengths)
    _assert_close(got, want, 1e-8)
    built_in = reference_scan(cell, params, xs, carry=carry, lengths=lengths)
    assert _max_diff(got, built_in) > 1e-3  # the wrapper makes a difference


def test_reference_bptt_refuses_a_replaced_step():
    cell, params, xs, _ = _setup("lstm")
    with pytest.raises(ValueError, match=r"^cell: its step is not the step"):
        jaxrnn.reference.bptt(wrap_step(cell), params, xs, jnp.ones((5, 3, 4)))


def test_associative_refuses_a_replaced_step():
    cell, params, xs, _ = _setup("mingru")
    with pytest.raises(ValueError, match=r"^method: 'associative'.*replaced or wrapped step"):
        jaxrnn.scan(wrap_step(cell), params, xs, method="associative")
    jaxrnn.scan(cell, params, xs, method="associative")  # the cell's own step: fine


# ------------------------------------------------------------------ padding never reaches grads

PADDING_PATHS = {
    "fused": {},
    "autodiff": {"backward": "autodiff"},
    "checkpoint": {"checkpoint": 2},
    "associative": {"method": "associative"},
    "deer": {"method": "deer"},
}
# Every cell on its default path and on others in turn, every path on several cells (each
# pair costs a compilation of ~2 s; the padding is zeroed once, before any path runs).
PADDING = [
    *((name, "fused") for name in BUILT_IN),
    ("elman", "deer"),
    ("elman_output", "checkpoint"),
    ("lstm", "autodiff"),
    ("lstm_proj", "deer"),
    ("gru", "autodiff"),
    ("gru", "checkpoint"),
    ("mingru", "associative"),
    ("minlstm", "checkpoint"),
    ("lru", "associative"),
    ("lru", "deer"),
]


@pytest.mark.parametrize(("name", "path"), PADDING, ids=[f"{n}-{p}" for n, p in PADDING])
def test_nan_and_inf_in_padding_give_the_gradients_of_zero_padding(name, path):
    cell, params, xs, carry = _setup(name)
    lengths = jnp.array([5, 2, 0])
    padded = jnp.arange(5)[:, None, None] >= lengths[None, :, None]
    # NaN in one sequence's padding, +Inf and -Inf in the other's.
    poison = jnp.where(jnp.arange(3)[None, :, None] == 1, jnp.nan, jnp.inf)
    poison = poison * jnp.where(jnp.arange(I) % 2 == 0, 1.0, -1.0)[None, None, :]
    options = PADDING_PATHS[path]

    @jax.jit
    def run(p, x, c):
        return vjp_all(
            lambda p, x, c: jaxrnn.scan(cell, p, x, carry=c, lengths=lengths, **options), (p, x, c)
        )

    clean = run(params, jnp.where(padded, 0.0, xs), carry)
    dirty = run(params, jnp.where(padded, poison, xs), carry)
    for leaf in jax.tree.leaves(dirty):
        assert bool(jnp.isfinite(leaf).all())
    _assert_close(dirty, clean, 0)
    (_, dxs, _) = dirty[1]
    assert bool((jnp.where(padded, dxs, 0) == 0).all())


# ------------------------------------------------------------------ lengths outside [0, T]

LENGTH_PATHS = {
    "fused": {},
    "autodiff": {"backward": "autodiff"},
    "fused_checkpoint": {"checkpoint": 2},
    "autodiff_checkpoint": {"backward": "autodiff", "checkpoint": 2},
    "truncate": {"truncate": 2},
    "associative": {"method": "associative"},
    "deer": {"method": "deer"},
}


@pytest.mark.parametrize("path", LENGTH_PATHS)
def test_lengths_outside_the_range_act_as_its_nearest_end_under_jit(path):
    cell, params, xs, carry = _setup("mingru" if path == "associative" else "lstm")
    options = LENGTH_PATHS[path]

    @jax.jit
    def run(p, x, c, lengths):
        def both(p, x, c):
            return [
                jaxrnn.scan(cell, p, x, carry=c, lengths=lengths, reverse=r, **options)
                for r in (False, True)
            ]

        return vjp_all(both, (p, x, c))

    outside = run(params, xs, carry, jnp.array([9, -2, 3]))
    inside = run(params, xs, carry, jnp.array([5, 0, 3]))
    _assert_close(outside, inside, 1e-12)


# ------------------------------------------------------------------ checkpoint, truncate >= T


def test_checkpoint_and_truncate_beyond_t_mean_the_whole_sequence_without_padding():
    cell, params, xs, carry = _setup("lstm")
    lengths = jnp.array([5, 2, 0])
    huge = 10**9

    def run(**options):
        return jax.jit(
            lambda p, x, c: vjp_all(
                lambda p, x, c: jaxrnn.scan(cell, p, x, carry=c, lengths=lengths, **options),
                (p, x, c),
            )
        )

    for backward in ("fused", "autodiff"):
        want = run(backward=backward)(params, xs, carry)
        for option in ("checkpoint", "truncate"):
            fn = run(backward=backward, **{option: huge})
            # Nothing of the program has a dimension near 10**9 (the old code padded xs to it).
            jaxpr = jax.make_jaxpr(fn)(params, xs, carry)
            dims = [d for v in _all_vars(jaxpr.jaxpr) for d in getattr(v.aval, "shape", ())]
            assert max(dims) <= 64, (backward, option)
            start = time.perf_counter()
            got = fn(params, xs, carry)
            assert time.perf_counter() - start < 60
            _assert_close(got, want, 1e-12)


def _all_vars(jaxpr):
    """Every variable of a jaxpr and of the jaxprs nested in its equations."""
    for eqn in jaxpr.eqns:
        yield from eqn.outvars
        for value in eqn.params.values():
            for sub in value if isinstance(value, tuple | list) else (value,):
                sub = getattr(sub, "jaxpr", sub)  # a ClosedJaxpr holds a Jaxpr
                if hasattr(sub, "eqns"):
                    yield from _all_vars(sub)


# ------------------------------------------------------------------ T = 0

EMPTY_PATHS = {
    "fused": {},
    "autodiff": {"backward": "autodiff"},
    "fused_checkpoint": {"checkpoint": 2},
    "autodiff_checkpoint": {"backward": "autodiff", "checkpoint": 2},
    "truncate": {"truncate": 2},
    "unroll2": {"unroll": 2},
    "associative": {"method": "associative"},
    "deer": {"method": "deer"},
    "quasi_deer": {"method": "quasi-deer"},
}


EMPTY = [(path, True) for path in EMPTY_PATHS] + [("fused", False), ("deer", False)]


@pytest.mark.parametrize(
    ("path", "time_major"),
    EMPTY,
    ids=[f"{p}-{'time_major' if t else 'batch_major'}" for p, t in EMPTY],
)
def test_no_steps_give_the_initial_carry_and_empty_outputs(path, time_major):
    cell, params, _, carry = _setup("mingru" if path == "associative" else "lstm")
    out_size = jax.eval_shape(cell.step, params, carry, jnp.zeros((3, I)))[1].shape[-1]
    xs = jnp.zeros((0, 3, I) if time_major else (3, 0, I), jnp.float64)
    d_final = random_carry(cell, jax.random.key(5), (3,), jnp.float64)
    for lengths in (None, jnp.zeros(3, jnp.int32)):

        def run(p, x, c, lengths=lengths):
            return jaxrnn.scan(
                cell, p, x, carry=c, lengths=lengths, time_major=time_major, **EMPTY_PATHS[path]
            )

        (final, ys), vjp = jax.vjp(run, params, xs, carry)
        _assert_close(final, carry, 0)
        assert ys.shape == ((0, 3, out_size) if time_major else (3, 0, out_size))
        dparams, dxs, dcarry = vjp((d_final, jnp.zeros_like(ys)))
        # The final carry is the initial one: its cotangent passes through unchanged.
        _assert_close(dcarry, d_final, 0)
        assert dxs.shape == xs.shape
        assert jax.tree.structure(dparams) == jax.tree.structure(params)
        assert all(bool((g == 0).all()) for g in jax.tree.leaves(dparams))


# ------------------------------------------------------------------ several feature axes


def _conv_cell(height: int, width: int, hidden: int) -> jaxrnn.Cell:
    """A ConvLSTM-like user cell: x and the carry are images ``[*batch, H, W, C]``.

    The new state of a pixel mixes the old states of its neighbours, so a scan
    over a spatial axis instead of time gives other numbers, not just other shapes.
    """

    def init(key, input_size, dtype=jnp.float32):
        return jax.random.normal(key, (input_size, hidden), dtype)

    def initial_carry(batch_shape=(), dtype=jnp.float32):
        return jnp.zeros((*batch_shape, height, width, hidden), dtype)

    def step(w, h, x):
        neighbours = 0.5 * (jnp.roll(h, 1, axis=-3) + jnp.roll(h, 1, axis=-2))
        h = jnp.tanh(jnp.einsum("...c,ck->...k", x, w) + neighbours)
        return h, h.mean(axis=(-3, -2))

    return jaxrnn.Cell(init, initial_carry, step)


def test_batch_major_images_scan_the_time_axis_with_num_feature_axes():
    height, width, channels, batch, steps = 3, 4, 2, 2, 5
    cell = _conv_cell(height, width, 3)
    params = cell.init(jax.random.key(0), channels, jnp.float64)
    xs = jax.random.normal(jax.random.key(1), (batch, steps, height, width, channels), jnp.float64)
    lengths = jnp.array([5, 2])
    final, ys = jaxrnn.scan(cell, params, xs, lengths=lengths, time_major=False, num_feature_axes=3)
    assert ys.shape == (batch, steps, 3)
    for b in range(batch):
        h = jnp.zeros((height, width, 3), jnp.float64)
        for t in range(steps):
            if t < int(lengths[b]):
                h, y = cell.step(params, h, xs[b, t])
            else:
                y = jnp.zeros(3, jnp.float64)
            np.testing.assert_allclose(ys[b, t], y, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(final[b], h, rtol=1e-12, atol=1e-12)


def test_batch_major_images_without_num_feature_axes_is_an_error_for_this_cell():
    """With one feature axis assumed, W is taken for time: here the carry cannot fit.

    (A user's step that checks nothing and keeps no spatial state would run; the
    library cannot know a user's input rank: num_feature_axes is the user's to give.)
    """
    cell = _conv_cell(3, 4, 3)
    params = cell.init(jax.random.key(0), 2, jnp.float64)
    xs = jnp.ones((2, 5, 3, 4, 2), jnp.float64)
    with pytest.raises(ValueError, match=r"cell\.step on one time step of xs"):
        jaxrnn.scan(cell, params, xs, time_major=False)
    with pytest.raises(ValueError, match=r"^carry: expected shape"):
        jaxrnn.scan(cell, params, xs, carry=jnp.zeros((2, 3, 4, 3)), time_major=False)


# ------------------------------------------------------------------ params that do not fit


def test_params_of_another_cell_name_params_and_both_types():
    cell, _, xs, _ = _setup("lstm")
    gru_params = jaxrnn.gru(4).init(jax.random.key(0), I, jnp.float64)
    with pytest.raises(TypeError, match=r"^params: expected LSTMParams.*got GRUParams"):
        jaxrnn.scan(cell, gru_params, xs)


def test_a_bias_of_the_wrong_length_names_b_hh():
    cell, params, xs, _ = _setup("gru")
    bad = params._replace(b_hh=params.b_hh[:-1])
    with pytest.raises(ValueError, match=r"^params\.b_hh: expected shape \(12,\).*got \(11,\)"):
        jaxrnn.scan(cell, bad, xs)


@pytest.mark.parametrize("name", BUILT_IN)
def test_params_of_another_hidden_size_name_the_field_and_the_expected_shape(name):
    cell, params, xs, _ = _setup(name)
    bigger = BUILT_IN[name](6)
    wrong = bigger.init(jax.random.key(0), I, jnp.float64)
    expected = {f: getattr(getattr(params, f), "shape", None) for f in type(params)._fields}
    with pytest.raises(ValueError, match=r"^params\.\w+: expected shape") as info:
        jaxrnn.scan(cell, wrong, xs)
    message = str(info.value)
    field = message.split(":")[0].removeprefix("params.")
    assert message.startswith("params.") and field in expected
    assert f"expected shape {tuple(expected[field])}" in message
    assert f"got {tuple(getattr(wrong, field).shape)}" in message


def test_a_projection_where_the_cell_has_none_names_w_hr():
    cell = jaxrnn.lstm(4, proj_size=2)
    params = cell.init(jax.random.key(0), I, jnp.float64)
    xs = jnp.ones((5, 3, I), jnp.float64)
    with pytest.raises(ValueError, match=r"^params\.w_hr: expected shape \(2, 4\).*got None"):
        jaxrnn.scan(cell, params._replace(w_hr=None), xs)
    plain = jaxrnn.lstm(2)  # hidden size 2 = the projection's size: only w_hr differs
    plain_params = plain.init(jax.random.key(0), I, jnp.float64)
    with pytest.raises(ValueError, match=r"^params\.w_hr: expected None"):
        jaxrnn.scan(plain, plain_params._replace(w_hr=jnp.ones((2, 2))), xs)


@pytest.mark.parametrize("factory", FACTORIES, ids=lambda f: f.__name__)
@pytest.mark.parametrize("dtype", [jnp.int32, jnp.int8, jnp.bool_], ids=str)
def test_init_refuses_a_non_floating_dtype(factory, dtype):
    with pytest.raises(TypeError, match=r"^dtype: expected a floating dtype"):
        factory(4).init(jax.random.key(0), I, dtype)


@pytest.mark.parametrize("name", BUILT_IN)
def test_integer_params_are_refused_by_scan(name):
    cell, params, xs, _ = _setup(name)
    ints = jax.tree.map(lambda a: a.astype(jnp.int32), params)
    first = type(params)._fields[0]
    with pytest.raises(TypeError, match=rf"^params\.{first}: expected a floating array.*int32"):
        jaxrnn.scan(cell, ints, xs)


def test_an_unknown_keyword_is_named():
    cell, params, xs, _ = _setup("gru")
    with pytest.raises(TypeError, match=r"^chekpoint: not an option of jaxrnn.scan"):
        jaxrnn.scan(cell, params, xs, chekpoint=3)
    rnn = jaxrnn.stack(cell, num_layers=2)
    with pytest.raises(TypeError, match=r"^chekpoint: not an option"):
        rnn.apply(rnn.init(jax.random.key(0), I), xs, chekpoint=3)
    with pytest.raises(TypeError, match=r"^chekpoint: not an option"):
        training.readout(cell, 2, chekpoint=3)


# ------------------------------------------------------------------ options that flow

# A value other than the default for every field of ScanOptions: a new field fails here
# (KeyError) until it has one, and from then on is checked through every entry point.
NON_DEFAULT = {
    "unroll": 2,
    "truncate": 2,
    "checkpoint": 3,
    "backward": "autodiff",
    "method": "deer",
    "method_options": jaxrnn.DEEROptions(tol=1e-4),
    "sequence_axis": "time",  # an axis of ONE_DEVICE_TIME, set around every call below
}
# kernel="cudnn" runs whole sequences of an LSTM in cuDNN, never through the dispatcher
# spied on below: tests/test_cudnn.py checks that every entry point forwards it.
ELSEWHERE = {"kernel"}
# Fields that need another field set to be valid (DEER's options need a DEER method).
NEEDS = {"method_options": {"method": "deer"}, "sequence_axis": {"method": "deer"}}
# A mesh whose "time" axis has one device: it divides any number of steps.
ONE_DEVICE_TIME = jax.make_mesh(
    (1,), ("time",), (jax.sharding.AxisType.Auto,), devices=jax.devices()[:1]
)


def _records() -> list[ScanOptions]:
    """Records, each valid for every entry point, that set every field to NON_DEFAULT.

    Fields go into one record as long as it stays valid (scan_options checks it).
    """
    from jaxrnn._checks import scan_options

    records: list[dict] = []
    for field in [f for f in ScanOptions._fields if f not in ELSEWHERE]:
        value = NON_DEFAULT[field]
        assert value != getattr(ScanOptions(), field), field
        want = {field: value, **NEEDS.get(field, {})}
        for record in records:
            try:
                scan_options(None, {**record, **want})
            except (TypeError, ValueError):
                continue
            if all(record.get(k, v) == v for k, v in want.items()):
                record.update(want)
                break
        else:
            records.append(want)
    return [ScanOptions(**record) for record in records]


RECORDS = _records()


def test_the_keywords_are_the_fields_of_the_record():
    assert set(ScanKwargs.__annotations__) == set(ScanOptions._fields)
    covered = {f for r in RECORDS for f in r._fields if getattr(r, f) != getattr(ScanOptions(), f)}
    assert covered == set(ScanOptions._fields) - ELSEWHERE


def _entry_points(seen: list):
    """``run(**options)`` for every layer that forwards the scan options; ``seen`` is cleared
    after any set-up call, so that it holds what the call itself dispatched."""
    cell = jaxrnn.gru(3)
    xs = jax.random.normal(jax.random.key(1), (5, 2, 2), jnp.float32)  # T > truncate, checkpoint
    params = cell.init(jax.random.key(0), 2)
    rnn = jaxrnn.stack(cell, num_layers=2)
    stack_params = rnn.init(jax.random.key(0), 2)
    module = jaxrnn.nnx.LSTM(2, 3, rngs=nnx.Rngs(0))

    def readout(**kw):
        model = training.readout(cell, 2, **kw)
        model_params = model.init(jax.random.key(0), 2)  # runs a 1-step probe
        seen.clear()
        return model.apply(model_params, jnp.swapaxes(xs, 0, 1))

    return {
        "scan": lambda **kw: jaxrnn.scan(cell, params, xs, **kw),
        "stack": lambda **kw: rnn.apply(stack_params, xs, **kw),
        "readout": readout,
        "nnx": lambda **kw: module(jnp.swapaxes(xs, 0, 1), **kw),
    }


ENTRY_POINTS = ["scan", "stack", "readout", "nnx"]


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("form", ["record", "keywords"])
def test_every_option_reaches_the_dispatcher_unchanged(entry, form, monkeypatch):
    seen = []
    original = jaxrnn._scan._run

    def spy(cell, params, xs, carry, lengths, reverse, options, *rest):
        seen.append(options)
        return original(cell, params, xs, carry, lengths, reverse, options, *rest)

    monkeypatch.setattr(jaxrnn._scan, "_run", spy)
    run = _entry_points(seen)[entry]
    for record in RECORDS:
        seen.clear()
        with jax.set_mesh(ONE_DEVICE_TIME):
            if form == "record":
                run(options=record)
            else:
                run(**record._asdict())
        assert seen, f"{entry} never reached jaxrnn.scan's dispatcher"
        assert all(s == record for s in seen), (entry, record, seen)


@pytest.mark.parametrize("form", ["record", "keywords"])
def test_the_diagnostics_take_the_same_record(form, monkeypatch):
    """carry_grad_norms runs the step itself (not through scan): the record reaches its check."""
    seen = []
    original = diagnostics.scan_options

    def spy(options, kwargs):
        seen.append(original(options, kwargs))
        return seen[-1]

    monkeypatch.setattr(diagnostics, "scan_options", spy)
    cell = jaxrnn.gru(3)
    xs = jax.random.normal(jax.random.key(1), (5, 2, 2), jnp.float32)
    params = cell.init(jax.random.key(0), 2)
    sequential = [r for r in RECORDS if r.method == "sequential"]
    assert sequential
    for record in sequential:
        seen.clear()
        kw = {"options": record} if form == "record" else record._asdict()
        diagnostics.carry_grad_norms(cell, params, xs, lambda ys: (ys**2).sum(), **kw)
        assert seen == [record]
    other = next(r for r in RECORDS if r.method != "sequential")
    with pytest.raises(ValueError, match="method"):
        diagnostics.carry_grad_norms(cell, params, xs, lambda ys: ys.sum(), options=other)


def test_associative_through_a_stack_and_a_readout_equals_sequential():
    rnn = jaxrnn.stack(jaxrnn.mingru(8), num_layers=2)
    params = rnn.init(jax.random.key(0), I, jnp.float64)
    xs = jax.random.normal(jax.random.key(1), (6, 2, I), jnp.float64)
    lengths = jnp.array([6, 3])
    got = rnn.apply(params, xs, lengths=lengths, method="associative")
    _assert_close(got, rnn.apply(params, xs, lengths=lengths), 1e-12)
    got = rnn.apply(params, xs, lengths=lengths, options=ScanOptions(method="associative"))
    _assert_close(got, rnn.apply(params, xs, lengths=lengths), 1e-12)

    model = training.readout(rnn, 2, method="associative")
    sequential = training.readout(rnn, 2)
    model_params = model.init(jax.random.key(2), I, jnp.float64)
    batch_major = jnp.swapaxes(xs, 0, 1)
    _assert_close(
        model.apply(model_params, batch_major, lengths),
        sequential.apply(model_params, batch_major, lengths),
        1e-12,
    )

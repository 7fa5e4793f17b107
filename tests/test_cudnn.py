"""kernel="cudnn": the weight layout, the glue around cuDNN's LSTM and every refusal, on a CPU.

cuDNN itself needs an NVIDIA GPU. Its semantics are those of
``jax.experimental.rnn.lstm_ref``, the reference jax tests cuDNN against, so
on a CPU the dispatch runs with ``lstm_ref`` in cuDNN's place
(``jaxrnn._cudnn._cudnn_lstm``, called with the very arguments
``jax.experimental.rnn.lstm`` takes) and the platform check patched: what is
tested is everything jaxrnn does around the kernel (packing, transposes,
carry layout, lengths, reverse, batch shapes, gradients).
"""

from __future__ import annotations

import inspect

import jax
import jax.experimental.rnn as jrnn
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxrnn
import jaxrnn.nnx
from jaxrnn import _cudnn, diagnostics, training

I, H = 3, 4  # input size ≠ hidden size: W_ih and W_hh have different shapes


def _stack_params(num_layers, bidirectional, dtype=jnp.float32, **cell_kw):
    rnn = jaxrnn.stack(
        jaxrnn.lstm(H, **cell_kw), num_layers=num_layers, bidirectional=bidirectional
    )
    return rnn, rnn.init(jax.random.key(num_layers + 10 * bidirectional), I, dtype)


def _normal(key, shape, dtype=jnp.float32):
    return jax.random.normal(jax.random.key(key), shape, dtype)


def _assert_trees_close(got, want, atol):
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=0, atol=atol)


# ----------------------------------------------------------------------------- the layout

LAYOUTS = [(1, False), (1, True), (2, False), (2, True), (3, False), (3, True)]


def test_pack_is_the_layout_jax_unpacks():
    for num_layers, bidirectional in LAYOUTS:
        _, params = _stack_params(num_layers, bidirectional)
        layers = _cudnn._layers(params)
        flat = _cudnn.pack(layers)
        size = jrnn.get_num_params_in_lstm(I, H, num_layers, bidirectional)
        assert flat.shape == (size,) and flat.dtype == jnp.float32
        w_ih, w_hh, b_ih, b_hh = jrnn.unpack_lstm_weights(flat, I, H, num_layers, bidirectional)
        directions = 2 if bidirectional else 1
        for l in range(num_layers):
            for d in range(directions):
                mine, k = layers[l][d], l * directions + d  # cuDNN's pseudo-layer
                np.testing.assert_array_equal(w_ih[k], mine.w_ih)
                np.testing.assert_array_equal(w_hh[k], mine.w_hh)
                np.testing.assert_array_equal(b_ih[k], mine.b_ih)
                np.testing.assert_array_equal(b_hh[k], mine.b_hh)
        back = _cudnn.unpack(flat, I, H, num_layers, bidirectional)
        assert jax.tree.structure(back) == jax.tree.structure(layers)
        for got, want in zip(jax.tree.leaves(back), jax.tree.leaves(layers), strict=True):
            np.testing.assert_array_equal(got, want)  # unpack(pack(p)) == p exactly


def test_the_layers_of_a_stack_are_its_params_in_order():
    _, params = _stack_params(3, True)
    layers = _cudnn._layers(params)
    assert [len(layer) for layer in layers] == [2, 2, 2]
    assert layers[0][0] is params.first.forward and layers[0][1] is params.first.backward
    np.testing.assert_array_equal(layers[2][1].w_ih, params.rest.backward.w_ih[1])
    assert layers[1][0].w_ih.shape == (4 * H, 2 * H)  # reads both directions below


def test_a_cell_without_biases_packs_zeros():
    _, params = _stack_params(2, False, use_bias=False)
    layers = _cudnn._layers(params)
    _, _, b_ih, b_hh = jrnn.unpack_lstm_weights(_cudnn.pack(layers), I, H, 2, False)
    for b in [*b_ih.values(), *b_hh.values()]:
        np.testing.assert_array_equal(b, np.zeros(4 * H, np.float32))


def test_pack_and_unpack_refuse_what_is_not_the_layout():
    cell = jaxrnn.lstm(H)
    p = cell.init(jax.random.key(0), I)
    projected = jaxrnn.lstm(H, proj_size=2).init(jax.random.key(0), I)
    with pytest.raises(ValueError, match=r"^layers\[0\]\[0\]\.w_hr: .*no projection"):
        _cudnn.pack([[projected]])
    with pytest.raises(ValueError, match=r"^layers\[1\]: expected 1 direction"):
        _cudnn.pack([[p], [p, p]])
    with pytest.raises(ValueError, match=r"^layers\[1\]\[0\]\.w_ih: expected shape \(16, 4\)"):
        _cudnn.pack([[p], [p]])  # layer 1 reads H features, not I
    with pytest.raises(ValueError, match="at least one layer"):
        _cudnn.pack([])
    with pytest.raises(ValueError, match=r"^weights: expected shape \(144,\)"):
        _cudnn.unpack(jnp.zeros(143), I, H, 1, False)


# ------------------------------------------------------------- lstm_ref, the cuDNN reference


def _cotangents(tree, key):
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(jax.random.key(key), len(leaves))
    return treedef.unflatten(
        [jax.random.normal(k, a.shape, a.dtype) for k, a in zip(keys, leaves, strict=True)]
    )


def _dot(a, b):
    return sum((x * y).sum() for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


@pytest.mark.parametrize(("num_layers", "bidirectional"), [(1, False), (2, True)])
def test_lstm_ref_on_the_packed_weights_is_the_stack(num_layers, bidirectional):
    """jax's cuDNN reference on pack(params) equals jaxrnn's stack: outputs, carries, gradients.

    float64 (lstm_ref takes it), lengths from 1 to T (lstm_ref reads the carry at
    step length − 1: a zero length is the dispatch's to handle, tested below).
    """
    rnn, params = _stack_params(num_layers, bidirectional, jnp.float64)
    directions = 2 if bidirectional else 1
    T, B = 6, 4
    xs = _normal(1, (T, B, I), jnp.float64)
    carry = jax.tree.map(
        lambda a: _normal(2, a.shape, jnp.float64), rnn.initial_carry((B,), jnp.float64)
    )
    lengths = jnp.array([T, 1, 4, 5], jnp.int32)

    def ours(params, xs, carry):
        return rnn.apply(params, xs, carry=carry, lengths=lengths)

    def reference(flat, xs, carry):
        weights = jrnn.unpack_lstm_weights(flat, I, H, num_layers, bidirectional)
        lead = (num_layers * directions, B, H)
        y, h_n, c_n = jrnn.lstm_ref(
            jnp.swapaxes(xs, 0, 1),
            carry.h.reshape(lead),
            carry.c.reshape(lead),
            *weights,
            lengths,
            I,
            H,
            num_layers,
            0.0,
            bidirectional,
        )
        return jaxrnn.LSTMCarry(h_n.reshape(carry.h.shape), c_n.reshape(carry.c.shape)), (
            jnp.swapaxes(y, 0, 1)
        )

    flat = _cudnn.pack(_cudnn._layers(params))
    got, got_vjp = jax.vjp(ours, params, xs, carry)
    want, want_vjp = jax.vjp(reference, flat, xs, carry)
    _assert_trees_close(got, want, 1e-12)
    cot = _cotangents(got, 3)
    d_params, d_xs, d_carry = got_vjp(cot)
    d_flat, d_xs_ref, d_carry_ref = want_vjp(cot)
    # pack is linear: the gradient of the flat weights is the packed gradient of the params.
    _assert_trees_close(_cudnn.pack(_cudnn._layers(d_params)), d_flat, 1e-11)
    _assert_trees_close((d_xs, d_carry), (d_xs_ref, d_carry_ref), 1e-11)


# --------------------------------------------------- the dispatch, with lstm_ref for cuDNN


@pytest.fixture
def on_cuda(monkeypatch):
    """cuDNN's place taken by lstm_ref, the platform an NVIDIA GPU; yields the calls made."""
    calls = []
    signature = inspect.signature(jrnn.lstm.fun)

    def lstm(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)  # the arguments of jax.experimental.rnn.lstm
        bound.apply_defaults()
        a = bound.arguments
        x, seq_lengths = a["x"], a["seq_lengths"]
        assert x.ndim == 3 and x.shape[2] == a["input_size"]  # batch-major [N, T, I]
        assert seq_lengths.dtype == jnp.int32 and seq_lengths.shape == (x.shape[0],)
        assert a["dropout"] == 0.0 and a["precision"] is None
        calls.append((a["num_layers"], a["bidirectional"], x.shape))
        weights = jrnn.unpack_lstm_weights(
            a["weights"], a["input_size"], a["hidden_size"], a["num_layers"], a["bidirectional"]
        )
        return jrnn.lstm_ref(
            x,
            a["h_0"],
            a["c_0"],
            *weights,
            seq_lengths,
            a["input_size"],
            a["hidden_size"],
            a["num_layers"],
            a["dropout"],
            a["bidirectional"],
        )

    monkeypatch.setattr(_cudnn, "_cudnn_lstm", lstm)
    monkeypatch.setattr(_cudnn, "platform", lambda: "cuda")
    return calls


def _compare(run, args, atol=2e-5):
    """``run(*args, kernel)`` with cuDNN (lstm_ref) and XLA: values and a random-cotangent VJP."""
    got, got_vjp = jax.vjp(lambda *a: run(*a, "cudnn"), *args)
    want, want_vjp = jax.vjp(lambda *a: run(*a, "xla"), *args)
    _assert_trees_close(got, want, atol)
    cot = _cotangents(want, 7)
    _assert_trees_close(got_vjp(cot), want_vjp(cot), atol)
    return got


@pytest.mark.parametrize(
    ("batch_shape", "lengths", "reverse"),
    [
        ((), None, False),
        ((), 0, True),
        ((4,), [5, 0, 2, 1], False),
        ((4,), [5, 0, 2, 1], True),
        ((2, 3), [[5, 3, 0], [1, 5, 4]], True),
    ],
)
def test_scan_on_cudnn_equals_xla(on_cuda, batch_shape, lengths, reverse):
    cell = jaxrnn.lstm(H)
    params = cell.init(jax.random.key(0), I)
    T = 5
    xs = _normal(1, (T, *batch_shape, I))
    carry = jax.tree.map(lambda a: _normal(2, a.shape), cell.initial_carry(batch_shape))
    lengths = None if lengths is None else jnp.array(lengths)
    if lengths is not None:  # NaN in the padding reaches nothing, on both kernels
        valid = jnp.arange(T).reshape((T,) + (1,) * len(batch_shape)) < lengths[None]
        xs = jnp.where(valid[..., None], xs, jnp.nan)

    def run(params, xs, carry, kernel):
        return jaxrnn.scan(
            cell, params, xs, carry=carry, lengths=lengths, reverse=reverse, kernel=kernel
        )

    (final, ys) = _compare(run, (params, xs, carry))
    assert [c[:2] for c in on_cuda] == [(1, False)]  # one call to cuDNN
    if lengths is not None:  # zero past each length; a length-0 sequence keeps its carry
        assert not ys[~valid].any()
        empty = lengths == 0
        np.testing.assert_array_equal(final.h[empty], carry.h[empty])


def test_scan_on_cudnn_under_jit_batch_major(on_cuda):
    """Traced lengths (clipped to [0, T] as on every path), batch-major input, jit."""
    cell = jaxrnn.lstm(H)
    params = cell.init(jax.random.key(0), I)
    xs = _normal(1, (3, 6, I))  # [B, T, I]
    lengths = jnp.array([6, 0, 9])  # 9 > T acts as T under jit

    run = jax.jit(
        lambda p, x, n, k: jaxrnn.scan(cell, p, x, lengths=n, time_major=False, kernel=k),
        static_argnums=3,
    )
    _assert_trees_close(run(params, xs, lengths, "cudnn"), run(params, xs, lengths, "xla"), 2e-5)
    assert on_cuda


@pytest.mark.parametrize(
    ("num_layers", "bidirectional", "merge"),
    [(2, True, jaxrnn.concat), (3, False, jaxrnn.concat), (1, True, lambda f, b: f * b)],
)
def test_stack_on_cudnn_equals_xla(on_cuda, num_layers, bidirectional, merge):
    rnn = jaxrnn.stack(
        jaxrnn.lstm(H), num_layers=num_layers, bidirectional=bidirectional, merge=merge, dropout=0.5
    )
    params = rnn.init(jax.random.key(0), I)
    batch_shape, T = (2, 3), 5
    xs = _normal(1, (*batch_shape, T, I))  # batch-major
    carry = jax.tree.map(lambda a: _normal(2, a.shape), rnn.initial_carry(batch_shape))
    lengths = jnp.array([[5, 3, 0], [1, 5, 4]])

    def run(params, xs, carry, kernel):  # no key: dropout is off, as in evaluation
        return rnn.apply(
            params, xs, carry=carry, lengths=lengths, time_major=False, options=None, kernel=kernel
        )

    final, _ = _compare(run, (params, xs, carry))
    assert on_cuda == [(num_layers, bidirectional, (6, T, I))]  # the whole stack in one call
    np.testing.assert_array_equal(final.c[:, :, 0, 2], carry.c[:, :, 0, 2])  # length 0


def test_no_steps_and_no_sequences(on_cuda):
    cell = jaxrnn.lstm(H)
    params = cell.init(jax.random.key(0), I)
    carry = jax.tree.map(lambda a: _normal(2, a.shape), cell.initial_carry((2,)))
    final, ys = jaxrnn.scan(
        cell, params, jnp.zeros((0, 2, I), jnp.float32), carry=carry, kernel="cudnn"
    )
    assert ys.shape == (0, 2, H)
    _assert_trees_close(final, carry, 0)
    rnn = jaxrnn.stack(jaxrnn.lstm(H), num_layers=2, bidirectional=True)
    final, ys = rnn.apply(
        rnn.init(jax.random.key(0), I), jnp.zeros((4, 0, I), jnp.float32), kernel="cudnn"
    )
    assert ys.shape == (4, 0, 2 * H) and final.h.shape == (2, 2, 0, H)
    assert not on_cuda  # nothing for cuDNN to compute: it is not called


def _entry_points():
    """``run(**options)`` for every layer that forwards the scan options to an LSTM."""
    cell = jaxrnn.lstm(H)
    xs = _normal(1, (5, 2, I))
    params = cell.init(jax.random.key(0), I)
    rnn = jaxrnn.stack(cell, num_layers=2, bidirectional=True)
    stack_params = rnn.init(jax.random.key(0), I)
    module = jaxrnn.nnx.LSTM(I, H, rngs=nnx.Rngs(0))

    def readout(**kw):
        model = training.readout(rnn, 2, **kw)
        return model.apply(model.init(jax.random.key(0), I), jnp.swapaxes(xs, 0, 1))

    return {
        "scan": lambda **kw: jaxrnn.scan(cell, params, xs, **kw),
        "stack": lambda **kw: rnn.apply(stack_params, xs, **kw),
        "readout": readout,
        "nnx": lambda **kw: module(jnp.swapaxes(xs, 0, 1), **kw),
    }


def test_every_entry_point_forwards_the_kernel(on_cuda):
    """tests/test_edges.py checks the other options; kernel="cudnn" never reaches its spy."""
    for name, run in _entry_points().items():
        for kw in ({"kernel": "cudnn"}, {"options": jaxrnn.ScanOptions(kernel="cudnn")}):
            on_cuda.clear()
            _assert_trees_close(run(**kw), run(), 2e-5)
            assert on_cuda, f"{name} did not reach cuDNN with {kw}"


# ------------------------------------------------------------------------------- refusals


def test_on_a_cpu_cudnn_says_where_it_runs():
    cell = jaxrnn.lstm(H)
    params = cell.init(jax.random.key(0), I)
    message = (
        r"^kernel='cudnn': cuDNN runs on an NVIDIA GPU only; this computation runs on 'cpu' "
        r"\(jax.default_backend\(\)\); use kernel='xla'$"
    )
    with pytest.raises(ValueError, match=message):
        jaxrnn.scan(cell, params, jnp.ones((5, 2, I), jnp.float32), kernel="cudnn")
    rnn = jaxrnn.stack(cell, num_layers=2)
    with pytest.raises(ValueError, match=message):
        rnn.apply(rnn.init(jax.random.key(0), I), jnp.ones((5, 2, I), jnp.float32), kernel="cudnn")


@pytest.mark.parametrize("name", ["rocm", "tpu"])
def test_only_an_nvidia_gpu_runs_cudnn(monkeypatch, name):
    monkeypatch.setattr(_cudnn, "platform", lambda: name)
    with pytest.raises(ValueError, match=f"NVIDIA GPU only; this computation runs on '{name}'"):
        _cudnn.check_platform()


def test_a_kernel_that_does_not_exist():
    cell = jaxrnn.lstm(H)
    params = cell.init(jax.random.key(0), I)
    with pytest.raises(ValueError, match=r"^kernel: expected 'xla' or 'cudnn', got 'cuDNN'$"):
        jaxrnn.scan(cell, params, jnp.ones((5, I), jnp.float32), kernel="cuDNN")
    with pytest.raises(ValueError, match=r"^kernel: expected 'xla' or 'cudnn', got None$"):
        jaxrnn.scan(
            cell, params, jnp.ones((5, I), jnp.float32), options=jaxrnn.ScanOptions(kernel=None)
        )


def _refusals():
    lstm = jaxrnn.lstm(H)
    xs = jnp.ones((5, 2, I), jnp.float32)
    cells = {
        "gru": (jaxrnn.gru(H), "GRUSpec"),
        "elman": (jaxrnn.elman(H), "ElmanSpec"),
        "layernorm_lstm": (jaxrnn.layernorm_lstm(H), "LayerNormLSTMSpec"),
        "soft_sign": (jaxrnn.lstm(H, activation_fn=jax.nn.soft_sign), "activation_fn="),
        "clipped": (jaxrnn.clip_carry_grad(lstm, 1.0), "without a spec"),
        "recurrent_dropout": (jaxrnn.recurrent_dropout(lstm, 0.1), "without a spec"),
        "replaced": (lstm._replace(step=lambda p, c, x: lstm.step(p, c, 2 * x)), "replaced"),
    }
    cases = {
        name: (
            lambda c=cell: jaxrnn.scan(c, c.init(jax.random.key(0), I), xs, kernel="cudnn"),
            rf"^cell: .*{want}",
        )
        for name, (cell, want) in cells.items()
    }
    params = lstm.init(jax.random.key(0), I)

    def scan(xs=xs, params=params, **kw):
        return jaxrnn.scan(lstm, params, xs, kernel="cudnn", **kw)

    projected = jaxrnn.lstm(H, proj_size=2)
    cases |= {
        "projection": (
            lambda: jaxrnn.scan(
                projected, projected.init(jax.random.key(0), I), xs, kernel="cudnn"
            ),
            r"^params\.w_hr: .*no projection",
        ),
        "float64 xs": (lambda: scan(xs.astype(jnp.float64)), r"^xs: .*float32 only; got float64"),
        "float64 params": (
            lambda: scan(params=lstm.init(jax.random.key(0), I, jnp.float64)),
            r"^params: .*float32 only; got float64",
        ),
        "bfloat16 params": (
            lambda: scan(params=lstm.init(jax.random.key(0), I, jnp.bfloat16)),
            r"^params: .*float32 only; got bfloat16",
        ),
        "resets": (lambda: scan(resets=jnp.zeros((5, 2), bool)), r"^resets: .*no segment resets"),
        "truncate": (lambda: scan(truncate=2), r"^truncate: .*truncate=2"),
        "checkpoint": (lambda: scan(checkpoint=2), r"^checkpoint: .*checkpoint=2"),
        "deer": (lambda: scan(method="deer"), r"^method: .*got method='deer'"),
        "autodiff": (lambda: scan(backward="autodiff"), r"^backward: .*'autodiff'"),
        "input size": (
            lambda: scan(jnp.ones((5, 2, I + 1), jnp.float32)),
            r"^x: expected shape \[\*batch, 3\]",
        ),
    }
    deep = jaxrnn.stack(lstm, num_layers=2, bidirectional=True, merge=lambda f, b: f + b)
    dropped = jaxrnn.stack(lstm, num_layers=2, dropout=0.1)
    cases |= {
        "merge": (
            lambda: deep.apply(deep.init(jax.random.key(0), I), xs, kernel="cudnn"),
            r"^merge: .*num_layers=2",
        ),
        "stack dropout": (
            lambda: dropped.apply(
                dropped.init(jax.random.key(0), I), xs, key=jax.random.key(1), kernel="cudnn"
            ),
            r"^dropout: .*dropout=0.1 and a key",
        ),
        "stack of grus": (
            lambda: jaxrnn.stack(jaxrnn.gru(H)).apply(
                jaxrnn.stack(jaxrnn.gru(H)).init(jax.random.key(0), I), xs, kernel="cudnn"
            ),
            r"^cell: .*GRUSpec",
        ),
    }
    return cases


REFUSALS = _refusals()


@pytest.mark.parametrize("case", list(REFUSALS))
def test_cudnn_refuses_what_it_does_not_compute(case, monkeypatch):
    """Each refusal names what stops it, on a GPU as on a CPU (the platform is checked last)."""
    monkeypatch.setattr(_cudnn, "platform", lambda: "cuda")
    run, message = REFUSALS[case]
    with pytest.raises(ValueError, match=message):
        run()


def test_the_drivers_without_cudnn_refuse_it():
    cell = jaxrnn.lstm(H)
    params = cell.init(jax.random.key(0), I)
    xs = jnp.ones((5, 2, I), jnp.float32)
    with pytest.raises(ValueError, match=r"^kernel: 'cudnn' runs in jaxrnn.scan and Stack.apply"):
        jaxrnn.scan_reduce(cell, params, xs, lambda y, _: y.sum(-1), kernel="cudnn")
    with pytest.raises(ValueError, match=r"^kernel: carry_grad_norms .*kernel='cudnn'"):
        diagnostics.carry_grad_norms(cell, params, xs, lambda ys: ys.sum(), kernel="cudnn")

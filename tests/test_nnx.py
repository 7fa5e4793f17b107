"""jaxrnn.nnx: flax NNX modules shaped like Flax's own, computing what the functional API computes.

The references are independent: Flax's ``nnx.RNN`` and ``nnx.Bidirectional``
over Flax's own cells (``nnx.LSTMCell``, ``nnx.GRUCell``, ``nnx.SimpleCell``)
whose weights are mapped from jaxrnn's params here (Flax's per-gate kernels
are the transposed row blocks of ``w_ih``/``w_hh``; Flax keeps one bias where
PyTorch keeps two, so it gets ``b_ih + b_hh``; Flax's GRU has no recurrent
bias in its candidate, so its params are compared at ``b_hn = 0``), PyTorch's
modules, and the functional :func:`jaxrnn.scan`/:func:`jaxrnn.stack`.
Comparisons are in float64 to 1e-12: outputs (over the valid steps: Flax's
outputs past a length are whatever its cell computed on the padding, jaxrnn's
are zero), carries, and gradients with respect to params and inputs of a
loss weighted by a random cotangent. XLA compiles slowly on the 2-core CPU,
so every keyword combination of one kind runs in one ``jax.jit``.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jaxrnn
import jaxrnn.nnx

F64 = jnp.float64
I, H, B, T = 3, 4, 3, 5
LENGTHS = jnp.array([5, 2, 4])

KINDS: dict[str, tuple[Any, Any, dict[str, Any]]] = {
    "lstm": (jaxrnn.nnx.LSTM, jaxrnn.lstm, {"proj_size": 2, "forget_bias": 1.0}),
    "gru": (jaxrnn.nnx.GRU, jaxrnn.gru, {}),
    "elman": (jaxrnn.nnx.Elman, jaxrnn.elman, {"activation": "relu", "output_size": 2}),
}
FLAX_CELLS = {"lstm": nnx.LSTMCell, "gru": nnx.GRUCell, "elman": nnx.SimpleCell}
MODULES = {"lstm": jaxrnn.nnx.LSTM, "gru": jaxrnn.nnx.GRU, "elman": jaxrnn.nnx.Elman}
FACTORIES = {"lstm": jaxrnn.lstm, "gru": jaxrnn.gru, "elman": jaxrnn.elman}


def assert_trees_close(got: Any, want: Any, tol: float = 1e-12) -> None:
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=tol, atol=tol)


def assert_trees_equal(got: Any, want: Any) -> None:
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert g.dtype == w.dtype
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w))


# Test data from numpy: every jax.random shape would be one more XLA compilation.
RNG = np.random.default_rng(0)


def normal(shape: tuple[int, ...], dtype: Any = F64) -> jax.Array:
    return jnp.asarray(RNG.standard_normal(shape), dtype)


def random_like(tree: Any) -> Any:
    return jax.tree.map(lambda a: normal(a.shape, a.dtype), tree)


def random_params(rnn: Any, dtype: Any = F64) -> Any:
    """Params of ``rnn`` (a cell or a stack) for input size I, drawn by numpy."""
    return random_like(jax.eval_shape(lambda: rnn.init(jax.random.key(0), I, dtype)))


def grads_as_params(module: Any, grads: nnx.State) -> Any:
    """``nnx.grad``'s gradients with respect to a module, in the functional layout."""
    graphdef, _, rest = nnx.split(module, nnx.Param, ...)
    return nnx.merge(graphdef, grads, rest).to_params()


# ---------------------------------------------------------------------------
# Flax's own cells with jaxrnn's weights


def flax_cell(kind: str, p: Any) -> Any:
    """Flax's cell of ``kind`` whose weights are jaxrnn's cell params ``p`` (arrays or tracers)."""
    cell = FLAX_CELLS[kind](I, H, dtype=F64, param_dtype=F64, rngs=nnx.Rngs(0))
    if kind == "lstm":
        names = [("ii", "hi"), ("if_", "hf"), ("ig", "hg"), ("io", "ho")]  # gate order i, f, g, o
        for k, (i_name, h_name) in enumerate(names):
            rows = slice(k * H, (k + 1) * H)
            getattr(cell, i_name).kernel.set_value(p.w_ih[rows].T)
            getattr(cell, h_name).kernel.set_value(p.w_hh[rows].T)
            getattr(cell, h_name).bias.set_value(p.b_ih[rows] + p.b_hh[rows])
    elif kind == "gru":  # n = tanh(W_in x + b_in + r * (W_hn h)): no b_hn
        cell.dense_i.kernel.set_value(p.w_ih.T)
        cell.dense_i.bias.set_value(p.b_ih + p.b_hh.at[2 * H :].set(0.0))
        cell.dense_h.kernel.set_value(p.w_hh.T)
    else:
        cell.dense_i.kernel.set_value(p.w_ih.T)
        cell.dense_i.bias.set_value(p.b_ih + p.b_hh)
        cell.dense_h.kernel.set_value(p.w_hh.T)
    return cell


def flax_comparable_params(kind: str) -> Any:
    """Random float64 params of a plain one-layer cell, with ``b_hn = 0`` for the GRU."""
    p = random_params(FACTORIES[kind](H))
    return p._replace(b_hh=p.b_hh.at[2 * H :].set(0.0)) if kind == "gru" else p


def without_b_hn(kind: str, grads: Any) -> Any:
    """Flax's GRU has no ``b_hn``: its gradient is jaxrnn's alone, left out of the comparison."""
    if kind != "gru":
        return grads
    return jax.tree.map(lambda g: g, grads)._replace(b_hh=grads.b_hh.at[2 * H :].set(0.0))


def valid_mask(lengths: jax.Array, time_major: bool) -> jax.Array:
    mask = jnp.arange(T)[None, :] < lengths[:, None]  # [B, T]
    return (mask.T if time_major else mask)[..., None]


# One call per combination of nnx.RNN's keywords; every one with return_carry=True for the carry
# (the outputs-only form is checked below), seq_lengths (LENGTHS holds a full length, T) and an
# initial carry.
CONFIGS = [
    {},
    {"reverse": True},
    {"reverse": True, "keep_order": True},
    {"reverse": True, "keep_order": True, "time_major": True},
]


@pytest.mark.parametrize("kind", ["lstm", "gru", "elman"])
def test_one_layer_module_equals_flax_rnn_over_flax_cells(kind):
    p = flax_comparable_params(kind)
    x = normal((B, T, I))
    flax_carry0 = jax.tree.map(
        lambda a: normal(a.shape), flax_cell(kind, p).initialize_carry((B, I), nnx.Rngs(0))
    )
    weights = [(normal((B, T, H)), random_like(flax_carry0)) for _ in CONFIGS]
    stack_params = jaxrnn.StackParams(jaxrnn.LayerParams(p, None), None)

    def loss(config, weight, carry, ys):
        ys = jnp.swapaxes(ys, 0, 1) if config.get("time_major") else ys
        w_ys, w_carry = weight
        terms = jax.tree.map(lambda a, w: jnp.sum(a * w), carry, w_carry)
        return jnp.sum(jnp.where(valid_mask(LENGTHS, False), ys, 0.0) * w_ys) + sum(
            jax.tree.leaves(terms)
        )

    def run(which, params, x, carry0, config):
        xin = jnp.swapaxes(x, 0, 1) if config.get("time_major") else x
        kw = {"initial_carry": carry0, "seq_lengths": LENGTHS, "return_carry": True, **config}
        if which == "flax":
            return nnx.RNN(flax_cell(kind, params.first.forward))(xin, **kw)
        return MODULES[kind].from_params(params)(xin, **kw)

    @jax.jit
    def both(params, x, carry0):
        out = {}
        for which in ("flax", "jaxrnn"):
            for n, config in enumerate(CONFIGS):

                def f(params, x, carry0, config=config, n=n, which=which):
                    carry, ys = run(which, params, x, carry0, config)
                    return loss(config, weights[n], carry, ys), (carry, ys)

                out[which, n] = jax.value_and_grad(f, argnums=(0, 1, 2), has_aux=True)(
                    params, x, carry0
                )
        return out

    out = both(stack_params, x, flax_carry0)
    for n, config in enumerate(CONFIGS):
        (_, (f_carry, f_ys)), f_grads = out["flax", n]
        (_, (carry, ys)), grads = out["jaxrnn", n]
        mask = valid_mask(LENGTHS, bool(config.get("time_major")))
        assert ys.dtype == F64 and ys.shape == f_ys.shape
        np.testing.assert_array_equal(np.asarray(jnp.where(mask, 0.0, ys)), 0.0)  # padding: 0
        assert_trees_close(jnp.where(mask, ys, 0.0), jnp.where(mask, f_ys, 0.0))
        assert_trees_close(carry, f_carry)  # Flax's structure: (c, h) for an LSTM
        g_params, g_x, g_carry = grads
        f_params, f_x, f_carry0 = f_grads
        assert_trees_close(
            without_b_hn(kind, g_params.first.forward), without_b_hn(kind, f_params.first.forward)
        )
        assert_trees_close((g_x, g_carry), (f_x, f_carry0))
        assert float(jnp.abs(g_x).max()) > 0


def test_outputs_only_and_no_lengths_equal_flax_rnn():
    p = flax_comparable_params("lstm")
    module = jaxrnn.nnx.LSTM.from_params(jaxrnn.StackParams(jaxrnn.LayerParams(p, None), None))
    flax_rnn = nnx.RNN(flax_cell("lstm", p))
    x = normal((2, B, T, I))  # two batch axes
    defaults = jaxrnn.nnx.LSTM.from_params(module.to_params(), return_carry=True, reverse=True)
    flax_defaults = nnx.RNN(flax_cell("lstm", p), return_carry=True, reverse=True)
    configs = [{}, {"reverse": True}, {"reverse": True, "keep_order": True}]

    @nnx.jit
    def run(module, flax_rnn, defaults, flax_defaults, x):
        got = [module(x, **kw) for kw in configs] + [defaults(x)]
        want = [flax_rnn(x, **kw) for kw in configs] + [flax_defaults(x)]
        # nnx.RNN's constructor defaults are the module's attributes; the call overrides them
        got.append(defaults(x, return_carry=False, reverse=False))
        want.append(flax_rnn(x))
        return got, want

    got, want = run(module, flax_rnn, defaults, flax_defaults, x)
    assert all(isinstance(ys, jax.Array) for ys in got[:3] + got[4:])
    assert_trees_close(got, want)


def test_bidirectional_module_equals_flax_bidirectional():
    fwd, bwd = flax_comparable_params("lstm"), flax_comparable_params("lstm")
    params = jaxrnn.StackParams(jaxrnn.LayerParams(fwd, bwd), None)
    x = normal((B, T, I))
    carry0 = random_like(jaxrnn.nnx.LSTM.from_params(params).initial_carry((B,)))
    (c_f, _), (_, h_b) = carry0  # nnx.Bidirectional's pair of Flax LSTM carries
    assert c_f.shape == h_b.shape == (B, H)
    w_ys = normal((B, T, 2 * H))

    def run(which, params, x, carry0):
        kw = {"initial_carry": carry0, "seq_lengths": LENGTHS, "return_carry": True}
        if which == "flax":
            f, b = params.first.forward, params.first.backward
            bi = nnx.Bidirectional(nnx.RNN(flax_cell("lstm", f)), nnx.RNN(flax_cell("lstm", b)))
        elif which == "module":
            bi = jaxrnn.nnx.LSTM.from_params(params)
        else:  # jaxrnn's one-direction modules as nnx.Bidirectional's RNNs: a drop-in
            one = [
                jaxrnn.LayerParams(params.first.forward, None),
                jaxrnn.LayerParams(params.first.backward, None),
            ]
            f, b = (jaxrnn.nnx.LSTM.from_params(jaxrnn.StackParams(layer, None)) for layer in one)
            bi = nnx.Bidirectional(f, b)
        carry, ys = bi(x, **kw)
        loss = jnp.sum(jnp.where(valid_mask(LENGTHS, False), ys, 0.0) * w_ys)
        return loss + sum(jnp.sum(a) for a in jax.tree.leaves(carry)), (carry, ys)

    @jax.jit
    def all_three(params, x, carry0):
        return {
            which: jax.value_and_grad(run, argnums=(1, 2, 3), has_aux=True)(
                which, params, x, carry0
            )
            for which in ("flax", "module", "wrapped")
        }

    out = all_three(params, x, carry0)
    mask = valid_mask(LENGTHS, False)
    (_, (f_carry, f_ys)), f_grads = out["flax"]
    for which in ("module", "wrapped"):
        (_, (carry, ys)), grads = out[which]
        assert_trees_close(jnp.where(mask, ys, 0.0), jnp.where(mask, f_ys, 0.0))
        assert_trees_close(carry, f_carry)
        assert_trees_close(grads, f_grads)


# ---------------------------------------------------------------------------
# Stacked modules against the functional stacks


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_stacked_module_equals_functional_stack_outputs_carries_and_gradients(kind):
    module_cls, factory, options = KINDS[kind]
    rnn = jaxrnn.stack(factory(H, **options), num_layers=2, bidirectional=True)
    params = random_params(rnn)
    module = module_cls.from_params(params, **options)
    x = normal((B, T, I))  # batch-major, the module's default
    stack_carry0 = random_like(rnn.initial_carry((B,), F64))
    carry0 = jaxrnn._flax_conventions.to_flax(stack_carry0)  # (c, h) with leading axes [L, D]
    assert_trees_equal(jax.tree.map(jnp.zeros_like, carry0), module.initial_carry((B,), F64))
    out_shapes = jax.eval_shape(lambda: rnn.apply(params, x, carry=stack_carry0, time_major=False))
    w_carry, w_ys = random_like(out_shapes)

    def loss(ys: jax.Array, carry: Any) -> jax.Array:
        terms = jax.tree.map(lambda a, w: jnp.sum(a * w), (carry, ys), (w_carry, w_ys))
        return sum(jax.tree.leaves(terms))

    @nnx.jit
    def both(module, params, x, carry0, stack_carry0, lengths):
        def module_loss(module):
            carry, ys = module(x, initial_carry=carry0, seq_lengths=lengths, return_carry=True)
            carry = jaxrnn._flax_conventions.from_flax(carry, stack_carry0)
            return loss(ys, carry), (ys, carry)

        def functional_loss(params):
            carry, ys = rnn.apply(params, x, carry=stack_carry0, lengths=lengths, time_major=False)
            return loss(ys, carry), (ys, carry)

        (_, module_out), module_grads = nnx.value_and_grad(module_loss, has_aux=True)(module)
        (_, functional_out), functional_grads = jax.value_and_grad(functional_loss, has_aux=True)(
            params
        )
        time_major_out = module(
            jnp.swapaxes(x, 0, 1),
            initial_carry=carry0,
            seq_lengths=lengths,
            time_major=True,
            return_carry=True,
        )
        return module_out, module_grads, functional_out, functional_grads, time_major_out

    module_out, module_grads, functional_out, functional_grads, time_major_out = both(
        module, params, x, carry0, stack_carry0, LENGTHS
    )
    ys = module_out[0]
    assert ys.shape == (B, T, module.out_features) and ys.dtype == F64
    assert_trees_close(module_out, functional_out)
    tm_carry, tm_ys = time_major_out
    assert_trees_close(
        (jnp.swapaxes(tm_ys, 0, 1), jaxrnn._flax_conventions.from_flax(tm_carry, stack_carry0)),
        module_out,
    )
    np.testing.assert_array_equal(np.asarray(ys[1, 2:]), 0.0)  # past length 2: zeros
    assert_trees_close(grads_as_params(module, module_grads), functional_grads)
    assert all(np.abs(np.asarray(g)).max() > 0 for g in jax.tree.leaves(functional_grads))


def test_reverse_of_a_stack_runs_every_layer_backward_and_resets_follow():
    """reverse=True of a 2-layer module is two layers of jaxrnn.scan(reverse=True), with resets."""
    cell = jaxrnn.gru(H)
    rnn = jaxrnn.stack(cell, num_layers=2)
    params = random_params(rnn)
    module = jaxrnn.nnx.GRU.from_params(params)
    x = normal((T, B, I))
    resets = jnp.asarray(np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0], [0, 1, 1], [0, 0, 1]], bool))

    @nnx.jit
    def run(module, params, x):
        got = module(
            x, seq_lengths=LENGTHS, resets=resets, reverse=True, keep_order=True,
            time_major=True, return_carry=True,
        )  # fmt: skip
        rest = jax.tree.map(lambda a: a[0], params.rest.forward)
        kw = {"lengths": LENGTHS, "resets": resets, "reverse": True}
        h0, y0 = jaxrnn.scan(cell, params.first.forward, x, **kw)
        h1, y1 = jaxrnn.scan(cell, rest, y0, **kw)
        return got, (jnp.stack([h0, h1])[:, None], y1)

    got, want = run(module, params, x)
    assert_trees_close(got, want)


@pytest.mark.smoke
def test_a_module_built_from_functional_params_gives_the_functional_outputs():
    rnn = jaxrnn.stack(jaxrnn.gru(H), num_layers=2)
    params = random_params(rnn)
    module = jaxrnn.nnx.GRU.from_params(params)
    assert module.cell_options == {} and module.out_features == H
    x = normal((B, T, I))
    with jax.disable_jit():
        carry, ys = module(x, seq_lengths=LENGTHS, return_carry=True)
        want_carry, want_ys = rnn.apply(params, x, lengths=LENGTHS, time_major=False)
    assert_trees_equal((ys, carry), (want_ys, want_carry))
    elman = jaxrnn.stack(jaxrnn.elman(H, activation="relu"), bidirectional=True)
    module = jaxrnn.nnx.Elman.from_params(random_params(elman), activation="relu")
    assert module.cell_options == {"activation": "relu"} and module.out_features == 2 * H


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_functional_params_round_trip_exactly_through_a_module(kind):
    module_cls, factory, options = KINDS[kind]
    rnn = jaxrnn.stack(factory(H, **options), num_layers=3, bidirectional=True)
    params = random_params(rnn)
    runtime_options = {"activation": "relu"} if kind == "elman" else {}
    module = module_cls.from_params(params, **runtime_options)
    assert (module.in_features, module.hidden_features, module.num_layers) == (I, H, 3)
    assert module.bidirectional and module.param_dtype == F64
    out = options.get("proj_size", options.get("output_size", H))
    assert module.out_features == 2 * out
    back = module.to_params()
    assert_trees_equal(back, params)
    assert all(a is b for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(params), strict=True))
    again = module_cls.from_params(module.to_params(), **runtime_options)
    assert_trees_equal(nnx.state(again), nnx.state(module))


def test_cell_options_reach_the_functional_cells():
    module = jaxrnn.nnx.LSTM(I, H, forget_bias=1.0, param_dtype=F64, rngs=nnx.Rngs(0))
    b_ih = module.to_params().first.forward.b_ih
    np.testing.assert_array_equal(np.asarray(b_ih[H : 2 * H]), 1.0)
    assert module.cell_options == {"forget_bias": 1.0}
    assert module.params.first.forward.b_ih.get_value() is b_ih
    c, h = module.initial_carry((B,))
    assert module.out_features == H and c.shape == h.shape == (B, H)
    # no bias: the None fields are no state at all
    bare = jaxrnn.nnx.LSTM(I, H, use_bias=False, rngs=nnx.Rngs(0))
    paths = {path for path, _ in nnx.to_flat_state(nnx.state(bare, nnx.Param))}
    assert paths == {("params", "first", "forward", "w_ih"), ("params", "first", "forward", "w_hh")}
    assert bare.to_params().first.forward.b_ih is None


# ---------------------------------------------------------------------------
# Cell modules


def _cells() -> dict[str, Any]:
    return {
        "lstm": lambda **kw: jaxrnn.nnx.LSTMCell(I, H, **kw),
        "lstm_proj": lambda **kw: jaxrnn.nnx.LSTMCell(I, H, proj_size=2, use_bias=False, **kw),
        "gru": lambda **kw: jaxrnn.nnx.GRUCell(I, H, **kw),
        "elman": lambda **kw: jaxrnn.nnx.SimpleCell(I, H, activation="relu", output_size=2, **kw),
        "layernorm_lstm": lambda **kw: jaxrnn.nnx.LayerNormLSTMCell(I, H, **kw),
        "mingru": lambda **kw: jaxrnn.nnx.MinGRUCell(I, H, **kw),
        "minlstm": lambda **kw: jaxrnn.nnx.MinLSTMCell(I, H, **kw),
        "lru": lambda **kw: jaxrnn.nnx.LRUCell(I, H, r_min=0.5, **kw),
    }


CELL_NAMES = sorted(_cells())


@pytest.mark.parametrize("name", CELL_NAMES)
def test_flax_rnn_over_a_cell_module_equals_jaxrnn_scan_and_a_decoding_loop(name):
    cell = _cells()[name](param_dtype=F64, rngs=nnx.Rngs(0))
    assert isinstance(cell, nnx.RNNCellBase) and cell.num_feature_axes == 1
    fn, params = cell.cell, cell.to_params()
    x = normal((B, T, I))
    carry0 = random_like(cell.initialize_carry((B, I)))
    lstm_like = name in ("lstm", "lstm_proj", "layernorm_lstm")
    if lstm_like:
        c, _ = carry0  # Flax's order
        assert c.shape == (B, H)
    jax_carry0 = jaxrnn._flax_conventions.from_flax(carry0, fn.initial_carry((), F64))

    @nnx.jit
    def run(cell, x, carry0):
        kw = {"initial_carry": carry0, "seq_lengths": LENGTHS, "return_carry": True}
        got = nnx.RNN(cell)(x, **kw)
        got_rev = nnx.RNN(cell)(x, reverse=True, keep_order=True, **kw)
        carry, ys = carry0, []
        for t in range(T):  # a hand-written loop: the cell called step by step
            carry, y = cell(carry, x[:, t])
            ys.append(y)
        return got, got_rev, (carry, jnp.stack(ys, axis=1))

    got, got_rev, loop = run(cell, x, carry0)
    want_carry, want_ys = jaxrnn.scan(
        fn, params, x, carry=jax_carry0, lengths=LENGTHS, time_major=False
    )
    rev_carry, rev_ys = jaxrnn.scan(
        fn, params, x, carry=jax_carry0, lengths=LENGTHS, time_major=False, reverse=True
    )
    mask = valid_mask(LENGTHS, False)
    to_flax = jaxrnn._flax_conventions.to_flax
    for (carry, ys), (w_carry, w_ys) in [
        (got, (want_carry, want_ys)),
        (got_rev, (rev_carry, rev_ys)),
    ]:
        assert_trees_close(carry, to_flax(w_carry), 1e-10)
        assert_trees_close(jnp.where(mask, ys, 0.0), w_ys, 1e-10)
    full_carry, full_ys = jaxrnn.scan(fn, params, x, carry=jax_carry0, time_major=False)
    assert_trees_close(loop, (to_flax(full_carry), full_ys), 1e-10)


def test_cell_modules_in_bidirectional_and_from_params():
    fwd, bwd = random_params(jaxrnn.lstm(H)), random_params(jaxrnn.lstm(H))
    bi = nnx.Bidirectional(
        nnx.RNN(jaxrnn.nnx.LSTMCell.from_params(fwd)), nnx.RNN(jaxrnn.nnx.LSTMCell.from_params(bwd))
    )
    module = jaxrnn.nnx.LSTM.from_params(jaxrnn.StackParams(jaxrnn.LayerParams(fwd, bwd), None))
    x = normal((B, T, I))
    kw = {"seq_lengths": LENGTHS, "return_carry": True}
    (carry, ys), (want_carry, want_ys) = nnx.jit(lambda bi, m, x: (bi(x, **kw), m(x, **kw)))(
        bi, module, x
    )
    mask = valid_mask(LENGTHS, False)
    assert_trees_close(carry, want_carry, 1e-10)
    assert_trees_close(jnp.where(mask, ys, 0.0), want_ys, 1e-10)
    cell = jaxrnn.nnx.SimpleCell.from_params(random_params(jaxrnn.elman(H, use_bias=False)))
    assert (
        cell.cell_options == {"use_bias": False} and jaxrnn.nnx.ElmanCell is jaxrnn.nnx.SimpleCell
    )
    lru = jaxrnn.nnx.LRUCell.from_params(random_params(jaxrnn.lru(H)))
    assert (lru.in_features, lru.hidden_features) == (I, H)
    with pytest.raises(TypeError, match="params: expected a pytree of structure"):
        jaxrnn.nnx.GRUCell.from_params(fwd)


def test_a_cell_carry_init_draws_from_the_carry_stream():
    cell = jaxrnn.nnx.LSTMCell(I, H, rngs=nnx.Rngs(0))
    c, h = cell.initialize_carry((B, I), nnx.Rngs(carry=1), carry_init=nnx.initializers.ones)
    np.testing.assert_array_equal(np.asarray(c), 1.0)
    assert c.dtype == h.dtype == jnp.float32 and c.shape == (B, H)
    with pytest.raises(ValueError, match="rngs: carry_init draws the carry"):
        cell.initialize_carry((B, I), carry_init=nnx.initializers.ones)


# ---------------------------------------------------------------------------
# dtype


def test_bfloat16_computation_over_float32_params():
    x = jnp.asarray(RNG.standard_normal((B, T, I)), jnp.float32)
    full = [cls(I, H, rngs=nnx.Rngs(0)) for cls in (jaxrnn.nnx.LSTM, jaxrnn.nnx.GRU)]
    full += [
        jaxrnn.nnx.LSTMCell(I, H, rngs=nnx.Rngs(0)),
        jaxrnn.nnx.SimpleCell(I, H, rngs=nnx.Rngs(0)),
    ]
    half = [type(m).from_params(m.to_params(), dtype=jnp.bfloat16) for m in full]
    assert all(m.param_dtype == jnp.float32 and m.dtype == jnp.bfloat16 for m in half)
    flax_half = nnx.RNN(nnx.LSTMCell(I, H, dtype=jnp.bfloat16, rngs=nnx.Rngs(0)))

    @nnx.jit
    def run(full, half, flax_half, x):
        def call(m):
            return (
                m(x, return_carry=True)
                if isinstance(m, jaxrnn.nnx.LSTM | jaxrnn.nnx.GRU)
                else (nnx.RNN(m, return_carry=True)(x))
            )

        return [call(m) for m in full], [call(m) for m in half], flax_half(x)

    want, got, flax_ys = run(full, half, flax_half, x)
    for (carry, ys), (want_carry, want_ys) in zip(got, want, strict=True):
        assert ys.dtype == flax_ys.dtype == jnp.float32  # the carry's, as Flax's LSTM and GRU
        assert jax.tree.map(lambda a: a.dtype, carry) == jax.tree.map(lambda a: a.dtype, want_carry)
        np.testing.assert_allclose(ys, want_ys, atol=3e-2)
        assert float(jnp.abs(ys - want_ys).max()) > 0  # the matmuls did run in bfloat16
    # Flax's own SimpleCell cannot: its bfloat16 carry breaks nnx.RNN's scan
    with pytest.raises(TypeError, match="carry input and carry output must have equal types"):
        nnx.RNN(nnx.SimpleCell(I, H, dtype=jnp.bfloat16, rngs=nnx.Rngs(0)))(x)


# ---------------------------------------------------------------------------
# Hostile use


def test_bad_keywords_and_carries_raise_naming_the_method_or_argument():
    module = jaxrnn.nnx.LSTM(I, H, param_dtype=F64, rngs=nnx.Rngs(0))
    x = jnp.ones((B, T, I), F64)
    with pytest.raises(
        TypeError, match=r"^LSTM\.__call__\(\) got an unexpected keyword argument 'foo'$"
    ):
        module(x, foo=1)
    with pytest.raises(
        TypeError,
        match=r"GRU\.__call__\(\) got an unexpected keyword argument 'lengths' "
        r"\(did you mean seq_lengths=\?\)",
    ):
        jaxrnn.nnx.GRU(I, H, rngs=nnx.Rngs(0))(x, lengths=LENGTHS)
    with pytest.raises(
        TypeError, match=r"LSTM\.__call__\(\) takes 1 positional argument \(inputs\) but 2"
    ):
        module(x, module.initial_carry((B,)))
    flax_carry = module.initial_carry((B,), F64)
    swapped = jaxrnn.LSTMCarry(h=flax_carry[1], c=flax_carry[0])
    with pytest.raises(
        TypeError,
        match=r"initial_carry: expected Flax's LSTM carry, the tuple \(c, h\), "
        r"got a jaxrnn\.LSTMCarry",
    ):
        module(x, initial_carry=swapped)
    with pytest.raises(ValueError, match=r"initial_carry\[1\]: expected shape \(3, 4\)"):
        module(x, initial_carry=(flax_carry[0], jnp.zeros((B, H + 1), F64)))
    cell = jaxrnn.nnx.LSTMCell(I, H, rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match=r"carry: expected Flax's LSTM carry, the tuple \(c, h\)"):
        cell(jaxrnn.LSTMCarry(jnp.zeros((B, H)), jnp.zeros((B, H))), jnp.ones((B, I)))
    with pytest.raises(ValueError, match=r"inputs: expected shape \[\*batch, in_features\]"):
        cell(cell.initialize_carry((B, I)), jnp.ones((B, I + 1)))
    bi = jaxrnn.nnx.GRU(I, H, bidirectional=True, param_dtype=F64, rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match=r"initial_carry: expected the pair \(forward, backward\)"):
        bi(x, initial_carry=jnp.zeros((B, H), F64))
    with pytest.raises(ValueError, match="reverse: a bidirectional module already runs both"):
        bi(x, reverse=True)
    with pytest.raises(ValueError, match="reverse: a bidirectional module already runs both"):
        jaxrnn.nnx.GRU(I, H, bidirectional=True, reverse=True, rngs=nnx.Rngs(0))
    with pytest.raises(
        ValueError, match=r"seq_lengths: expected values in \[0, T=5\], got values in \[0, 6\]"
    ):
        module(x, seq_lengths=jnp.array([6, 0, 1]))
    with pytest.raises(ValueError, match="seq_lengths: expected one length per sequence"):
        module(x, seq_lengths=jnp.array([1, 2]))
    with pytest.raises(TypeError, match="seq_lengths: expected an integer dtype"):
        module(x, seq_lengths=jnp.array([1.0, 2.0, 3.0]))


def test_zero_steps_and_zero_lengths_give_the_initial_carry():
    module = jaxrnn.nnx.LSTM(I, H, param_dtype=F64, rngs=nnx.Rngs(0))
    carry0 = random_like(module.initial_carry((B,), F64))

    @nnx.jit
    def run(module, carry0):
        out = []
        for kw in [{}, {"reverse": True}, {"reverse": True, "keep_order": True}]:
            kw = {"initial_carry": carry0, "return_carry": True, **kw}
            out.append(module(jnp.ones((B, 0, I), F64), **kw))
            out.append(module(jnp.ones((B, T, I), F64), seq_lengths=jnp.zeros(B, int), **kw))
        return out

    for carry, ys in run(module, carry0):
        # a length of 0 keeps the initial carry (Flax's RNN would take the carry at step -1)
        assert_trees_equal(carry, carry0)
        np.testing.assert_array_equal(np.asarray(ys), 0.0)
        assert ys.shape in ((B, 0, H), (B, T, H))


def test_nan_in_the_padding_reaches_nothing_in_either_direction():
    module = jaxrnn.nnx.GRU(I, H, param_dtype=F64, rngs=nnx.Rngs(0))
    x = normal((B, T, I)).at[1, 2:].set(jnp.nan)

    def loss(x):
        ys = module(x, seq_lengths=LENGTHS, reverse=True)
        return jnp.sum(ys), ys

    (_, ys), g = jax.jit(jax.value_and_grad(loss, has_aux=True))(x)
    assert bool(jnp.isfinite(ys).all()) and bool(jnp.isfinite(g).all())
    np.testing.assert_array_equal(np.asarray(g[1, 2:]), 0.0)


class Regressor(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.rnn = jaxrnn.nnx.GRU(2, 8, num_layers=2, dropout=0.1, rngs=rngs)
        self.head = nnx.Linear(self.rnn.out_features, 1, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        ys = self.rnn(x)
        return self.head(ys[:, -1])[:, 0]


def test_a_few_optimizer_steps_under_nnx_jit_reduce_the_loss_on_a_fixed_batch():
    model = Regressor(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(3e-2), wrt=nnx.Param)
    x = jnp.asarray(np.random.default_rng(1).standard_normal((16, 6, 2)), jnp.float32)
    y = jnp.tanh(x[:, -1, 0])

    traces = []

    @nnx.jit
    def train_step(model, optimizer, x, y):
        traces.append(1)

        def loss_fn(model):
            return jnp.mean((model(x) - y) ** 2)

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    before = model.rnn.to_params()
    losses = [float(train_step(model, optimizer, x, y)) for _ in range(8)]
    assert losses[-1] < 0.5 * losses[0], losses
    moved = jax.tree.map(lambda a, b: bool((a != b).any()), model.rnn.to_params(), before)
    assert all(jax.tree.leaves(moved))
    assert int(optimizer.step[...]) == 8
    assert int(model.rnn.rngs.count[...]) == 8  # one dropout key per training step
    assert len(traces) == 1  # the modules' static attributes are hashable and stable


def test_split_and_merge_round_trip_with_functional_paths():
    module = jaxrnn.nnx.LSTM(I, H, num_layers=2, dropout=0.5, param_dtype=F64, rngs=nnx.Rngs(0))
    graphdef, params_state, rest = nnx.split(module, nnx.Param, ...)
    paths = {path for path, _ in nnx.to_flat_state(params_state)}
    assert ("params", "first", "forward", "w_ih") in paths
    assert ("params", "rest", "forward", "w_hh") in paths
    assert len(paths) == len(jax.tree.leaves(module.to_params()))
    assert {path for path, _ in nnx.to_flat_state(rest)} == {("rngs", "count"), ("rngs", "key")}
    merged = nnx.merge(graphdef, params_state, rest)
    assert type(merged) is jaxrnn.nnx.LSTM and merged.dropout == 0.5
    assert_trees_equal(merged.to_params(), module.to_params())
    assert hash(graphdef) == hash(nnx.split(merged)[0])
    cell = jaxrnn.nnx.GRUCell(I, H, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(cell)
    assert {p for p, _ in nnx.to_flat_state(state)} == {
        ("params", "w_ih"),
        ("params", "w_hh"),
        ("params", "b_ih"),
        ("params", "b_hh"),
    }
    assert_trees_equal(nnx.merge(graphdef, state).to_params(), cell.to_params())


def test_dropout_is_on_only_in_training_mode():
    module = jaxrnn.nnx.GRU(I, H, num_layers=2, dropout=0.5, param_dtype=F64, rngs=nnx.Rngs(0))
    params = module.to_params()
    rnn = module.stack
    x = jnp.ones((B, T, I), F64)
    with jax.disable_jit():
        _, plain = rnn.apply(params, x, time_major=False)
        _, dropped = rnn.apply(params, x, time_major=False, key=jax.random.key(7))
        assert not module.deterministic  # a new module trains, as nnx.Dropout
        train_1, train_2 = module(x), module(x)
        assert bool((train_1 != plain).any()) and bool((train_1 != train_2).any())
        assert_trees_equal(module(x, rngs=jax.random.key(7)), dropped)
        assert_trees_equal(module(x, deterministic=True), plain)
        assert_trees_equal(nnx.view(module, deterministic=True)(x), plain)
        assert not module.deterministic
        module.eval()
        assert_trees_equal(module(x), plain)
        assert_trees_equal(module(x, deterministic=False, rngs=jax.random.key(7)), dropped)
        bare = jaxrnn.nnx.GRU.from_params(params, dropout=0.5)
        with pytest.raises(ValueError, match=r"rngs: dropout=0\.5 is on in training mode"):
            bare(x)
        bare.eval()
        assert_trees_equal(bare(x), plain)
    outer = Regressor(nnx.Rngs(0))
    outer.eval()
    assert outer.rnn.deterministic
    outer.train()
    assert not outer.rnn.deterministic
    assert jaxrnn.nnx.GRU(I, H, num_layers=2, rngs=nnx.Rngs(0)).rngs is None
    assert jaxrnn.nnx.GRU(I, H, dropout=0.5, rngs=nnx.Rngs(0)).rngs is None


def test_bad_inputs_and_options_raise_naming_the_argument():
    module = jaxrnn.nnx.LSTM(I, H, num_layers=2, param_dtype=F64, rngs=nnx.Rngs(0))
    x = jnp.ones((B, T, I), F64)
    with pytest.raises(
        ValueError, match=r"inputs: expected shape \[\*batch, T, in_features\] with "
    ):
        module(jnp.ones((B, T, I + 1), F64))
    with pytest.raises(ValueError, match=r"in_features=3, got shape \(5,\)"):
        module(jnp.ones((T,), F64))
    with pytest.raises(TypeError, match="inputs: expected a floating dtype"):
        module(jnp.ones((B, T, I), jnp.int32))
    c, h = module.initial_carry((B,), F64)
    with pytest.raises(ValueError, match=r"initial_carry\[0\]: expected shape \(2, 1, 3, 4\)"):
        module(x, initial_carry=(c[:1], h))
    with pytest.raises(ValueError, match=r"unroll: expected"):
        module(x, unroll=0.5)
    with pytest.raises(ValueError, match="in_features"):
        jaxrnn.nnx.LSTM(0, H, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="hidden_features"):
        jaxrnn.nnx.GRUCell(I, 0, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="num_layers"):
        jaxrnn.nnx.GRU(I, H, num_layers=0, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="dropout"):
        jaxrnn.nnx.GRU(I, H, dropout=1.0, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="proj_size"):
        jaxrnn.nnx.LSTM(I, H, proj_size=H, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="activation"):
        jaxrnn.nnx.Elman(I, H, activation="softsign", rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match=r"rngs: expected an nnx\.Rngs"):
        jaxrnn.nnx.GRU(I, H, rngs=0)
    with pytest.raises(TypeError, match="dtype: expected a floating dtype"):
        jaxrnn.nnx.GRU(I, H, dtype=jnp.int32, rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match="cell_options: expected hashable values"):
        jaxrnn.nnx.Elman(I, H, recurrent_init=[1], rngs=nnx.Rngs(0))
    gru_params = random_params(jaxrnn.stack(jaxrnn.gru(H)))
    with pytest.raises(TypeError, match="params: expected a pytree of structure"):
        jaxrnn.nnx.LSTM.from_params(gru_params)
    with pytest.raises(TypeError, match=r"params: expected jaxrnn\.StackParams"):
        jaxrnn.nnx.GRU.from_params(gru_params.first.forward)
    with pytest.raises(TypeError, match="params: expected a pytree of structure"):
        jaxrnn.nnx.GRU.from_params(gru_params, use_bias=False)


# ---------------------------------------------------------------------------
# PyTorch


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_from_torch_equals_the_torch_module(kind):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    options = {"nonlinearity": "relu"} if kind == "RNN" else {}
    if kind == "LSTM":
        options["proj_size"] = 2
    torch_module = getattr(torch.nn, kind)(
        I, H, num_layers=2, bidirectional=True, batch_first=True, dropout=0.25, bias=kind != "GRU",
        **options,
    ).double()  # fmt: skip
    torch_module.eval()
    cls = {"LSTM": jaxrnn.nnx.LSTM, "GRU": jaxrnn.nnx.GRU, "RNN": jaxrnn.nnx.Elman}[kind]
    module = cls.from_torch(torch_module, deterministic=True)
    assert module.dropout == 0.25 and module.num_layers == 2 and module.bidirectional
    x = np.asarray(RNG.standard_normal((B, T, I)))
    want, _ = torch_module(torch.from_numpy(x))
    got = nnx.jit(lambda m, x: m(x))(module, jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(got), want.detach().numpy(), rtol=1e-10, atol=1e-10)
    other = jaxrnn.nnx.GRU if kind != "GRU" else jaxrnn.nnx.LSTM
    with pytest.raises(
        TypeError,
        match=rf"module: expected a torch\.nn\.\w+ for {other.__name__}\.from_torch, got {kind}",
    ):
        other.from_torch(torch_module)


def test_layernorm_lstm_module_equals_its_stack():
    rnn = jaxrnn.stack(jaxrnn.layernorm_lstm(H), num_layers=2)
    params = random_params(rnn)
    module = jaxrnn.nnx.LayerNormLSTM.from_params(params)
    x = normal((B, T, I))
    (c, h), ys = module(x, seq_lengths=LENGTHS, return_carry=True)
    want_carry, want_ys = rnn.apply(params, x, lengths=LENGTHS, time_major=False)
    assert_trees_close(((c, h), ys), ((want_carry.c, want_carry.h), want_ys))


def test_importing_jaxrnn_does_not_import_flax():
    code = "import sys, jaxrnn; assert 'flax' not in sys.modules, 'flax imported'"
    subprocess.run([sys.executable, "-c", code], check=True)

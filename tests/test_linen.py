"""jaxrnn.linen: Flax linen cells and multi-layer RNNs over jaxrnn's cells and stacks.

References: :func:`jaxrnn.scan` and :func:`jaxrnn.stack` with the same params
(every cell, every keyword), and Flax's own ``nn.LSTMCell``, ``nn.GRUCell`` and
``nn.SimpleCell`` inside ``nn.RNN`` with their weights mapped from jaxrnn's
params by differentiable functions written here, so that gradients with
respect to jaxrnn's params compare directly. Comparisons are in float64.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import serialization
from flax.training import train_state
from jax.test_util import check_grads

import jaxrnn
import jaxrnn.linen as jl

F64 = jnp.float64
I, H, B, T = 3, 4, 3, 5
LENGTHS = jnp.array([5, 2, 4])
RNG = np.random.default_rng(0)


def normal(shape: tuple[int, ...], dtype: Any = F64) -> jax.Array:
    return jnp.asarray(RNG.standard_normal(shape), dtype)


def random_like(tree: Any) -> Any:
    return jax.tree.map(lambda a: normal(a.shape, a.dtype), tree)


def assert_trees_close(got: Any, want: Any, tol: float = 1e-12) -> None:
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=tol, atol=tol)


def vjp_all(fn, *args):
    """Outputs of ``fn(*args)`` and the gradients of a random-cotangent loss w.r.t. ``args``."""
    out, vjp = jax.vjp(fn, *args)
    cot = jax.tree.map(
        lambda a: jnp.asarray(np.random.default_rng(1).standard_normal(a.shape), a.dtype), out
    )
    return out, vjp(cot)


CELLS = {
    "lstm": (jl.LSTMCell, jaxrnn.lstm, {"forget_bias": 1.0}),
    "lstm_proj": (jl.LSTMCell, jaxrnn.lstm, {"proj_size": 2}),
    "gru": (jl.GRUCell, jaxrnn.gru, {}),
    "simple": (jl.SimpleCell, jaxrnn.elman, {"activation": "relu", "output_size": 2}),
    "layernorm_lstm": (jl.LayerNormLSTMCell, jaxrnn.layernorm_lstm, {}),
    "mingru": (jl.MinGRUCell, jaxrnn.mingru, {}),
    "minlstm": (jl.MinLSTMCell, jaxrnn.minlstm, {"use_bias": False}),
    "lru": (jl.LRUCell, jaxrnn.lru, {"r_min": 0.5}),
}


def to_flax_conventions(carry: Any) -> Any:
    return (carry.c, carry.h) if isinstance(carry, jaxrnn.LSTMCarry) else carry


@pytest.mark.parametrize("kind", sorted(CELLS))
def test_cell_in_nn_rnn_equals_jaxrnn_scan_outputs_carry_gradients(kind):
    module_cls, factory, options = CELLS[kind]
    module = module_cls(H, cell_options=options, param_dtype=F64)
    cell = factory(H, **options)
    x = normal((B, T, I))
    rnn = nn.RNN(module, return_carry=True)
    variables = rnn.init(jax.random.key(0), x)
    # params: a plain dict of the present fields, no None leaves
    flat, _ = jax.tree_util.tree_flatten(variables, is_leaf=lambda a: a is None)
    assert all(a is not None for a in flat)
    params = module.to_params(variables["params"]["cell"])
    params = random_like(params)  # values of our own, in jaxrnn's layout
    carry0 = random_like(cell.initial_carry((B,), F64))

    def linen(p, x, carry):
        v = {"params": {"cell": module.from_params(p)}}
        return rnn.apply(v, x, initial_carry=to_flax_conventions(carry))

    def functional(p, x, carry):
        final, ys = jaxrnn.scan(cell, p, x, carry=carry, time_major=False)
        return to_flax_conventions(final), ys

    got = vjp_all(jax.jit(linen), params, x, carry0)
    want = vjp_all(jax.jit(functional), params, x, carry0)
    assert_trees_close(got, want)


# --------------------------------------------------------------- Flax's own cells, mapped


def blocks(a: jax.Array, n: int) -> list[jax.Array]:
    return jnp.split(a, n, axis=0)


def flax_lstm_params(p: jaxrnn.LSTMParams) -> dict:
    """nn.LSTMCell's params computing jaxrnn's LSTM: kernels = transposed gate blocks."""
    out = {}
    for name, w in zip(("ii", "if", "ig", "io"), blocks(p.w_ih, 4), strict=True):
        out[name] = {"kernel": w.T}
    bias = blocks(p.b_ih + p.b_hh, 4)  # Flax has one bias per gate, on the recurrent Dense
    for name, w, b in zip(("hi", "hf", "hg", "ho"), blocks(p.w_hh, 4), bias, strict=True):
        out[name] = {"kernel": w.T, "bias": b}
    return out


def flax_gru_params(p: jaxrnn.GRUParams) -> dict:
    """nn.GRUCell: r, z = σ(W_i x + b_i + W_h h); n = tanh(W_in x + b_in + r (W_hn h + b_hn))."""
    (wr, wz, wn), (ur, uz, un) = blocks(p.w_ih, 3), blocks(p.w_hh, 3)
    (bir, biz, bin_), (bhr, bhz, bhn) = blocks(p.b_ih, 3), blocks(p.b_hh, 3)
    return {
        "ir": {"kernel": wr.T, "bias": bir + bhr},
        "iz": {"kernel": wz.T, "bias": biz + bhz},
        "in": {"kernel": wn.T, "bias": bin_},
        "hr": {"kernel": ur.T},
        "hz": {"kernel": uz.T},
        "hn": {"kernel": un.T, "bias": bhn},
    }


def flax_simple_params(p: jaxrnn.ElmanParams) -> dict:
    """nn.SimpleCell: h = tanh(W_i x + b_i + W_h h)."""
    return {"i": {"kernel": p.w_ih.T, "bias": p.b_ih + p.b_hh}, "h": {"kernel": p.w_hh.T}}


FLAX = {
    "lstm": (jl.LSTMCell, nn.LSTMCell, jaxrnn.lstm, flax_lstm_params),
    "gru": (jl.GRUCell, nn.GRUCell, jaxrnn.gru, flax_gru_params),
    "simple": (jl.SimpleCell, nn.SimpleCell, jaxrnn.elman, flax_simple_params),
}

RNN_CALLS = {
    "plain": {},
    "lengths": {"seq_lengths": LENGTHS},
    "reverse": {"seq_lengths": LENGTHS, "reverse": True},
    "reverse_keep_order": {"seq_lengths": LENGTHS, "reverse": True, "keep_order": True},
}


@pytest.mark.parametrize("kind", sorted(FLAX))
def test_cell_equals_flax_cell_with_mapped_weights_for_every_nn_rnn_keyword(kind):
    ours_cls, flax_cls, factory, mapping = FLAX[kind]
    ours, theirs = ours_cls(H, param_dtype=F64), flax_cls(H, param_dtype=F64)
    cell = factory(H)
    params = random_like(jax.eval_shape(lambda: cell.init(jax.random.key(0), I, F64)))
    x = normal((B, T, I))
    carry0 = to_flax_conventions(random_like(cell.initial_carry((B,), F64)))

    def run(module, variables, p, x, carry, call):
        rnn = nn.RNN(module, return_carry=True)
        return rnn.apply(variables(p), x, initial_carry=carry, **call)

    def ours_fn(p, x, carry, call):
        return run(ours, lambda p: {"params": {"cell": ours.from_params(p)}}, p, x, carry, call)

    def theirs_fn(p, x, carry, call):
        return run(theirs, lambda p: {"params": {"cell": mapping(p)}}, p, x, carry, call)

    # every keyword combination in one program per implementation (one compilation each)
    def all_calls(fn):
        return jax.jit(lambda p, x, c: [fn(p, x, c, call) for call in RNN_CALLS.values()])

    assert_trees_close(
        vjp_all(all_calls(ours_fn), params, x, carry0),
        vjp_all(all_calls(theirs_fn), params, x, carry0),
    )


def test_bidirectional_of_cells_equals_bidirectional_module_on_valid_steps():
    ours = nn.Bidirectional(
        nn.RNN(jl.GRUCell(H, param_dtype=F64)), nn.RNN(jl.GRUCell(H, param_dtype=F64))
    )
    module = jl.GRU(H, bidirectional=True, return_carry=True, param_dtype=F64)
    x = normal((B, T, I))
    stack_params = random_like(module.to_params(module.init(jax.random.key(0), x)["params"]))
    cell_vars = {
        "params": {
            "forward_rnn": {"cell": _as_cell_dict(stack_params.first.forward)},
            "backward_rnn": {"cell": _as_cell_dict(stack_params.first.backward)},
        }
    }
    (c_fwd, c_bwd), ys = ours.apply(cell_vars, x, seq_lengths=LENGTHS, return_carry=True)
    carry, ys_module = module.apply(
        {"params": module.from_params(stack_params)}, x, seq_lengths=LENGTHS
    )
    valid = jaxrnn.length_mask(LENGTHS, T, time_major=False)[..., None]
    assert_trees_close(jnp.where(valid, ys, 0), ys_module)
    assert_trees_close((c_fwd, c_bwd), (carry[0, 0], carry[0, 1]))


def _as_cell_dict(p: Any) -> dict:
    return {k: v for k, v in p._asdict().items() if v is not None}


# ----------------------------------------------------------------- multi-layer modules

MODULES = {
    "lstm": (jl.LSTM, jaxrnn.lstm, {"proj_size": 2}),
    "gru": (jl.GRU, jaxrnn.gru, {}),
    "elman": (jl.Elman, jaxrnn.elman, {"activation": "relu"}),
    "layernorm_lstm": (jl.LayerNormLSTM, jaxrnn.layernorm_lstm, {}),
}


@pytest.mark.parametrize("kind", sorted(MODULES))
def test_stacked_module_equals_functional_stack(kind):
    module_cls, factory, options = MODULES[kind]
    module = module_cls(
        H,
        num_layers=2,
        bidirectional=True,
        cell_options=options,
        param_dtype=F64,
        return_carry=True,
    )
    rnn = jaxrnn.stack(factory(H, **options), num_layers=2, bidirectional=True)
    x = normal((B, T, I))
    variables = module.init(jax.random.key(0), x)
    params = random_like(module.to_params(variables["params"]))
    carry0 = random_like(rnn.initial_carry((B,), F64))

    def linen(p, x, carry, time_major):
        xs = jnp.swapaxes(x, 0, 1) if time_major else x
        final, ys = module.apply(
            {"params": module.from_params(p)},
            xs,
            initial_carry=to_flax_conventions(carry),
            seq_lengths=LENGTHS,
            time_major=time_major,
        )
        return final, (jnp.swapaxes(ys, 0, 1) if time_major else ys)

    def functional(p, x, carry):
        final, ys = rnn.apply(p, x, carry=carry, lengths=LENGTHS, time_major=False)
        return to_flax_conventions(final), ys

    time_major = kind in ("gru", "lstm")  # both layouts, one compilation per kind
    want = vjp_all(jax.jit(functional), params, x, carry0)
    got = vjp_all(jax.jit(lambda p, x, c: linen(p, x, c, time_major)), params, x, carry0)
    assert_trees_close(got, want)


def test_one_layer_module_is_a_drop_in_for_nn_rnn_over_flax_lstm_cell():
    module = jl.LSTM(H, param_dtype=F64)
    theirs = nn.RNN(nn.LSTMCell(H, param_dtype=F64))
    x = normal((B, T, I))
    cell = jaxrnn.lstm(H)
    p = random_like(jax.eval_shape(lambda: cell.init(jax.random.key(0), I, F64)))
    ours_vars = {
        "params": module.from_params(jaxrnn.StackParams(jaxrnn.LayerParams(p, None), None))
    }
    theirs_vars = {"params": {"cell": flax_lstm_params(p)}}
    carry0 = (normal((B, H)), normal((B, H)))
    valid = jaxrnn.length_mask(LENGTHS, T, time_major=False)[..., None]
    for call in RNN_CALLS.values():
        got = module.apply(ours_vars, x, initial_carry=carry0, return_carry=True, **call)
        want = theirs.apply(theirs_vars, x, initial_carry=carry0, return_carry=True, **call)
        assert jax.tree.structure(got) == jax.tree.structure(want)  # ((c, h), ys)
        (carry, ys), (carry_want, ys_want) = got, want
        assert_trees_close(carry, carry_want)
        if "seq_lengths" in call:  # nn.RNN leaves its padded outputs as computed; ours are 0
            np.testing.assert_array_equal(np.asarray(jnp.where(valid, 0, ys)), 0)
            ys_want = jnp.where(valid, ys_want, 0)
        assert_trees_close(ys, ys_want)
    # the outputs alone without return_carry, as nn.RNN
    assert module.apply(ours_vars, x).shape == theirs.apply(theirs_vars, x).shape == (B, T, H)


def test_reverse_with_resets_equals_scan_reverse():
    module = jl.GRU(H, param_dtype=F64, reverse=True, keep_order=True, return_carry=True)
    cell = jaxrnn.gru(H)
    p = random_like(jax.eval_shape(lambda: cell.init(jax.random.key(0), I, F64)))
    x = normal((B, T, I))
    resets = jnp.asarray(np.random.default_rng(2).random((B, T)) < 0.4)
    got = module.apply(
        {"params": module.from_params(jaxrnn.StackParams(jaxrnn.LayerParams(p, None), None))},
        x,
        seq_lengths=LENGTHS,
        resets=resets,
    )
    want = jaxrnn.scan(cell, p, x, lengths=LENGTHS, resets=resets, reverse=True, time_major=False)
    assert_trees_close(got, want)


# ------------------------------------------------------------------- training, state, IO


class Tagger(nn.Module):
    @nn.compact
    def __call__(self, x, *, train: bool):
        ys = jl.LSTM(8, num_layers=2, dropout=0.1)(x, deterministic=not train)
        ys = nn.RNN(jl.GRUCell(8))(ys)
        return nn.Dense(1)(ys)[..., 0]


@pytest.mark.smoke
def test_train_state_loop_with_optax_decreases_the_loss_and_serializes():
    model = Tagger()
    x = normal((4, 6, I), jnp.float32)
    y = jnp.cumsum(x[..., 0], axis=1) / 3
    variables = model.init(jax.random.key(0), x, train=False)
    flat, _ = jax.tree_util.tree_flatten(variables, is_leaf=lambda a: a is None)
    assert all(a is not None for a in flat)
    state = train_state.TrainState.create(
        apply_fn=model.apply, params=variables["params"], tx=optax.adam(1e-2)
    )

    @jax.jit
    def train_step(state, key):
        def loss_fn(params):
            pred = state.apply_fn({"params": params}, x, train=True, rngs={"dropout": key})
            return jnp.mean((pred - y) ** 2)

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        return state.apply_gradients(grads=grads), loss

    losses = []
    for step in range(30):
        state, loss = train_step(state, jax.random.key(step))
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0]
    # serialization round trip: same tree, same predictions
    restored = serialization.from_bytes(variables["params"], serialization.to_bytes(state.params))
    assert_trees_close(restored, state.params, tol=0)
    pred = model.apply({"params": state.params}, x, train=False)
    np.testing.assert_array_equal(pred, model.apply({"params": restored}, x, train=False))


def test_dropout_follows_flax_rng_and_deterministic():
    module = jl.GRU(H, num_layers=2, dropout=0.5)
    x = normal((B, T, I), jnp.float32)
    variables = module.init(jax.random.key(0), x, deterministic=True)
    off = module.apply(variables, x, deterministic=True)
    no_dropout = jl.GRU(H, num_layers=2).apply(variables, x)
    np.testing.assert_array_equal(off, no_dropout)
    on = module.apply(variables, x, deterministic=False, rngs={"dropout": jax.random.key(1)})
    again = module.apply(variables, x, deterministic=False, rngs={"dropout": jax.random.key(1)})
    np.testing.assert_array_equal(on, again)
    assert not np.allclose(on, off)
    with pytest.raises(ValueError, match=r"GRU.__call__: .*deterministic"):
        module.apply(variables, x)


def test_jit_grad_vmap_of_a_cell_module():
    module = jl.LSTMCell(H, param_dtype=F64)
    x = normal((B, I))
    carry = module.initialize_carry(None, x.shape)
    variables = module.init(jax.random.key(0), carry, x)
    eager = module.apply(variables, carry, x)
    assert_trees_close(jax.jit(module.apply)(variables, carry, x), eager)
    # vmap over the batch: a per-example step, unbatched carry and inputs
    mapped = jax.vmap(module.apply, in_axes=(None, 0, 0))(variables, carry, x)
    assert_trees_close(mapped, eager)
    grads = jax.grad(lambda v: jnp.sum(module.apply(v, carry, x)[1] ** 2))(variables)
    assert jax.tree.structure(grads) == jax.tree.structure(variables)


def test_check_grads_float64():
    x = normal((2, 3, 2))
    cell_rnn = nn.RNN(jl.LSTMCell(2, param_dtype=F64))
    v_cell = cell_rnn.init(jax.random.key(0), x)
    check_grads(jax.jit(cell_rnn.apply), (v_cell, x), order=1, modes=("rev",))
    module = jl.LSTM(2, num_layers=2, bidirectional=True, param_dtype=F64)
    v_mod = module.init(jax.random.key(0), x)
    lengths = jnp.array([3, 1])
    check_grads(
        jax.jit(lambda v, x: module.apply(v, x, seq_lengths=lengths)),
        (v_mod, x),
        order=1,
        modes=("rev",),
    )


# --------------------------------------------------------------------------- hostile


def test_wrong_input_size_between_calls_names_the_method():
    x = normal((B, T, I), jnp.float32)
    rnn = nn.RNN(jl.LSTMCell(H))
    variables = rnn.init(jax.random.key(0), x)
    with pytest.raises(ValueError, match=r"LSTMCell.__call__: inputs: expected 3 .* got 5"):
        rnn.apply(variables, normal((B, T, 5), jnp.float32))
    module = jl.GRU(H)
    variables = module.init(jax.random.key(0), x)
    with pytest.raises(ValueError, match=r"GRU.__call__: inputs: expected 3 .* got 5"):
        module.apply(variables, normal((B, T, 5), jnp.float32))


def test_jaxrnn_lstm_carry_where_flax_conventions_is_expected_raises():
    cell = jl.LSTMCell(H)
    x = normal((B, I), jnp.float32)
    variables = cell.init(jax.random.key(0), cell.initialize_carry(None, x.shape), x)
    wrong = jaxrnn.lstm(H).initial_carry((B,))
    with pytest.raises(TypeError, match=r"LSTMCell.__call__: carry: .*\(c, h\).*LSTMCarry"):
        cell.apply(variables, wrong, x)
    module = jl.LSTM(H)
    xs = normal((B, T, I), jnp.float32)
    mv = module.init(jax.random.key(0), xs)
    with pytest.raises(TypeError, match=r"LSTM.__call__: initial_carry: .*LSTMCarry"):
        module.apply(mv, xs, initial_carry=wrong)
    with pytest.raises(
        ValueError, match=r"LSTM.__call__: initial_carry.c: expected shape \(3, 4\)"
    ):
        module.apply(mv, xs, initial_carry=(jnp.zeros((B, 5)), jnp.zeros((B, H))))


def test_bad_arguments_raise_naming_the_method_or_attribute():
    x = normal((B, T, I), jnp.float32)
    module = jl.LSTM(H)
    variables = module.init(jax.random.key(0), x)
    with pytest.raises(TypeError, match=r"LSTM.__call__\(\) got an unexpected keyword argument"):
        module.apply(variables, x, lengths=LENGTHS)
    with pytest.raises(
        ValueError, match=r"LSTM.__call__: seq_lengths: expected values in \[0, T=5\]"
    ):
        module.apply(variables, x, seq_lengths=jnp.array([6, 1, 1]))
    with pytest.raises(TypeError, match=r"LSTMCell: cell_options: .*'nope'"):
        jl.LSTMCell(H, cell_options={"nope": 1})
    with pytest.raises(ValueError, match=r"proj_size"):
        jl.LSTM(H, cell_options={"proj_size": H})
    with pytest.raises(TypeError, match=r"LSTM.__call__: inputs: expected a floating dtype"):
        module.apply(variables, jnp.ones((B, T, I), jnp.int32))


def test_zero_steps():
    module = jl.LSTM(H, num_layers=2, return_carry=True)
    x = jnp.ones((B, 0, I))
    variables = module.init(jax.random.key(0), x)
    (c, h), ys = module.apply(variables, x)
    assert ys.shape == (B, 0, H) and c.shape == (2, 1, B, H)
    np.testing.assert_array_equal(h, 0)
    rnn = nn.RNN(jl.GRUCell(H), return_carry=True)
    carry0 = normal((B, H), jnp.float32)
    carry, ys = rnn.apply(rnn.init(jax.random.key(0), x), x, initial_carry=carry0)
    assert ys.shape == (B, 0, H)
    np.testing.assert_array_equal(carry, carry0)


def test_nan_in_padding_reaches_no_gradient_of_the_module():
    module = jl.LSTM(H, num_layers=2, bidirectional=True, param_dtype=F64)
    x = normal((B, T, I))
    variables = module.init(jax.random.key(0), x)
    valid = jaxrnn.length_mask(LENGTHS, T, time_major=False)[..., None]
    x_nan = jnp.where(valid, x, jnp.nan)

    def loss(v, x):
        return jnp.sum(module.apply(v, x, seq_lengths=LENGTHS) ** 2)

    grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
    g_nan = grad(variables, x_nan)
    g_ref = grad(variables, jnp.where(valid, x, 0))
    assert_trees_close(g_nan, g_ref)
    # nn.RNN does not mask: NaN padding reaches the gradients through any cell, Flax's too
    for cell in (jl.LSTMCell(H, param_dtype=F64), nn.LSTMCell(H, param_dtype=F64)):
        rnn = nn.RNN(cell, return_carry=True)
        v = rnn.init(jax.random.key(0), x)
        g = jax.jit(
            jax.grad(lambda v, rnn=rnn: jnp.sum(rnn.apply(v, x_nan, seq_lengths=LENGTHS)[0][1]))
        )(v)
        assert not all(bool(jnp.isfinite(a).all()) for a in jax.tree.leaves(g))


def test_bfloat16_compute_over_float32_params():
    x = normal((B, T, I), jnp.float32)
    for make in (
        lambda dtype: nn.RNN(jl.LSTMCell(H, dtype=dtype), return_carry=True),
        lambda dtype: jl.LSTM(H, num_layers=2, dtype=dtype, return_carry=True),
    ):
        full, half = make(None), make(jnp.bfloat16)
        variables = full.init(jax.random.key(0), x)
        assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(variables))
        (_, h32), y32 = jax.jit(full.apply)(variables, x)
        (c16, h16), y16 = jax.jit(half.apply)(variables, x)
        assert y16.dtype == jnp.bfloat16 and y32.dtype == jnp.float32
        assert c16.dtype == h16.dtype == jnp.float32  # jaxrnn keeps carries in float32
        np.testing.assert_allclose(np.asarray(y16, np.float32), y32, atol=3e-2)
        np.testing.assert_allclose(h16, h32, atol=3e-2)
        grads = jax.jit(
            jax.grad(lambda v, half=half: jnp.sum(half.apply(v, x)[1].astype(jnp.float32)))
        )(variables)
        assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(grads))


def test_a_step_by_step_decoding_loop_equals_nn_rnn():
    cell = jl.LSTMCell(H, param_dtype=F64)
    x = normal((B, T, I))
    rnn = nn.RNN(cell, return_carry=True)
    variables = rnn.init(jax.random.key(0), x)
    carry_want, ys_want = rnn.apply(variables, x)
    cell_vars = {"params": variables["params"]["cell"]}
    carry, ys = cell.initialize_carry(None, x[:, 0].shape), []
    for t in range(T):
        carry, y = cell.apply(cell_vars, carry, x[:, t])
        ys.append(y)
    assert_trees_close((carry, jnp.stack(ys, axis=1)), (carry_want, ys_want))


def test_cell_options_reach_the_factory_init_preset_included():
    """``cell_options={"init": "flax"}``: Flax's init (zero biases, orthogonal recurrent blocks)."""
    x = jnp.ones((B, T, I))
    for module, params_of in (
        (nn.RNN(jl.LSTMCell(8, cell_options={"init": "flax"})), lambda v: v["params"]["cell"]),
        (jl.LSTM(8, cell_options={"init": "flax"}), lambda v: v["params"]["first"]["forward"]),
    ):
        p = params_of(module.init(jax.random.key(0), x))
        np.testing.assert_array_equal(p["b_ih"], 0)
        np.testing.assert_array_equal(p["b_hh"], 0)
        for block in jnp.split(p["w_hh"], 4):
            np.testing.assert_allclose(block.T @ block, np.eye(8), atol=1e-5)
    p = nn.RNN(jl.LSTMCell(8, cell_options={"forget_bias": 1.0})).init(jax.random.key(0), x)
    np.testing.assert_array_equal(p["params"]["cell"]["b_ih"][8:16], 1.0)

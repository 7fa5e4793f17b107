"""`jaxrnn.layernorm_lstm`: its equations in numpy, the fused path against autodiff."""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jaxrnn
from jaxrnn import _fused
from tests.helpers import random_carry, vjp_all

T, B, I, H = 6, 3, 3, 4
LENGTHS = jnp.array([6, 2, 0])
EPS = 1e-5


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _np_layer_norm(a, gain, bias=0.0):
    mu = a.mean(axis=-1, keepdims=True)
    var = ((a - mu) ** 2).mean(axis=-1, keepdims=True)
    return gain * (a - mu) / np.sqrt(var + EPS) + bias


def numpy_step(p, carry, x):
    """Ba, Kiros & Hinton's layer-normalised LSTM, gate order i, f, g, o, in numpy."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), p)
    h, c = (np.asarray(a, np.float64) for a in carry)
    z = _np_layer_norm(x @ p.w_ih.T, p.gamma_ih) + _np_layer_norm(h @ p.w_hh.T, p.gamma_hh) + p.b
    i, f, g, o = np.split(z, 4, axis=-1)
    c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
    h = _sigmoid(o) * np.tanh(_np_layer_norm(c, p.gamma_c, p.beta_c))
    return (h, c), h


def numpy_scan(p, xs, carry, lengths, reverse):
    """The masked scan as its definition: each sequence over its own valid steps."""
    xs = np.asarray(xs, np.float64)
    lengths = np.full(xs.shape[1], xs.shape[0]) if lengths is None else np.asarray(lengths)
    ys = np.zeros((*xs.shape[:2], H))
    hs, cs = [], []
    for n in range(xs.shape[1]):
        state = (np.asarray(carry.h[n]), np.asarray(carry.c[n]))
        steps = range(int(lengths[n]))
        for t in reversed(steps) if reverse else steps:
            state, ys[t, n] = numpy_step(p, state, xs[t, n])
        hs.append(state[0])
        cs.append(state[1])
    return jaxrnn.LSTMCarry(np.stack(hs), np.stack(cs)), ys


def _setup(dtype=jnp.float64, batch_shape=(B,), seed=0):
    """A cell with every param moved off its initial value (gains ≠ 1, biases ≠ 0)."""
    cell = jaxrnn.layernorm_lstm(H, forget_bias=1.0)
    k_params, k_shift, k_carry, k_x = jax.random.split(jax.random.key(seed), 4)
    params = cell.init(k_params, I, dtype)
    keys = jax.random.split(k_shift, len(params))
    params = type(params)(
        *(a + 0.3 * jax.random.normal(k, a.shape, dtype) for k, a in zip(keys, params, strict=True))
    )
    carry = random_carry(cell, k_carry, batch_shape, dtype)
    xs = jax.random.normal(k_x, (T, *batch_shape, I), dtype)
    return cell, params, carry, xs


def _assert_tree_allclose(a, b, tol):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(u, np.float64), np.asarray(v), rtol=tol, atol=tol)


@pytest.mark.parametrize("batch_shape", [(), (B,), (2, B)], ids=str)
def test_step_matches_the_numpy_equations(batch_shape):
    cell, params, carry, xs = _setup(batch_shape=batch_shape)
    new_carry, y = cell.step(params, carry, xs[0])
    want_carry, want_y = numpy_step(params, carry, np.asarray(xs[0]))
    _assert_tree_allclose(tuple(new_carry), want_carry, 1e-12)
    np.testing.assert_allclose(y, want_y, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "lengths"])
def test_scan_on_the_fused_path_matches_numpy(reverse, lengths):
    cell, params, carry, xs = _setup()
    assert _fused.takes(cell, params, xs, carry, jaxrnn.ScanOptions(), 1)
    jaxpr = jax.make_jaxpr(lambda p: jaxrnn.scan(cell, p, xs, carry=carry, lengths=lengths))
    assert "custom_vjp_call" in str(jaxpr(params))
    got = jaxrnn.scan(cell, params, xs, carry=carry, lengths=lengths, reverse=reverse)
    want = numpy_scan(params, xs, carry, lengths, reverse)
    _assert_tree_allclose(got, want, 1e-12)


def _compare(run, primals, tol):
    fused = vjp_all(functools.partial(run, backward="fused"), primals)
    plain = vjp_all(functools.partial(run, backward="autodiff"), primals)
    _assert_tree_allclose(fused, plain, tol)


@pytest.mark.parametrize(
    ("reverse", "lengths", "checkpoint"),
    [(False, None, None), (True, LENGTHS, None), (False, LENGTHS, 4), (True, None, 4)],
    ids=["forward", "reverse-lengths", "forward-lengths-checkpoint", "reverse-checkpoint"],
)
def test_fused_gradients_equal_autodiff(reverse, lengths, checkpoint):
    cell, params, carry, xs = _setup()

    def run(p, x, c, backward):
        return jaxrnn.scan(
            cell,
            p,
            x,
            carry=c,
            lengths=lengths,
            reverse=reverse,
            checkpoint=checkpoint if backward == "fused" else None,
            backward=backward,
        )

    _compare(run, (params, xs, carry), 1e-10)


def test_fused_gradients_equal_autodiff_float32_batch_major_under_jit():
    cell, params, carry, xs = _setup(jnp.float32)

    @functools.partial(jax.jit, static_argnames="backward")
    def run(p, x, c, backward):
        return jaxrnn.scan(
            cell, p, x, carry=c, lengths=LENGTHS, time_major=False, backward=backward
        )

    _compare(run, (params, jnp.swapaxes(xs, 0, 1), carry), 1e-5)


@pytest.mark.parametrize("backward", ["fused", "autodiff"])
def test_gradients_match_finite_differences(backward):
    cell, params, carry, xs = _setup(batch_shape=(2,), seed=1)
    run = jax.jit(
        lambda p, x, c: jaxrnn.scan(
            cell, p, x, carry=c, lengths=LENGTHS[:2], reverse=True, backward=backward
        )
    )
    # Reverse mode (the fused path has no forward mode), second order included.
    check_grads(run, (params, xs[:4], carry), order=2, modes=("rev",), eps=1e-4)


def test_under_vmap_equals_the_batch():
    cell, params, carry, xs = _setup()
    one = lambda x, c, n: jaxrnn.scan(cell, params, x, carry=c, lengths=n)  # noqa: E731
    got = jax.vmap(one, in_axes=(1, 0, 0), out_axes=(0, 1))(xs, carry, LENGTHS)
    _assert_tree_allclose(got, jaxrnn.scan(cell, params, xs, carry=carry, lengths=LENGTHS), 1e-12)


def test_through_a_bidirectional_stack():
    cell = jaxrnn.layernorm_lstm(H)
    rnn = jaxrnn.stack(cell, num_layers=2, bidirectional=True)
    params = rnn.init(jax.random.key(0), I, jnp.float64)
    xs = jax.random.normal(jax.random.key(1), (T, B, I), jnp.float64)
    (h, c), ys = rnn.apply(params, xs, lengths=LENGTHS)
    # Layer by layer: the first layer's two directions, concatenated, feed the second.
    first, second = params.first, jax.tree.map(lambda a: a[0], params.rest)
    zeros = cell.initial_carry((B,), jnp.float64)
    _, fwd = numpy_scan(first.forward, xs, zeros, LENGTHS, False)
    _, bwd = numpy_scan(first.backward, xs, zeros, LENGTHS, True)
    mid = np.concatenate([fwd, bwd], axis=-1)
    (h_f, c_f), fwd = numpy_scan(second.forward, mid, zeros, LENGTHS, False)
    (h_b, c_b), bwd = numpy_scan(second.backward, mid, zeros, LENGTHS, True)
    np.testing.assert_allclose(ys, np.concatenate([fwd, bwd], axis=-1), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(h[1], np.stack([h_f, h_b]), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(c[1], np.stack([c_f, c_b]), rtol=1e-12, atol=1e-12)
    _compare(
        lambda p, x, backward: rnn.apply(p, x, lengths=LENGTHS, backward=backward),
        (params, xs),
        1e-10,
    )


def test_nan_in_padding_reaches_no_output_or_gradient():
    cell, params, carry, xs = _setup()
    padded = jnp.arange(T)[:, None] >= LENGTHS[None, :]
    xs = jnp.where(padded[..., None], jnp.nan, xs)

    def loss(p, x):
        final, ys = jaxrnn.scan(cell, p, x, carry=carry, lengths=LENGTHS)
        return (ys**2).sum() + final.c.sum()

    value, grads = jax.value_and_grad(loss, argnums=(0, 1))(params, xs)
    assert np.isfinite(value)
    assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))


def test_zero_steps_give_the_initial_carry():
    cell, params, carry, xs = _setup()
    final, ys = jaxrnn.scan(cell, params, xs[:0], carry=carry)
    assert ys.shape == (0, B, H)
    _assert_tree_allclose(final, carry, 0)


def test_bfloat16_params_keep_a_float32_carry_and_stay_close():
    cell, params, carry, xs = _setup(jnp.float32)
    half = jax.tree.map(lambda a: a.astype(jnp.bfloat16), params)
    final, ys = jaxrnn.scan(cell, half, xs.astype(jnp.bfloat16), carry=carry)
    assert ys.dtype == jnp.bfloat16 and final.c.dtype == jnp.float32
    _, want = jaxrnn.scan(cell, params, xs, carry=carry)
    np.testing.assert_allclose(np.asarray(ys, np.float32), want, atol=0.1)
    grads = jax.grad(lambda p: jaxrnn.scan(cell, p, xs.astype(jnp.bfloat16))[1].sum())(half)
    assert all(np.isfinite(np.asarray(g, np.float32)).all() for g in jax.tree.leaves(grads))


def test_init_follows_the_paper():
    params = jaxrnn.layernorm_lstm(H, forget_bias=2.0).init(jax.random.key(0), I)
    np.testing.assert_array_equal(params.gamma_ih, np.ones(4 * H))
    np.testing.assert_array_equal(params.gamma_hh, np.ones(4 * H))
    np.testing.assert_array_equal(params.gamma_c, np.ones(H))
    np.testing.assert_array_equal(params.beta_c, np.zeros(H))
    np.testing.assert_array_equal(params.b, np.r_[np.zeros(H), 2 * np.ones(H), np.zeros(2 * H)])
    assert params.w_ih.shape == (4 * H, I) and params.w_hh.shape == (4 * H, H)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"hidden_size": 0}, "hidden_size: expected a positive integer"),
        ({"epsilon": 0.0}, "epsilon: expected a positive number, got 0.0"),
        ({"epsilon": "small"}, "epsilon: expected a positive number"),
        ({"forget_bias": float("nan")}, "forget_bias: expected a finite number"),
        ({"recurrent_init": "identity"}, "recurrent_init: expected one of"),
    ],
)
def test_bad_arguments_raise_naming_them(kwargs, match):
    with pytest.raises(ValueError, match=match):
        jaxrnn.layernorm_lstm(**{"hidden_size": H, **kwargs})


def test_params_of_another_size_raise_naming_the_field():
    cell, params, carry, xs = _setup()
    with pytest.raises(ValueError, match=r"params.gamma_c: expected shape \(4,\)"):
        jaxrnn.scan(cell, params._replace(gamma_c=jnp.ones(5)), xs, carry=carry)
    with pytest.raises(TypeError, match="expected an LSTMCarry"):
        cell.step(params, (carry.h, carry.c), xs[0])


def test_the_command_line_trains_it(tmp_path, capsys):
    from jaxrnn._cli import main

    out = tmp_path / "run"
    flags = ["--task", "adding", "--cell", "layernorm-lstm", "--seq-len", "4", "--hidden", "4"]
    more = ["--steps", "2", "--batch-size", "2", "--quiet", "--out", str(out)]
    assert main(["train", *flags, *more]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["cell"] == "layernorm-lstm" and summary["steps"] == 2
    assert np.isfinite(summary["final_eval_loss"])
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "layernorm-lstm" in capsys.readouterr().out


def test_gates_are_the_ones_the_step_uses():
    cell, params, carry, xs = _setup()
    gates = jaxrnn.gates(cell, params, xs, carry=carry)
    assert gates.forget.shape == (T, B, H)
    # Step 0 from the numpy equations: z = LN(W_ih x) γ_ih + LN(W_hh h) γ_hh + b.
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    z = (
        _np_layer_norm(np.asarray(xs[0]) @ p.w_ih.T, p.gamma_ih)
        + _np_layer_norm(np.asarray(carry.h) @ p.w_hh.T, p.gamma_hh)
        + p.b
    )
    i, f, g, o = np.split(z, 4, axis=-1)
    want = (_sigmoid(i), _sigmoid(f), np.tanh(g), _sigmoid(o))
    for got, w in zip(
        (gates.input, gates.forget, gates.candidate, gates.output), want, strict=True
    ):
        np.testing.assert_allclose(got[0], w, rtol=1e-12, atol=1e-12)
    # and the cell state they give is the step's: c_1 = f c_0 + i g.
    (_, c1), _ = numpy_step(params, carry, np.asarray(xs[0]))
    np.testing.assert_allclose(want[1] * np.asarray(carry.c) + want[0] * want[2], c1, rtol=1e-12)

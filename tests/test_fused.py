"""The fused BPTT fast path against plain autodiff through `lax.scan`."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jaxrnn
from jaxrnn import _fused
from tests.helpers import CELLS, INPUT_SIZE, random_carry, vjp_all

T, B = 6, 3
# Variants that differ only in their initialisation share the step of their base cell.
STEP_CELLS = [c for c in CELLS if not c.name.endswith(("chrono", "orthogonal"))]
STEP_IDS = [c.name for c in STEP_CELLS]
LENGTHS = jnp.array([6, 2, 0])


def _setup(case, dtype, batch_shape=(B,)):
    cell = case.make()
    k_params, k_carry, k_x = jax.random.split(jax.random.key(0), 3)
    params = cell.init(k_params, INPUT_SIZE, dtype)
    carry = random_carry(cell, k_carry, batch_shape, dtype)
    xs = jax.random.normal(k_x, (T, *batch_shape, INPUT_SIZE), dtype)
    return cell, params, carry, xs


def _compare(fn, primals, tol):
    fused = vjp_all(functools.partial(fn, backward="fused"), primals)
    plain = vjp_all(functools.partial(fn, backward="autodiff"), primals)
    assert jax.tree.structure(fused) == jax.tree.structure(plain)
    for u, v in zip(jax.tree.leaves(fused), jax.tree.leaves(plain), strict=True):
        np.testing.assert_allclose(u, v, rtol=tol, atol=tol)


# Each step in one (direction, lengths) setting, in turn, so that every setting runs with
# several cells; tests/test_paths.py holds every cell and path to the loop of its step.
SETTINGS = [(False, None), (True, LENGTHS), (True, None), (False, LENGTHS)]
SETTING_IDS = ["forward-full", "reverse-lengths", "reverse-full", "forward-lengths"]
CHUNKED = [(c, *SETTINGS[i % 2]) for i, c in enumerate(STEP_CELLS)]
PLAIN = [(c, *SETTINGS[i % 4]) for i, c in enumerate(STEP_CELLS)]


def _ids(cases):
    return [f"{c.name}-{SETTING_IDS[SETTINGS.index((r, n))]}" for c, r, n in cases]


@pytest.mark.parametrize(("case", "reverse", "lengths"), CHUNKED, ids=_ids(CHUNKED))
def test_fused_in_checkpointed_chunks_equals_autodiff(case, reverse, lengths):
    cell, params, carry, xs = _setup(case, jnp.float64)

    def run(p, x, c, backward):
        checkpoint = 4 if backward == "fused" else None  # T = 6: one whole chunk, one padded
        return jaxrnn.scan(
            cell,
            p,
            x,
            carry=c,
            lengths=lengths,
            reverse=reverse,
            checkpoint=checkpoint,
            backward=backward,
        )

    _compare(run, (params, xs, carry), 1e-10)


@pytest.mark.smoke
@pytest.mark.parametrize(("case", "reverse", "lengths"), PLAIN, ids=_ids(PLAIN))
def test_fused_equals_autodiff_float64(case, reverse, lengths):
    cell, params, carry, xs = _setup(case, jnp.float64)

    def run(p, x, c, backward):
        return jaxrnn.scan(cell, p, x, carry=c, lengths=lengths, reverse=reverse, backward=backward)

    _compare(run, (params, xs, carry), 1e-10)


@pytest.mark.parametrize("case", STEP_CELLS, ids=STEP_IDS)
def test_fused_equals_autodiff_float32_batch_major_under_jit(case):
    cell, params, carry, xs = _setup(case, jnp.float32)
    xs = jnp.swapaxes(xs, 0, 1)

    @functools.partial(jax.jit, static_argnames="backward")
    def run(p, x, c, backward):
        return jaxrnn.scan(
            cell, p, x, carry=c, lengths=LENGTHS, time_major=False, backward=backward
        )

    _compare(run, (params, xs, carry), 1e-5)


@pytest.mark.parametrize("batch_shape", [(), (2, 2)], ids=str)
def test_fused_with_any_batch_axes(batch_shape):
    case = next(c for c in CELLS if c.name == "lstm")
    cell, params, carry, xs = _setup(case, jnp.float64, batch_shape)
    _compare(
        lambda p, x, c, backward: jaxrnn.scan(cell, p, x, carry=c, backward=backward),
        (params, xs, carry),
        1e-10,
    )


def test_fused_under_vmap():
    case = next(c for c in CELLS if c.name == "gru")
    cell, params, carry, xs = _setup(case, jnp.float64)

    def run(p, x, c, backward):
        one = lambda x, c, n: jaxrnn.scan(cell, p, x, carry=c, lengths=n, backward=backward)  # noqa: E731
        return jax.vmap(one, in_axes=(1, 0, 0), out_axes=(0, 1))(x, c, LENGTHS)

    _compare(run, (params, xs, carry), 1e-10)


@pytest.mark.parametrize(
    "cell_fn", [jaxrnn.lstm, jaxrnn.gru, jaxrnn.elman], ids=["lstm", "gru", "elman"]
)
def test_fused_through_a_bidirectional_multi_layer_stack(cell_fn):
    rnn = jaxrnn.stack(cell_fn(4), num_layers=2, bidirectional=True)
    params = rnn.init(jax.random.key(0), INPUT_SIZE, jnp.float64)
    xs = jax.random.normal(jax.random.key(1), (T, B, INPUT_SIZE), jnp.float64)
    _compare(
        lambda p, x, backward: rnn.apply(p, x, lengths=LENGTHS, backward=backward),
        (params, xs),
        1e-10,
    )


@pytest.mark.parametrize("name", ["lstm", "gru", "elman_output_layer"])
def test_second_order_reverse_mode_is_exact(name):
    case = next(c for c in CELLS if c.name == name)
    cell, params, carry, xs = _setup(case, jnp.float64)
    run = jax.jit(
        lambda p, x, c: jaxrnn.scan(cell, p, x, carry=c, lengths=LENGTHS, backward="fused")
    )
    check_grads(run, (params, xs, carry), order=2, modes=("rev",), eps=1e-4)


def test_forward_mode_through_the_fused_path_is_a_clear_error():
    case = next(c for c in CELLS if c.name == "lstm")
    cell, params, _, xs = _setup(case, jnp.float64)
    with pytest.raises(TypeError, match="forward-mode"):
        jax.jvp(lambda x: jaxrnn.scan(cell, params, x, backward="fused")[1], (xs,), (xs,))
    # and backward="autodiff" is the way to forward mode:
    jax.jvp(lambda x: jaxrnn.scan(cell, params, x, backward="autodiff")[1], (xs,), (xs,))


def test_which_cells_take_the_fused_path():
    x = jnp.ones((2, 3), jnp.float32)

    def fused(cell, dtype=jnp.float32):
        params = cell.init(jax.random.key(0), 3, dtype)
        carry = cell.initial_carry((2,), dtype)
        return _fused.rules_for(cell, params, x.astype(dtype), carry) is not None

    assert fused(jaxrnn.lstm(4)) and fused(jaxrnn.gru(4)) and fused(jaxrnn.elman(4, output_size=1))
    assert fused(jaxrnn.lstm(4), jnp.float64)
    assert not fused(jaxrnn.lstm(4, proj_size=2))
    assert fused(jaxrnn.lstm(4), jnp.bfloat16)  # tests/test_bf16_fused.py tests it
    assert not fused(jaxrnn.clip_carry_grad(jaxrnn.lstm(4), 1.0))
    lstm = jaxrnn.lstm(4)
    assert not fused(lstm._replace(step=lambda p, c, x: lstm.step(p, c, x)))  # a replaced step
    assert fused(lstm._replace(init=lstm.init))  # other fields: still the built-in step


def test_bad_backward_option():
    cell = jaxrnn.gru(2)
    with pytest.raises(ValueError, match="backward: expected 'fused' or 'autodiff', got 'cudnn'"):
        jaxrnn.scan(cell, cell.init(jax.random.key(0), 3), jnp.ones((2, 3)), backward="cudnn")


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("num_steps", [1, 2, 5])
def test_scan_over_slab_equals_a_scan_with_separate_outputs(reverse, num_steps):
    # body: carry += slab_t · x_t; the slab's slice becomes carry·slab_t, y_t the old slice.
    slab = jnp.arange(1.0, 1.0 + 2 * num_steps).reshape(num_steps, 2)
    xs = jnp.arange(num_steps, dtype=jnp.float32) + 0.5

    def body(carry, slab_t, x_t):
        carry = carry + slab_t * x_t
        return carry, carry * slab_t, slab_t

    def plain(carry, inputs):
        slab_t, x_t = inputs
        carry, new, y = body(carry, slab_t, x_t)
        return carry, (new, y)

    want_carry, (want_slab, want_ys) = jax.lax.scan(plain, jnp.ones(2), (slab, xs), reverse=reverse)
    carry, new_slab, ys = _fused._scan_over_slab(body, jnp.ones(2), slab, xs, reverse)
    for got, want in ((carry, want_carry), (new_slab, want_slab), (ys, want_ys)):
        np.testing.assert_array_equal(got, want)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="reads XLA:CPU's compiled program")
def test_lstm_gradient_keeps_one_gate_slab_and_copies_none():
    # The input slab, the saved gates and their cotangents share one [T, N, 4H] buffer in each
    # loop (jaxrnn._fused._scan_over_slab). A read and a write of it in the same step would
    # make XLA:CPU copy the whole slab on every step (twice the time at T=100, B=64, H=128).
    t, n, i, h = 7, 3, 5, 4
    cell = jaxrnn.lstm(h)
    params = cell.init(jax.random.key(0), i)
    xs = jnp.ones((t, n, i))

    def loss(params, xs):
        return jaxrnn.scan(cell, params, xs, lengths=jnp.array([7, 3, 0]))[1].sum()

    text = jax.jit(jax.grad(loss)).lower(params, xs).compile().as_text()
    slab = f"f32[{t},{n},{4 * h}]"
    loops = [line.split(" while(")[0] for line in text.splitlines() if " while(" in line]
    assert [loop.count(slab) for loop in loops] == [1, 1]
    copies = [line for line in text.splitlines() if " copy(" in line and f"= {slab}" in line]
    assert copies == []


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="reads XLA:CPU's compiled program")
def test_gru_gradient_writes_gates_and_their_cotangents_over_the_input_slabs():
    # The GRU's three [T, N, H] input slabs hold the saved gates r, z, n in the forward loop
    # and their cotangents in the backward loop: the forward loop carries the 3 slabs, the
    # outputs, h_{t-1} and W_hn h + b_hn (at most 6 [T, N, H] buffers; separate gate outputs
    # made it 8), and the backward loop one [T, N, 3H] buffer (the recurrent cotangent), not two.
    t, n, i, h = 7, 3, 5, 4
    cell = jaxrnn.gru(h)
    params = cell.init(jax.random.key(0), i)

    def loss(params, xs):
        return jaxrnn.scan(cell, params, xs, lengths=jnp.array([7, 3, 0]))[1].sum()

    text = jax.jit(jax.grad(loss)).lower(params, jnp.ones((t, n, i))).compile().as_text()
    loops = [line.split(" while(")[0] for line in text.splitlines() if " while(" in line]
    assert len(loops) == 2
    forward, backward = loops
    assert forward.count(f"f32[{t},{n},{h}]") <= 6
    assert forward.count(f"f32[{t},{n},{3 * h}]") == 0
    assert backward.count(f"f32[{t},{n},{3 * h}]") == 1

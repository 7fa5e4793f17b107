"""bfloat16 (and float16) through the fused BPTT backward, against autodiff, float32 and float64.

Tolerances come from bfloat16's 8 significant bits: its unit roundoff is
``U = 2**-8`` (one ulp at 1 is ``2U``).

* Forward, fused against autodiff: both run the step with the same roundings
  to bfloat16 (the products' operands, the carry after each step, the
  outputs) and differ only in float32 rounding, which flips a bfloat16
  rounding rarely (:func:`_assert_same_roundings`).
* Gradients, bfloat16 against float32 on the same (bfloat16-valued) params,
  inputs and carry: they differ by the roundings of each step, about two of
  relative size U per step on each path (an operand of the recurrent product
  forward, the pre-activation cotangent backward), adding up as a random walk
  over T steps to ``√(2T)·U = 4U`` at T = 8; the bound 8U = 2^-5 on each
  gradient's relative (Frobenius) error leaves a factor 2
  (:func:`_assert_bf16_gradients`).

float16 (11 significant bits) is tested alike with its ``U = 2**-11``. Every
float32 reference is itself checked against float64 autodiff, or is float32
autodiff, so that none of them shares the fused rules under test.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn
from jaxrnn import _fused, training
from jaxrnn._checks import ScanOptions

U_BF16, U_F16, U_F32 = 2.0**-8, 2.0**-11, 2.0**-24
T, B, I, H = 8, 4, 3, 8
LENGTHS = jnp.array([8, 5, 1, 0])

CELLS = {
    "lstm": lambda: jaxrnn.lstm(H),
    "gru": lambda: jaxrnn.gru(H),
    "elman_output_layer": lambda: jaxrnn.elman(H, output_size=2, output_activation="sigmoid"),
    "layernorm_lstm": lambda: jaxrnn.layernorm_lstm(H),
}


@pytest.fixture(autouse=True)
def _float32_matmuls_in_float32():
    """The float32 references multiply in float32 on every backend (a GPU's default is TF32).

    bfloat16 products are unchanged: their operands are exact in float32 and
    they accumulate in float32 either way.
    """
    with jax.default_matmul_precision("highest"):
        yield


def _as(tree, dtype):
    return jax.tree.map(lambda a: a.astype(dtype), tree)


def _inputs(cell, dtype, carry_dtype=None, key=0):
    """Params, inputs and a random carry drawn in float64 and rounded to ``dtype``.

    The carry has ``cell.initial_carry``'s dtype for these params (float32
    for bfloat16 params, as ``compute_dtype`` gives) unless ``carry_dtype``.
    """
    k_p, k_c, k_x = jax.random.split(jax.random.key(key), 3)
    params = _as(cell.init(k_p, I, jnp.float64), dtype)
    leaves, treedef = jax.tree.flatten(cell.initial_carry((B,), dtype))
    c_keys = jax.random.split(k_c, len(leaves))
    carry = jax.tree.unflatten(
        treedef,
        [
            (0.5 * jax.random.normal(k, a.shape, jnp.float64)).astype(carry_dtype or a.dtype)
            for k, a in zip(c_keys, leaves, strict=True)
        ],
    )
    xs = jax.random.normal(k_x, (T, B, I), jnp.float64).astype(dtype)
    return params, xs, carry


def _vjp(fn, primals, cotangent_dtype=jnp.bfloat16):
    """Outputs of ``fn`` and its VJP with one fixed random cotangent.

    The cotangent is rounded to ``cotangent_dtype``: the same numbers for
    every dtype under comparison.
    """
    out, vjp = jax.vjp(fn, *primals)
    leaves, treedef = jax.tree.flatten(out)
    keys = jax.random.split(jax.random.key(9), len(leaves))
    cot = [
        jax.random.normal(k, a.shape, jnp.float32).astype(cotangent_dtype).astype(a.dtype)
        for k, a in zip(keys, leaves, strict=True)
    ]
    return out, vjp(jax.tree.unflatten(treedef, cot))


def _rel_errors(tree, ref):
    """``‖a − r‖ / ‖r‖`` for each leaf, in float64 (``‖a‖`` where the reference is zero)."""
    errors = []
    for a, r in zip(jax.tree.leaves(tree), jax.tree.leaves(ref), strict=True):
        a, r = np.asarray(a, np.float64), np.asarray(r, np.float64)
        scale = np.linalg.norm(r)
        errors.append(np.linalg.norm(a - r) / (scale if scale > 0 else 1.0))
    return np.array(errors)


def _assert_same_roundings(tree, ref, u=U_BF16):
    """Equal up to a few roundings to ``u``'s dtype that float32 noise flipped, leaf by leaf.

    The two paths round the same values; their float32 work differs in order
    only (``b_ih + b_hh`` added first, for one), by about 2^-24 relative,
    which flips a rounding to bfloat16 with a chance of about 2^-24 / 2^-8 =
    2^-16 each. A flip moves a value by one ulp, 2u relative, and in a
    contractive cell its effect decays. So the mean difference stays below
    u/32 (at most 1/64 of the values a whole ulp apart) and the largest below
    one ulp of the largest value. One rounding more or one fewer (a float32
    carry stored as bfloat16, a product of float32 operands, a bias sum
    rounded to bfloat16) moves most values, and the mean by u/16 to u.
    """
    for a, r in zip(jax.tree.leaves(tree), jax.tree.leaves(ref), strict=True):
        a, r = np.asarray(a, np.float64), np.asarray(r, np.float64)
        d = np.abs(a - r)
        assert d.mean() <= u / 32 * np.abs(r).mean(), d.mean() / np.abs(r).mean()
        assert d.max() <= 2 * u * np.abs(r).max(), d.max() / np.abs(r).max()


def _assert_bf16_gradients(err, err_ad, backward_dominates=True):
    """Each gradient within 8U of float32's, or within twice autodiff's bfloat16 error.

    ``err``, ``err_ad``: the fused and autodiff bfloat16 gradients' relative
    errors against float32. The second bound is for inputs on which the cell
    amplifies rounding: the layer-normalised LSTM divides by standard
    deviations, and on one input here its float32 gradients are ~15 float32
    ulps from float64's and both bfloat16 paths' 0.1 from float32's (the
    forward's rounding, which they share). Where the backward pass's
    roundings dominate (the LSTM, GRU and Elman cells), the fused one, whose
    carry cotangent and gate derivatives stay in float32, is on average at
    least as accurate as autodiff's.
    """
    assert np.all(err <= np.maximum(8 * U_BF16, 2 * err_ad)), (err, err_ad)
    if backward_dominates:
        assert err.mean() <= err_ad.mean(), (err, err_ad)


def _uses_custom_vjp(fn, *args):
    """Whether ``fn`` runs the fused path: its program calls a custom VJP (autodiff's does not)."""
    return "custom_vjp_call" in str(jax.make_jaxpr(fn)(*args))


def test_bfloat16_and_float16_take_the_fused_path():
    x = jnp.ones((T, B, I), jnp.bfloat16)

    def fused(cell, dtype, carry_dtype=jnp.float32, xs_dtype=None):
        params = cell.init(jax.random.key(0), I, dtype)
        carry = _as(cell.initial_carry((B,), dtype), carry_dtype)
        return _fused.takes(cell, params, x.astype(xs_dtype or dtype), carry, ScanOptions(), 1)

    for make in CELLS.values():
        cell = make()
        assert fused(cell, jnp.bfloat16)  # initial_carry's float32 carry, as compute_dtype gives
        assert fused(cell, jnp.bfloat16, jnp.bfloat16)  # and a bfloat16 carry
        assert fused(cell, jnp.float16, jnp.float16)
    lstm = jaxrnn.lstm(H)
    assert fused(lstm, jnp.float32, xs_dtype=jnp.bfloat16)  # mixed: computed in float32
    assert fused(lstm, jnp.bfloat16, xs_dtype=jnp.float32)  # mixed: computed in bfloat16
    # Params of several dtypes, and dtypes XLA does not multiply everywhere, fall back.
    params = lstm.init(jax.random.key(0), I, jnp.bfloat16)
    carry = lstm.initial_carry((B,), jnp.float32)
    half_cast = params._replace(b_ih=params.b_ih.astype(jnp.float32))
    assert _fused.rules_for(lstm, half_cast, x, carry) is None
    assert _fused.rules_for(lstm, _as(params, jnp.float8_e4m3fn), x, carry) is None
    # ... and jaxrnn.scan runs bfloat16 through the custom VJP unless told autodiff.
    for backward, expected in [("fused", True), ("autodiff", False)]:
        run = lambda p, b=backward: jaxrnn.scan(lstm, p, x, backward=b)[1]  # noqa: E731
        assert _uses_custom_vjp(run, params) == expected


# Each cell with a float32 carry (initial_carry's for bfloat16 params) and a bfloat16
# carry, the settings in turn: every setting runs with several cells. Checkpointing is
# test_checkpointed_chunks_change_nothing's (it compiles slowly).
SETTINGS = [
    {"lengths": LENGTHS},
    {"reverse": True},
    {"lengths": LENGTHS, "reverse": True},
    {"resets": jnp.zeros((T, B), bool).at[3, 0].set(True).at[5, 2].set(True)},
]
CASES = [
    (name, carry_dtype, SETTINGS[(2 * i + j) % len(SETTINGS)])
    for i, name in enumerate(CELLS)
    for j, carry_dtype in enumerate([None, jnp.bfloat16])
]
CASE_IDS = [f"{n}-{'f32' if c is None else 'bf16'}carry-{'-'.join(s)}" for n, c, s in CASES]


@pytest.mark.parametrize(("name", "carry_dtype", "setting"), CASES, ids=CASE_IDS)
def test_bfloat16_fused_against_autodiff_float32_and_float64(name, carry_dtype, setting):
    cell = CELLS[name]()
    params, xs, carry = _inputs(cell, jnp.bfloat16, carry_dtype)

    def vjp(dtype, backward):
        # The same numbers in every dtype: params, inputs and carry are bfloat16-valued.
        primals = (_as(params, dtype), xs.astype(dtype), carry)
        if dtype != jnp.bfloat16:
            primals = (*primals[:2], _as(carry, dtype))
        run = lambda p, x, c: jaxrnn.scan(cell, p, x, carry=c, backward=backward, **setting)  # noqa: E731
        return _vjp(run, primals)

    (final, ys), grads = vjp(jnp.bfloat16, "fused")
    (final_ad, ys_ad), grads_ad = vjp(jnp.bfloat16, "autodiff")
    (_, ys32), grads32 = vjp(jnp.float32, "fused")
    _, grads64 = vjp(jnp.float64, "autodiff")  # checks the float32 fused path
    # Dtypes: outputs and carry as cell.step returns them, cotangents as their primals.
    assert ys.dtype == jnp.bfloat16 == ys_ad.dtype
    assert jax.tree.map(lambda a: a.dtype, final) == jax.tree.map(lambda a: a.dtype, carry)
    dtypes = lambda tree: jax.tree.map(lambda a: a.dtype, tree)  # noqa: E731
    assert dtypes(grads) == dtypes((params, xs, carry))
    # Forward: autodiff's roundings, and bfloat16's distance from float32.
    _assert_same_roundings((final, ys), (final_ad, ys_ad))
    np.testing.assert_allclose(
        np.asarray(ys, np.float64), np.asarray(ys32, np.float64), atol=8 * U_BF16
    )
    # Gradients: the float32 fused path is float64's to float32 tolerance (8 U_F32 per
    # step's roundings, times 2^5 for the layer-normalised LSTM's amplification), and the
    # bfloat16 fused path is the float32 path's to bfloat16 tolerance.
    assert _rel_errors(grads32, grads64).max() <= 2**8 * U_F32
    err, err_ad = _rel_errors(grads, grads32), _rel_errors(grads_ad, grads32)
    _assert_bf16_gradients(err, err_ad, backward_dominates=name != "layernorm_lstm")


def test_float16_fused_against_autodiff_and_float32():
    cell = CELLS["gru"]()
    params, xs, carry = _inputs(cell, jnp.float16, jnp.float16)

    def vjp(dtype, backward):
        primals = _as((params, xs, carry), dtype)
        run = lambda p, x, c: jaxrnn.scan(cell, p, x, carry=c, lengths=LENGTHS, backward=backward)  # noqa: E731
        return _vjp(run, primals, jnp.float16)

    out, grads = vjp(jnp.float16, "fused")
    out_ad, _ = vjp(jnp.float16, "autodiff")
    _, grads32 = vjp(jnp.float32, "autodiff")
    assert out[1].dtype == jnp.float16 and grads[0].w_ih.dtype == jnp.float16
    _assert_same_roundings(out, out_ad, U_F16)
    assert _rel_errors(grads, grads32).max() <= 8 * U_F16


@pytest.mark.parametrize(
    ("params_dtype", "xs_dtype"),
    [(jnp.float32, jnp.bfloat16), (jnp.bfloat16, jnp.float32)],
    ids=["f32params-bf16xs", "bf16params-f32xs"],
)
def test_mixed_dtypes_compute_as_the_step(params_dtype, xs_dtype):
    """float32 params with bfloat16 inputs compute in float32, the reverse in bfloat16."""
    cell = CELLS["lstm"]()
    params, _, carry = _inputs(cell, params_dtype)
    xs = _inputs(cell, xs_dtype)[1]

    def vjp(backward):
        run = lambda p, x, c: jaxrnn.scan(cell, p, x, carry=c, lengths=LENGTHS, backward=backward)  # noqa: E731
        return _vjp(run, (params, xs, carry), xs_dtype)

    (_, ys), grads = vjp("fused")
    (_, ys_ad), grads_ad = vjp("autodiff")
    assert ys.dtype == jnp.float32 == ys_ad.dtype  # the step's: x and w_ih promoted
    assert grads[1].dtype == xs_dtype and grads[0].w_ih.dtype == params_dtype
    if params_dtype == jnp.bfloat16:
        _assert_same_roundings(ys, ys_ad)
        assert _rel_errors(grads, grads_ad).max() <= 8 * U_BF16
    else:  # float32 throughout: the float32 paths' agreement (tests/test_fused.py)
        np.testing.assert_allclose(ys, ys_ad, rtol=2**4 * U_F32, atol=2**4 * U_F32)
        assert _rel_errors(grads, grads_ad).max() <= 2**6 * U_F32


@pytest.mark.parametrize("checkpoint", [None, 3])
def test_weight_gradients_are_summed_in_float32_over_all_rows(checkpoint):
    """An identity Elman cell with zero weights: each row adds exactly 1 to ∂L/∂b and ∂L/∂W_ih.

    With L = Σ y and x = 1, every step of every sequence has ∂L/∂a = 1, so
    ``∂L/∂b_ih = ∂L/∂b_hh = ∂L/∂W_ih = T·B`` = 370 here, a bfloat16 number
    (185·2). Rows summed in bfloat16 would stop at 256 (256 + 1 rounds to
    256); chunks of 3·37 = 111 rows whose sums were added in bfloat16 would
    round 333 to 332 and end at 368.
    """
    cell = jaxrnn.elman(2, activation="identity", recurrent_init="identity")
    params = jax.tree.map(jnp.zeros_like, cell.init(jax.random.key(0), 1, jnp.bfloat16))
    num_steps, batch = 10, 37
    xs = jnp.ones((num_steps, batch, 1), jnp.bfloat16)

    def loss(p):
        return jnp.sum(jaxrnn.scan(cell, p, xs, checkpoint=checkpoint)[1].astype(jnp.float32))

    grads = jax.grad(loss)(params)
    assert grads.w_ih.dtype == jnp.bfloat16
    total = num_steps * batch
    for leaf, expected in [(grads.b_ih, total), (grads.b_hh, total), (grads.w_ih, total)]:
        np.testing.assert_array_equal(np.asarray(leaf, np.float32), expected)
    np.testing.assert_array_equal(np.asarray(grads.w_hh, np.float32), 0)


def test_the_carry_cotangent_is_kept_in_float32():
    """An LSTM whose cell state only carries over: ∂L/∂c_0 counts the steps, past 256 too.

    Zero weights, biases 20 on the forget and output gates and 0 on the
    others make f = o = 1 (σ(20) is 1 in float32) and g = 0, so c_t =
    c_{t-1} = 0 and y_t = h_t = tanh(c_t). With L = Σ y, ∂L/∂c_{t-1} =
    ∂L/∂c_t + 1: ∂L/∂c_0 = T = 300, a bfloat16 number (75·4), and ∂L/∂h_0 = 0.
    The fused backward keeps the cell state's cotangent in float32 and rounds
    it to the bfloat16 carry's dtype once; autodiff stores it in the carry's
    dtype after every step, where 256 + 1 rounds back to 256.
    """
    cell = jaxrnn.lstm(2)
    params = jax.tree.map(jnp.zeros_like, cell.init(jax.random.key(0), 1, jnp.bfloat16))
    params = params._replace(b_ih=jnp.array([0, 0, 20, 20, 0, 0, 20, 20], jnp.bfloat16))
    num_steps = 300
    xs = jnp.ones((num_steps, 1, 1), jnp.bfloat16)
    carry = _as(cell.initial_carry((1,)), jnp.bfloat16)

    def dcarry(backward):
        loss = lambda c: jnp.sum(  # noqa: E731
            jaxrnn.scan(cell, params, xs, carry=c, backward=backward)[1].astype(jnp.float32)
        )
        return _as(jax.grad(loss)(carry), jnp.float32)

    fused, autodiff = dcarry("fused"), dcarry("autodiff")
    np.testing.assert_array_equal(fused.c, num_steps)
    np.testing.assert_array_equal(fused.h, 0)
    np.testing.assert_array_equal(autodiff.c, 256)


def test_checkpointed_chunks_change_nothing():
    cell = CELLS["lstm"]()
    params, xs, carry = _inputs(cell, jnp.bfloat16)

    def vjp(checkpoint):
        run = lambda p, x, c: jaxrnn.scan(  # noqa: E731
            cell, p, x, carry=c, lengths=LENGTHS, checkpoint=checkpoint
        )
        return _vjp(run, (params, xs, carry))

    # The same steps, each weight gradient one float32 sum: the chunks add their float32
    # partial sums in another order, which flips a final rounding to bfloat16 rarely.
    _assert_same_roundings(vjp(3), vjp(None))


def test_bidirectional_two_layer_stack():
    rnn = jaxrnn.stack(jaxrnn.lstm(H), num_layers=2, bidirectional=True)
    params = _as(rnn.init(jax.random.key(0), I, jnp.float64), jnp.bfloat16)
    xs = jax.random.normal(jax.random.key(1), (T, B, I), jnp.float64).astype(jnp.bfloat16)

    def vjp(dtype, backward):
        run = lambda p, x: rnn.apply(p, x, lengths=LENGTHS, backward=backward)  # noqa: E731
        return _vjp(run, _as((params, xs), dtype))

    out, grads = vjp(jnp.bfloat16, "fused")
    out_ad, grads_ad = vjp(jnp.bfloat16, "autodiff")
    _, grads32 = vjp(jnp.float32, "autodiff")  # independent of the fused rules
    _assert_same_roundings(out, out_ad)
    _assert_bf16_gradients(_rel_errors(grads, grads32), _rel_errors(grads_ad, grads32))


def test_readout_with_bfloat16_compute_end_to_end():
    """``compute_dtype=bfloat16`` over float32 params: fused, gradients near float32 compute's."""
    xs = jax.random.normal(jax.random.key(1), (B, T, I), jnp.float32)
    targets = jax.random.normal(jax.random.key(2), (B, T, 1), jnp.float32)

    def grads(compute_dtype, backward):
        model = training.readout(jaxrnn.gru(H), 1, compute_dtype=compute_dtype, backward=backward)
        # The same bfloat16-valued params (float32 leaves) for every variant.
        params = _as(_as(model.init(jax.random.key(0), I), jnp.bfloat16), jnp.float32)

        def loss(p):
            return jnp.mean((model.apply(p, xs, LENGTHS) - targets) ** 2)

        return _uses_custom_vjp(loss, params), jax.grad(loss)(params)

    took_fused, g = grads(jnp.bfloat16, "fused")
    took_autodiff, g_ad = grads(jnp.bfloat16, "autodiff")
    _, g32 = grads(None, "autodiff")  # float32 compute by autodiff: independent of the rules
    assert took_fused and not took_autodiff
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(g))
    _assert_bf16_gradients(_rel_errors(g, g32), _rel_errors(g_ad, g32))


def test_nan_in_padding_does_not_poison_bfloat16_gradients():
    cell = CELLS["lstm"]()
    params, xs, carry = _inputs(cell, jnp.bfloat16)
    padding = (jnp.arange(T)[:, None] >= LENGTHS[None, :])[..., None]

    def vjp(xs):
        run = lambda p, x, c: jaxrnn.scan(cell, p, x, carry=c, lengths=LENGTHS)  # noqa: E731
        return _vjp(run, (params, xs, carry))

    clean = vjp(jnp.where(padding, 0, xs))
    dirty = vjp(jnp.where(padding, jnp.nan, xs))
    for a, b in zip(jax.tree.leaves(clean), jax.tree.leaves(dirty), strict=True):
        np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))
    dxs = np.asarray(dirty[1][1], np.float32)
    assert np.all(np.isfinite(dxs)) and np.all(dxs[np.broadcast_to(padding, dxs.shape)] == 0)

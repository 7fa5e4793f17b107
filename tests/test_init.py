"""The initialisers: exact structural properties, not numbers from a run."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn

H, I = 16, 5


@pytest.mark.parametrize(
    "cell", [jaxrnn.elman(H), jaxrnn.lstm(H), jaxrnn.gru(H)], ids=["elman", "lstm", "gru"]
)
def test_default_is_pytorchs_uniform(cell):
    params = cell.init(jax.random.key(0), I)
    bound = 1 / math.sqrt(H)
    for leaf in jax.tree.leaves(params):
        assert float(jnp.abs(leaf).max()) <= bound
    w_hh = np.asarray(params.w_hh)
    # Uniform on (-b, b): mean 0, variance b²/3 — loose enough to hold for any seed.
    assert abs(w_hh.mean()) < 0.1 * bound
    assert abs(w_hh.var() - bound**2 / 3) < 0.15 * bound**2 / 3


@pytest.mark.parametrize(
    ("cell", "blocks"),
    [
        (jaxrnn.elman(H, recurrent_init="orthogonal"), 1),
        (jaxrnn.lstm(H, recurrent_init="orthogonal"), 4),
        (jaxrnn.gru(H, recurrent_init="orthogonal"), 3),
    ],
    ids=["elman", "lstm", "gru"],
)
def test_orthogonal_recurrent_blocks(cell, blocks):
    w_hh = cell.init(jax.random.key(0), I, jnp.float64).w_hh
    assert w_hh.shape == (blocks * H, H)
    for q in jnp.split(w_hh, blocks):
        np.testing.assert_allclose(q.T @ q, np.eye(H), atol=1e-10)


def test_irnn_is_identity_with_zero_bias():
    params = jaxrnn.elman(H, activation="relu", recurrent_init="identity").init(
        jax.random.key(0), I
    )
    np.testing.assert_array_equal(params.w_hh, np.eye(H))
    np.testing.assert_array_equal(params.b_ih, 0)
    np.testing.assert_array_equal(params.b_hh, 0)
    explicit = jaxrnn.elman(H, recurrent_init="identity", bias_init="uniform")
    assert float(jnp.abs(explicit.init(jax.random.key(0), I).b_ih).max()) > 0


def test_lstm_forget_bias():
    params = jaxrnn.lstm(H, forget_bias=1.0).init(jax.random.key(0), I)
    np.testing.assert_array_equal(params.b_ih[H : 2 * H], 1.0)
    np.testing.assert_array_equal(params.b_hh[H : 2 * H], 0.0)
    default = jaxrnn.lstm(H).init(jax.random.key(0), I)
    np.testing.assert_array_equal(params.b_ih[:H], default.b_ih[:H])  # other gates unchanged


@pytest.mark.parametrize("t_max", [2, 10, 784])
def test_lstm_chrono(t_max):
    params = jaxrnn.lstm(H, chrono=t_max).init(jax.random.key(0), I, jnp.float64)
    b_f = params.b_ih[H : 2 * H]
    assert float(b_f.min()) >= 0.0 and float(b_f.max()) <= math.log(t_max - 1) + 1e-12
    np.testing.assert_array_equal(params.b_ih[:H], -b_f)
    np.testing.assert_array_equal(params.b_hh[: 2 * H], 0.0)


def test_gru_chrono_biases_the_update_gate():
    params = jaxrnn.gru(H, chrono=100).init(jax.random.key(0), I, jnp.float64)
    b_z = params.b_ih[H : 2 * H]
    assert float(b_z.min()) >= 0.0 and float(b_z.max()) <= math.log(99) + 1e-12
    np.testing.assert_array_equal(params.b_hh[H : 2 * H], 0.0)


def test_callable_recurrent_init_is_applied_per_block():
    init = jax.nn.initializers.constant(0.5)
    w_hh = jaxrnn.lstm(H, recurrent_init=init).init(jax.random.key(0), I).w_hh
    np.testing.assert_array_equal(w_hh, 0.5)


def test_no_bias_and_projection_shapes():
    params = jaxrnn.lstm(H, proj_size=4, use_bias=False).init(jax.random.key(0), I)
    assert params.b_ih is None and params.b_hh is None
    assert params.w_hh.shape == (4 * H, 4) and params.w_hr.shape == (4, H)
    carry = jaxrnn.lstm(H, proj_size=4).initial_carry((2,))
    assert carry.h.shape == (2, 4) and carry.c.shape == (2, H)


def test_init_is_deterministic_and_jittable():
    cell = jaxrnn.lstm(H, chrono=50)
    a = cell.init(jax.random.key(7), I)
    b = jax.jit(cell.init, static_argnums=1)(jax.random.key(7), I)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(u, v)


# ---------------------------------------------------------------------------------------
# init="pytorch" | "flax" | "keras": each preset against its peer's own draws or formulas.
# ---------------------------------------------------------------------------------------

# I != H so that a fan_in/fan_out mix-up changes every variance; four seeds a side keep
# each gate block's sample at 4·H·I = 6 144 weights.
HP, IP, SEEDS = 64, 24, 4
FACTORIES = {
    "lstm": jaxrnn.lstm,
    "gru": jaxrnn.gru,
    "elman": jaxrnn.elman,
    "layernorm_lstm": jaxrnn.layernorm_lstm,
}
GATES = {"lstm": 4, "gru": 3, "elman": 1, "layernorm_lstm": 4}
# lecun_normal: a normal truncated to ±2 standard deviations, rescaled to variance 1/fan_in
# (jax.nn.initializers.variance_scaling's constant for the truncation at ±2).
TRUNCATED_STD = 0.87962566103423978


def _biases(params):
    return [params.b] if hasattr(params, "b") else [params.b_ih, params.b_hh]


def _draws(name, preset, **options):
    """``SEEDS`` draws of the cell's params, as a list (one jitted, vmapped init: fast)."""
    cell = FACTORIES[name](HP, init=preset, **options)
    keys = jax.random.split(jax.random.key(0), SEEDS)
    stacked = jax.jit(jax.vmap(cell.init, in_axes=(0, None)), static_argnums=1)(keys, IP)
    return [jax.tree.map(lambda a, i=i: a[i], stacked) for i in range(SEEDS)]


def _blocks(matrices, gates):
    """Gate block g of every matrix in ``matrices`` (each ``[gates*H, n]``), pooled."""
    return [
        np.concatenate([np.ravel(np.split(m, gates)[g]) for m in matrices]) for g in range(gates)
    ]


def _assert_same_law(ours, theirs, what):
    """Both samples' mean, variance and fourth moment agree within 5 standard errors.

    The standard error of each difference is computed from the samples (the
    variance of a sample variance is (μ4 − σ⁴)/n, of a sample mean of x⁴
    var(x⁴)/n), treating the weights as independent: exact for the iid
    draws, and for an orthogonal matrix's entries an upper bound on the
    spread (its sum of squares is fixed).
    """
    a, b = (np.asarray(x, np.float64).ravel() for x in (ours, theirs))

    def stats(x):
        c = x - x.mean()
        var, m4 = (c**2).mean(), (c**4).mean()
        return (
            x.mean(),
            var,
            (x**4).mean(),
            var / x.size,
            (m4 - var**2) / x.size,
            (x**4).var() / x.size,
        )

    ma, va, fa, se_ma, se_va, se_fa = stats(a)
    mb, vb, fb, se_mb, se_vb, se_fb = stats(b)
    assert abs(ma - mb) <= 5 * math.sqrt(se_ma + se_mb), f"{what}: mean {ma} vs {mb}"
    assert abs(va - vb) <= 5 * math.sqrt(se_va + se_vb), f"{what}: variance {va} vs {vb}"
    assert abs(fa - fb) <= 5 * math.sqrt(se_fa + se_fb), f"{what}: E[w^4] {fa} vs {fb}"


def _flax_cells(name):
    """Flax's own cell with its defaults, as jaxrnn-layout ``(w_ih, w_hh, bias)`` per seed.

    ``w_ih`` ``[G*H, I]`` is the transpose of Flax's ``[I, G*H]`` kernels (one per
    gate for ``LSTMCell``), ``w_hh`` likewise; ``bias`` is Flax's one bias.
    """
    nnx = pytest.importorskip("flax.nnx")
    out = []
    for seed in range(100, 100 + SEEDS):
        rngs = nnx.Rngs(seed)
        if name in ("lstm", "layernorm_lstm"):
            c = nnx.LSTMCell(IP, HP, rngs=rngs)
            w_ih = np.concatenate([np.asarray(d.kernel[...]).T for d in (c.ii, c.if_, c.ig, c.io)])
            w_hh = np.concatenate([np.asarray(d.kernel[...]).T for d in (c.hi, c.hf, c.hg, c.ho)])
            bias = np.concatenate([np.asarray(d.bias[...]) for d in (c.hi, c.hf, c.hg, c.ho)])
            assert all(d.bias is None for d in (c.ii, c.if_, c.ig, c.io))
        elif name == "gru":
            c = nnx.GRUCell(IP, HP, rngs=rngs)
            w_ih, w_hh = np.asarray(c.dense_i.kernel[...]).T, np.asarray(c.dense_h.kernel[...]).T
            bias = np.asarray(c.dense_i.bias[...])
            assert c.dense_h.bias is None
        else:
            c = nnx.SimpleCell(IP, HP, rngs=rngs)
            w_ih, w_hh = np.asarray(c.dense_i.kernel[...]).T, np.asarray(c.dense_h.kernel[...]).T
            bias = np.asarray(c.dense_i.bias[...])
            assert c.dense_h.bias is None
        out.append((w_ih, w_hh, bias))
    return out


def _assert_orthonormal_columns(q, atol=1e-5):
    q = np.asarray(q, np.float64)
    np.testing.assert_allclose(q.T @ q, np.eye(q.shape[1]), atol=atol)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_flax_preset_draws_as_flaxs_own_cells(name):
    gates = GATES[name]
    ours, theirs = _draws(name, "flax"), _flax_cells(name)
    for i, field in enumerate(("w_ih", "w_hh")):
        mine = _blocks([getattr(p, field) for p in ours], gates)
        peer = _blocks([t[i] for t in theirs], gates)
        for g, (a, b) in enumerate(zip(mine, peer, strict=True)):
            _assert_same_law(a, b, f"{field} block {g}")
            if field == "w_ih":  # lecun_normal's truncation at 2σ, fan_in = I
                bound = 2 / math.sqrt(IP) / TRUNCATED_STD * (1 + 1e-6)
                assert np.abs(a).max() <= bound and np.abs(b).max() <= bound
    # Structure, on both sides: nnx.GRUCell's one [H, 3H] recurrent kernel is orthogonal as
    # a whole (w_hh.T @ w_hh = I); the LSTM's and SimpleCell's are orthogonal per gate.
    for w_hh in [p.w_hh for p in ours] + [t[1] for t in theirs]:
        if name == "gru":
            _assert_orthonormal_columns(w_hh)
        else:
            for q in np.split(np.asarray(w_hh), gates):
                _assert_orthonormal_columns(q)
    for p, t in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(t[2], 0.0)  # Flax's one bias: zeros
        for b in _biases(p):
            np.testing.assert_array_equal(b, 0.0)
    if name == "layernorm_lstm":  # the normalisations keep their own init
        np.testing.assert_array_equal(ours[0].gamma_ih, 1.0)
        np.testing.assert_array_equal(ours[0].gamma_hh, 1.0)
        np.testing.assert_array_equal(ours[0].gamma_c, 1.0)
        np.testing.assert_array_equal(ours[0].beta_c, 0.0)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_keras_preset_follows_kerass_documented_initialisers(name):
    """Keras's LSTM, GRU and SimpleRNN defaults, from their documented formulas.

    kernel_initializer="glorot_uniform" over the whole kernel [I, G·H]: U(±limit) with
    limit = sqrt(6 / (fan_in + fan_out)), fan_in = I, fan_out = G·H, so variance
    limit²/3 = 2 / (fan_in + fan_out) and E[(w − μ)⁴] = limit⁴/5.
    recurrent_initializer="orthogonal" over the whole [H, G·H] kernel: orthonormal rows,
    i.e. jaxrnn's transpose w_hh [G·H, H] has w_hh.T @ w_hh = I_H.
    bias_initializer="zeros", and the LSTM's unit_forget_bias=True: forget block 1.
    """
    gates = GATES[name]
    ours = _draws(name, "keras")
    limit = math.sqrt(6 / (IP + gates * HP))
    var, m4 = limit**2 / 3, limit**4 / 5
    for g, a in enumerate(_blocks([p.w_ih for p in ours], gates)):
        assert np.abs(a).max() <= limit, f"block {g}"
        c = a - a.mean()
        assert abs(a.mean()) <= 5 * math.sqrt(var / a.size), f"block {g}: mean"
        assert abs((c**2).mean() - var) <= 5 * math.sqrt((m4 - var**2) / a.size), f"block {g}"
    for p in ours:
        _assert_orthonormal_columns(p.w_hh)  # the whole matrix, not per gate block
        forget = np.zeros(gates * HP)
        if gates == 4:
            forget[HP : 2 * HP] = 1.0
        if name == "layernorm_lstm":
            np.testing.assert_array_equal(p.b, forget)
        else:
            np.testing.assert_array_equal(p.b_ih, forget)  # Keras's one bias is b_ih
            np.testing.assert_array_equal(p.b_hh, 0.0)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_pytorch_preset_is_the_default_bit_for_bit(name):
    """The default draws exactly what jaxrnn drew before ``init`` existed."""
    factory = FACTORIES[name]
    key = jax.random.key(3)
    default = factory(H).init(key, I)
    named = factory(H, init="pytorch").init(key, I)
    for u, v in zip(jax.tree.leaves(default), jax.tree.leaves(named), strict=True):
        np.testing.assert_array_equal(u, v)
    bound = 1 / math.sqrt(H)
    gates = GATES[name]
    if name == "layernorm_lstm":
        k_ih, k_hh = jax.random.split(key)
    else:
        k_ih, k_hh, k_bi, k_bh, *_ = jax.random.split(key, 6 if name in ("lstm", "elman") else 5)
        uniform = jax.random.uniform(k_bi, (gates * H,), jnp.float32, -bound, bound)
        np.testing.assert_array_equal(default.b_ih, uniform)
        uniform = jax.random.uniform(k_bh, (gates * H,), jnp.float32, -bound, bound)
        np.testing.assert_array_equal(default.b_hh, uniform)
    uniform = jax.random.uniform(k_ih, (gates * H, I), jnp.float32, -bound, bound)
    np.testing.assert_array_equal(default.w_ih, uniform)
    uniform = jax.random.uniform(k_hh, (gates * H, H), jnp.float32, -bound, bound)
    np.testing.assert_array_equal(default.w_hh, uniform)


@pytest.mark.torch
@pytest.mark.parametrize("name", ["lstm", "gru", "elman"])
def test_pytorch_preset_draws_as_torchs_own_modules(name):
    torch = pytest.importorskip("torch")
    module = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "elman": torch.nn.RNN}[name]
    theirs = []
    for seed in range(SEEDS):
        torch.manual_seed(seed)
        m = module(IP, HP)
        theirs.append(
            [
                getattr(m, f"{k}_l0").detach().numpy()
                for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
            ]
        )
    ours = _draws(name, "pytorch")
    gates = GATES[name]
    for i, field in enumerate(("w_ih", "w_hh", "b_ih", "b_hh")):
        mine = _blocks([np.reshape(getattr(p, field), (gates * HP, -1)) for p in ours], gates)
        peer = _blocks([np.reshape(t[i], (gates * HP, -1)) for t in theirs], gates)
        for g, (a, b) in enumerate(zip(mine, peer, strict=True)):
            _assert_same_law(a, b, f"{field} block {g}")


@pytest.mark.parametrize("preset", ["pytorch", "flax", "keras"])
@pytest.mark.parametrize("name", list(FACTORIES))
def test_low_precision_params_are_drawn_in_float32_then_cast(name, preset):
    options = {"output_size": 3} if name == "elman" else {}
    options |= {"proj_size": 4} if name == "lstm" else {}
    init = jax.jit(FACTORIES[name](H, init=preset, **options).init, static_argnums=(1, 2))
    low = init(jax.random.key(1), I, jnp.bfloat16)
    wide = init(jax.random.key(1), I, jnp.float32)
    for u, v in zip(jax.tree.leaves(low), jax.tree.leaves(wide), strict=True):
        assert u.dtype == jnp.bfloat16
        np.testing.assert_array_equal(
            np.asarray(u, np.float32), np.asarray(v.astype(jnp.bfloat16), np.float32)
        )


@pytest.mark.parametrize("preset", ["flax", "keras"])
def test_presets_are_deterministic_and_jittable(preset):
    cell = jaxrnn.lstm(H, init=preset, proj_size=4)
    eager = cell.init(jax.random.key(7), I)
    jitted = jax.jit(cell.init, static_argnums=1)(jax.random.key(7), I)
    for u, v in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted), strict=True):
        np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize("name", list(FACTORIES))
@pytest.mark.parametrize("bad", ["tensorflow", "Flax", None, 1, ["flax"]])
def test_an_unknown_preset_is_refused_with_the_allowed_values(name, bad):
    with pytest.raises(
        ValueError, match=r"init: expected one of \['pytorch', 'flax', 'keras'\], got "
    ):
        FACTORIES[name](H, init=bad)


def _same(a, b, skip=()):
    for field, u in a._asdict().items():
        if field not in skip:
            v = getattr(b, field)
            assert (u is None) == (v is None), field
            if u is not None:
                np.testing.assert_array_equal(u, v, err_msg=field)


KEY = jax.random.key(5)


@pytest.mark.parametrize("preset", ["flax", "keras"])
def test_lstm_forget_bias_overrides_only_the_presets_forget_block(preset):
    plain = jaxrnn.lstm(H, init=preset).init(KEY, I)
    for value in (2.0, 0.0):
        params = jaxrnn.lstm(H, init=preset, forget_bias=value).init(KEY, I)
        _same(params, plain, skip=("b_ih",))
        expected = np.zeros(4 * H)
        expected[H : 2 * H] = value
        np.testing.assert_array_equal(params.b_ih, expected)  # keras + 0.0: no unit forget bias
    ln = jaxrnn.layernorm_lstm(H, init=preset, forget_bias=0.5).init(KEY, I)
    _same(ln, jaxrnn.layernorm_lstm(H, init=preset).init(KEY, I), skip=("b",))
    np.testing.assert_array_equal(ln.b, np.repeat([0.0, 0.5, 0.0, 0.0], H))


@pytest.mark.parametrize("preset", ["flax", "keras"])
def test_chrono_overrides_only_the_gates_it_sets(preset):
    plain = jaxrnn.lstm(H, init=preset).init(KEY, I, jnp.float64)
    params = jaxrnn.lstm(H, init=preset, chrono=10).init(KEY, I, jnp.float64)
    _same(params, plain, skip=("b_ih",))
    b_f = params.b_ih[H : 2 * H]
    assert float(b_f.min()) >= 0.0 and float(b_f.max()) <= math.log(9) + 1e-12
    np.testing.assert_array_equal(params.b_ih[:H], -b_f)
    np.testing.assert_array_equal(params.b_ih[2 * H :], 0.0)  # g, o: the preset's zeros
    np.testing.assert_array_equal(params.b_hh, 0.0)
    gru = jaxrnn.gru(H, init=preset, chrono=10).init(KEY, I, jnp.float64)
    _same(gru, jaxrnn.gru(H, init=preset).init(KEY, I, jnp.float64), skip=("b_ih",))
    assert float(gru.b_ih[H : 2 * H].min()) >= 0.0
    np.testing.assert_array_equal(gru.b_ih[:H], 0.0)
    np.testing.assert_array_equal(gru.b_ih[2 * H :], 0.0)


@pytest.mark.parametrize("name", list(FACTORIES))
@pytest.mark.parametrize("preset", ["flax", "keras"])
def test_recurrent_init_overrides_only_w_hh(name, preset):
    factory, gates = FACTORIES[name], GATES[name]
    plain = factory(H, init=preset).init(KEY, I)
    uniform = factory(H, init=preset, recurrent_init="uniform").init(KEY, I)
    _same(uniform, plain, skip=("w_hh",))
    np.testing.assert_array_equal(uniform.w_hh, factory(H).init(KEY, I).w_hh)  # PyTorch's draw
    per_block = factory(H, init=preset, recurrent_init="orthogonal").init(KEY, I, jnp.float64)
    for q in np.split(np.asarray(per_block.w_hh), gates):
        _assert_orthonormal_columns(q, atol=1e-12)
    init = jax.nn.initializers.constant(0.25)
    np.testing.assert_array_equal(
        factory(H, init=preset, recurrent_init=init).init(KEY, I).w_hh, 0.25
    )


@pytest.mark.parametrize("preset", ["flax", "keras"])
def test_elman_bias_init_and_identity_override_the_preset(preset):
    plain = jaxrnn.elman(H, init=preset, output_size=3).init(KEY, I)
    biased = jaxrnn.elman(H, init=preset, output_size=3, bias_init="uniform").init(KEY, I)
    _same(biased, plain, skip=("b_ih", "b_hh", "b_y"))
    pytorch = jaxrnn.elman(H, output_size=3).init(KEY, I)
    _same(biased, pytorch, skip=("w_ih", "w_hh", "w_hy"))  # PyTorch's U(±1/√H) biases
    irnn = jaxrnn.elman(H, init=preset, activation="relu", recurrent_init="identity").init(KEY, I)
    np.testing.assert_array_equal(irnn.w_hh, np.eye(H))
    np.testing.assert_array_equal(irnn.b_ih, 0.0)
    np.testing.assert_array_equal(irnn.b_hh, 0.0)
    np.testing.assert_array_equal(irnn.w_ih, jaxrnn.elman(H, init=preset).init(KEY, I).w_ih)


@pytest.mark.parametrize("preset", ["flax", "keras"])
def test_dense_weights_outside_the_peers_cell_are_the_presets_dense_layer(preset):
    """An LSTM's projection and an Elman cell's output layer, drawn as nnx.Linear / Dense.

    flax.nnx.Linear: lecun_normal, |w| <= 2/sqrt(fan_in)/0.8796, variance 1/fan_in;
    keras.layers.Dense: glorot_uniform, |w| <= sqrt(6/(fan_in + fan_out)), variance
    2/(fan_in + fan_out). Biases zero.
    """
    p, o = 8, 6
    lstm = _draws("lstm", preset, proj_size=p)
    elman = _draws("elman", preset, output_size=o)
    for weights, fan_out in (([x.w_hr for x in lstm], p), ([x.w_hy for x in elman], o)):
        w = np.concatenate([np.ravel(x) for x in weights])
        if preset == "flax":
            bound, var = 2 / math.sqrt(HP) / TRUNCATED_STD, 1 / HP
        else:
            bound, var = math.sqrt(6 / (HP + fan_out)), 2 / (HP + fan_out)
        assert np.abs(w).max() <= bound * (1 + 1e-6)
        c = w - w.mean()
        m4 = (c**4).mean()  # of the sample: the law's fourth moment differs per preset
        assert abs((c**2).mean() - var) <= 5 * math.sqrt((m4 - var**2) / w.size)
    for x in elman:
        np.testing.assert_array_equal(x.b_y, 0.0)
    for x in lstm:  # the recurrent weights act on the projected h: [4H, P]
        if preset == "keras":
            _assert_orthonormal_columns(x.w_hh)
        else:
            for q in np.split(np.asarray(x.w_hh), 4):
                _assert_orthonormal_columns(q)


@pytest.mark.parametrize("name", ["lstm", "gru", "elman"])
@pytest.mark.parametrize("preset", ["flax", "keras"])
def test_presets_without_biases(name, preset):
    params = FACTORIES[name](H, init=preset, use_bias=False).init(KEY, I)
    assert params.b_ih is None and params.b_hh is None
    _same(params, FACTORIES[name](H, init=preset).init(KEY, I), skip=("b_ih", "b_hh"))


def test_the_preset_reaches_the_flax_modules():
    nnx = pytest.importorskip("flax.nnx")
    import jaxrnn.nnx

    rnn = jaxrnn.nnx.GRU(I, H, init="flax", rngs=nnx.Rngs(0))
    params = jax.tree.leaves(nnx.state(rnn, nnx.Param))
    assert any(leaf.shape == (3 * H, H) for leaf in params)
    w_hh = next(leaf for leaf in params if leaf.shape == (3 * H, H))
    _assert_orthonormal_columns(jnp.reshape(w_hh, (3 * H, H)))

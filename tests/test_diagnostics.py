"""Gradient, Jacobian and Lyapunov diagnostics: exact answers; one pass equals T separate grads."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn
from jaxrnn import diagnostics
from tests.helpers import CELLS, INPUT_SIZE, random_carry

F64 = jnp.float64
T, B = 5, 2


def _linear_elman(w_hh, input_size=2):
    """h_t = W_hh h_{t-1} + W_ih x_t: a linear cell with the given recurrent matrix."""
    cell = jaxrnn.elman(w_hh.shape[0], activation="identity", use_bias=False)
    params = cell.init(jax.random.key(0), input_size, F64)._replace(w_hh=w_hh)
    return cell, params


def _orthogonal(n, seed=0):
    q, _ = jnp.linalg.qr(jax.random.normal(jax.random.key(seed), (n, n), F64))
    return q


# ---------------------------------------------------------------- exact answers on linear cells


@pytest.mark.parametrize("time_major", [True, False])
def test_linear_elman_carry_grad_norms_are_powers_of_a(time_major):
    a, H, steps = 0.7, 4, 6
    cell, params = _linear_elman(a * jnp.eye(H, dtype=F64))
    xs = jax.random.normal(jax.random.key(1), (steps, B, 2), F64)
    if not time_major:
        xs = jnp.swapaxes(xs, 0, 1)

    def loss(ys):  # sum(h_T): the last output of every sequence
        return (ys[-1] if time_major else ys[:, -1]).sum()

    norms = diagnostics.carry_grad_norms(cell, params, xs, loss, time_major=time_major)
    assert norms.shape == ((steps, B) if time_major else (B, steps))
    by_step = norms if time_major else norms.T
    # Index t is the carry after step t, at lag steps-1-t from the loss: the final carry
    # (t = steps-1) has gradient ones(H), of norm √H; the initial carry has no entry.
    lag = np.arange(steps - 1, -1, -1)
    expected = np.broadcast_to((a**lag * np.sqrt(H))[:, None], (steps, B))
    np.testing.assert_allclose(by_step, expected, rtol=1e-13)
    np.testing.assert_allclose(by_step[-1], np.sqrt(H), rtol=1e-15)
    # The fitted decay rate per step of lag is a, hence "vanishing".
    fit = diagnostics.classify_decay(by_step[::-1, 0])
    assert fit.label == "vanishing" and fit.rate == pytest.approx(a, rel=1e-12)


def test_linear_elman_jacobians_are_powers_of_a():
    a, H = 1.3, 3
    cell, params = _linear_elman(a * _orthogonal(H))
    xs = jax.random.normal(jax.random.key(1), (T, B, 2), F64)
    out = diagnostics.jacobian_norms(cell, params, xs)
    lag = np.arange(T - 1, -1, -1)
    np.testing.assert_allclose(out.to_final, np.broadcast_to((a**lag)[:, None], (T, B)), rtol=1e-12)
    np.testing.assert_allclose(out.step_singular_values, np.full((T, B, H), a), rtol=1e-12)


def test_tanh_elman_jacobian_norms_obey_the_pascanu_bound():
    s, H = 0.9, 4
    cell = jaxrnn.elman(H)
    params = cell.init(jax.random.key(0), 2, F64)._replace(w_hh=s * _orthogonal(H))
    xs = 2.0 * jax.random.normal(jax.random.key(1), (T, B, 2), F64)
    out = diagnostics.jacobian_norms(cell, params, xs)
    lam = diagnostics.spectral_norm(params.w_hh)
    assert lam == pytest.approx(s, rel=1e-12)
    bound = diagnostics.pascanu_bound(lam, diagnostics.gamma_of("tanh"), jnp.arange(T)[::-1])
    tight = 1 + 1e-12
    assert (out.to_final <= bound[:, None] * tight).all()
    assert (out.step_singular_values <= s * tight).all()
    assert out.to_final[-1].tolist() == pytest.approx([1.0] * B)
    assert (out.to_final[:-1] < bound[:-1, None]).all()  # saturation makes it strict


def test_lyapunov_spectrum_of_a_symmetric_linear_cell_is_log_abs_eigenvalues():
    eigs = jnp.array([0.95, -0.8, 0.5, 0.3, -0.1], F64)
    q = _orthogonal(5, seed=3)
    cell, params = _linear_elman(q @ jnp.diag(eigs) @ q.T)
    xs = jax.random.normal(jax.random.key(1), (300, B, 2), F64)
    lyap = diagnostics.lyapunov_exponents(cell, params, xs, k=3, burn_in=150)
    expected = np.sort(np.log(np.abs(np.asarray(eigs))))[::-1][:3]
    np.testing.assert_allclose(lyap, np.broadcast_to(expected, (B, 3)), atol=1e-9)


def test_lstm_proj_jacobians_match_jacfwd_and_the_lyapunov_sum_rule():
    # The state is [h; c], D = P + H. Checked against jax.jacfwd of the unrolled steps, and
    # with the QR rule sum_i log|R_ii| = log|det(J_t Q)| = log|det J_t| for the full spectrum.
    cell = jaxrnn.lstm(3, proj_size=2)
    params = cell.init(jax.random.key(0), INPUT_SIZE, F64)
    xs = jax.random.normal(jax.random.key(1), (T, INPUT_SIZE), F64)  # no batch axis
    carry = random_carry(cell, jax.random.key(2), (), F64)
    out = diagnostics.jacobian_norms(cell, params, xs, carry=carry)
    assert out.to_final.shape == (T,) and out.step_singular_values.shape == (T, 5)

    unflat = lambda s: jaxrnn.LSTMCarry(s[:2], s[2:])  # noqa: E731
    flat = lambda c: jnp.concatenate([c.h, c.c])  # noqa: E731

    @jax.jit
    def reference(state):
        def run(state, start):
            c = unflat(state)
            for t in range(start, T):
                c, _ = cell.step(params, c, xs[t])
            return flat(c)

        j0 = jax.jacfwd(lambda s: flat(cell.step(params, unflat(s), xs[0])[0]))(state)
        after0 = flat(cell.step(params, unflat(state), xs[0])[0])
        return jnp.linalg.svd(j0)[1], jnp.linalg.norm(jax.jacfwd(run)(after0, 1), 2)

    singular0, to_final0 = reference(flat(carry))
    np.testing.assert_allclose(out.step_singular_values[0], singular0, rtol=1e-10)
    np.testing.assert_allclose(out.to_final[0], to_final0, rtol=1e-10)
    np.testing.assert_allclose(out.to_final[-1], 1.0, rtol=1e-12)

    lyap = diagnostics.lyapunov_exponents(cell, params, xs, carry=carry)
    assert lyap.shape == (5,) and (jnp.diff(lyap) <= 0).all()
    np.testing.assert_allclose(
        lyap.sum(), jnp.log(out.step_singular_values).sum(-1).mean(), rtol=1e-10
    )


# ---------------------------------------------------------------- one pass = T separate grads


def _user_cell(hidden=3):
    """A user's Cell without spec: a tuple carry (h, m) and y = 2 h."""

    def init(key, input_size, dtype=jnp.float32):
        k1, k2 = jax.random.split(key)
        return (
            0.5 * jax.random.normal(k1, (hidden, hidden), dtype),
            jax.random.normal(k2, (hidden, input_size), dtype),
        )

    def initial_carry(batch_shape=(), dtype=jnp.float32):
        return (jnp.zeros((*batch_shape, hidden), dtype), jnp.zeros((*batch_shape, hidden), dtype))

    def step(params, carry, x):
        w, u = params
        h, m = carry
        h = jnp.tanh(h @ w.T + x @ u.T + 0.5 * m)
        m = 0.9 * m + 0.1 * h
        return (h, m), 2.0 * h

    return jaxrnn.Cell(init, initial_carry, step)


def _builtin_readout(name, params):
    """y_t as a function of the carry after step t, written out per cell."""
    if name.startswith("lstm"):
        return lambda c: c.h
    if name == "elman_output_layer":
        return lambda c: jax.nn.sigmoid(c @ params.w_hy.T + params.b_y[None, :])
    return lambda c: c


def _separate_grads(cell, params, xs, carry, loss_fn, readout, lengths):
    """‖∂L/∂carry_t‖ by one jax.grad per t: the run restarted from carry_t as an argument."""
    steps, batch = xs.shape[0], xs.shape[1]
    lengths = np.full(batch, steps) if lengths is None else np.asarray(lengths)

    def advance(c, t):
        valid = jnp.asarray(t < lengths)[:, None]
        new, y = cell.step(params, c, xs[t])
        c = jax.tree.map(lambda n, o: jnp.where(valid, n, o), new, c)
        return c, jnp.where(valid, y, 0.0)

    carries, ys = [], []
    c = carry
    for t in range(steps):
        c, y = advance(c, t)
        carries.append(c)
        ys.append(y)
    norms = []
    for t in range(steps):

        def loss_from(c_t, t=t):
            out = list(ys[:t])
            valid = jnp.asarray(t < lengths)[:, None]
            out.append(ys[t] if readout is None else jnp.where(valid, readout(c_t), 0.0))
            c = c_t
            for s in range(t + 1, steps):
                c, y = advance(c, s)
                out.append(y)
            return loss_fn(jnp.stack(out))

        g = jax.grad(loss_from)(carries[t])
        norms.append(jax.tree.map(lambda a: jnp.linalg.norm(a, axis=-1), g))
    return jax.tree.map(lambda *a: jnp.stack(a), *norms)


def _loss(key, shape):
    weights = jax.random.normal(key, shape, F64)
    return lambda ys: jnp.sum(weights * jnp.tanh(ys)) + 0.5 * jnp.sum(ys[-1] ** 2)


# A representative subset of tests/helpers.CELLS: every built-in readout and carry structure.
SUBSET = ["elman_tanh", "elman_output_layer", "lstm", "lstm_proj", "gru"]
CASES = [case for case in CELLS if case.name in SUBSET]


@pytest.mark.parametrize("case", CASES, ids=SUBSET)
def test_one_pass_equals_separate_grads_with_padding(case):
    cell = case.make()
    params = cell.init(jax.random.key(0), INPUT_SIZE, F64)
    xs = jax.random.normal(jax.random.key(1), (T, B, INPUT_SIZE), F64)
    carry = random_carry(cell, jax.random.key(2), (B,), F64)
    lengths = jnp.array([T, 2])
    out_size = jax.eval_shape(cell.step, params, carry, xs[0])[1].shape[-1]
    loss = _loss(jax.random.key(3), (T, B, out_size))
    got = diagnostics.carry_grad_norms(cell, params, xs, loss, carry=carry, lengths=lengths)
    readout = _builtin_readout(case.name, params)
    want = jax.jit(lambda: _separate_grads(cell, params, xs, carry, loss, readout, lengths))()
    assert jax.tree.structure(got) == jax.tree.structure(carry)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert g.shape == (T, B)
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12)
        assert (g[2:, 1] == 0).all()  # padded steps: exactly zero
        assert (g[0] > 0).all()


@pytest.mark.parametrize("with_readout", [False, True], ids=["no_readout", "readout"])
def test_user_cell_one_pass_equals_separate_grads(with_readout):
    cell = _user_cell()
    params = cell.init(jax.random.key(0), INPUT_SIZE, F64)
    xs = jax.random.normal(jax.random.key(1), (T, B, INPUT_SIZE), F64)
    carry = random_carry(cell, jax.random.key(2), (B,), F64)
    loss = _loss(jax.random.key(3), (T, B, 3))
    readout = (lambda p, c: 2.0 * c[0]) if with_readout else None
    got = diagnostics.carry_grad_norms(cell, params, xs, loss, carry=carry, readout=readout)
    ref_readout = (lambda c: 2.0 * c[0]) if with_readout else None
    want = jax.jit(lambda: _separate_grads(cell, params, xs, carry, loss, ref_readout, None))()
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12)
    # Without a readout y_{T-1} does not depend on the final carry: nothing reaches it.
    assert (got[0][-1] > 0).all() if with_readout else (got[0][-1] == 0).all()


# ---------------------------------------------------------------- theory helpers


def test_theory_helpers_exact_values():
    w = jnp.array([[0.0, 3.0], [-0.5, 0.0]], F64)
    assert diagnostics.spectral_norm(w) == pytest.approx(3.0, rel=1e-14)
    sym = jnp.array([[2.0, 1.0], [1.0, 2.0]], F64)  # eigenvalues 1, 3
    assert diagnostics.spectral_radius(sym) == pytest.approx(3.0, rel=1e-12)
    assert diagnostics.spectral_radius(jnp.array([[0.5, 100.0], [0.0, -0.6]], F64)) == (
        pytest.approx(0.6, rel=1e-12)
    )
    assert [diagnostics.gamma_of(a) for a in ("tanh", "sigmoid", "relu", "identity")] == [
        1.0,
        0.25,
        1.0,
        1.0,
    ]
    assert diagnostics.gamma_of(jax.nn.sigmoid) == 0.25
    np.testing.assert_allclose(
        diagnostics.pascanu_bound(3.0, 0.25, jnp.arange(4)), 0.75 ** np.arange(4), rtol=1e-15
    )


def test_classify_decay_labels_and_rates():
    lags = np.arange(30)
    fit = diagnostics.classify_decay(2.0 * 0.9**lags)
    assert fit.label == "vanishing" and fit.rate == pytest.approx(0.9, rel=1e-12)
    assert fit.log_rate == pytest.approx(np.log(0.9), rel=1e-12)
    fit = diagnostics.classify_decay(1e-3 * 1.2**lags)
    assert fit.label == "exploding" and fit.rate == pytest.approx(1.2, rel=1e-12)
    assert diagnostics.classify_decay(np.full(30, 0.3)).label == "stable"
    # Within the tolerance: e^{±0.005} per step is stable; explicit uneven lags.
    assert diagnostics.classify_decay(np.exp(-0.005 * lags)).label == "stable"
    uneven = np.array([0, 1, 4, 9])
    fit = diagnostics.classify_decay(0.5**uneven, lags=uneven)
    assert fit.rate == pytest.approx(0.5, rel=1e-12)


# ---------------------------------------------------------------- errors


def test_bad_inputs_raise_early_and_name_the_argument():
    cell = jaxrnn.gru(3)
    params = cell.init(jax.random.key(0), 2, F64)
    xs = jnp.ones((T, B, 2), F64)
    with pytest.raises(ValueError, match=r"loss_fn: expected a scalar loss, got shape \(5, 2, 3\)"):
        diagnostics.carry_grad_norms(cell, params, xs, lambda ys: ys)
    with pytest.raises(ValueError, match=r"readout: expected an output of shape \(2, 3\)"):
        diagnostics.carry_grad_norms(cell, params, xs, jnp.sum, readout=lambda p, c: c[..., :1])
    with pytest.raises(ValueError, match=r"k: expected an integer in \[1, D=3\].*got 4"):
        diagnostics.lyapunov_exponents(cell, params, xs, k=4)
    with pytest.raises(ValueError, match=r"k: .*got 0"):
        diagnostics.lyapunov_exponents(cell, params, xs, k=0)
    with pytest.raises(ValueError, match=r"burn_in: expected an integer in \[0, T=5\)"):
        diagnostics.lyapunov_exponents(cell, params, xs, burn_in=5)
    with pytest.raises(TypeError, match=r"cell: expected a jaxrnn\.Cell"):
        diagnostics.jacobian_norms(jaxrnn.stack(jaxrnn.gru(3), num_layers=2), params, xs)
    with pytest.raises(ValueError, match="xs: expected at least one time step"):
        diagnostics.jacobian_norms(cell, params, jnp.ones((0, B, 2), F64))
    with pytest.raises(ValueError, match=r"lengths: expected values in \[0, T=5\]"):
        diagnostics.carry_grad_norms(cell, params, xs, jnp.sum, lengths=jnp.array([6, 1]))
    with pytest.raises(ValueError, match="w: expected a square matrix"):
        diagnostics.spectral_radius(jnp.ones((2, 3)))
    with pytest.raises(ValueError, match="activation: expected one of"):
        diagnostics.gamma_of(jnp.sin)
    with pytest.raises(ValueError, match="norms_by_lag: expected positive finite norms"):
        diagnostics.classify_decay([1.0, 0.5, 0.0])
    with pytest.raises(ValueError, match="norms_by_lag: expected a 1-D array of at least 2"):
        diagnostics.classify_decay([1.0])
    with pytest.raises(ValueError, match=r"lags: expected shape \(3,\)"):
        diagnostics.classify_decay([1.0, 0.5, 0.25], lags=[0, 1])


# ---------------------------------------------------------------- plots


def test_plots_return_figures_and_save_png(tmp_path):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    from jaxrnn import plots

    lags = np.arange(10)
    curves = {"a": 0.9**lags, "b": 0.5**lags, "c": np.where(lags < 5, 1.1**lags, 0.0)}
    fig = plots.gradient_decay(curves, title="decay")
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    assert [line.get_label() for line in fig.axes[0].lines] == ["a", "b", "c"]
    assert fig.axes[0].get_yscale() == "log"
    fig.savefig(tmp_path / "decay.png")
    assert (tmp_path / "decay.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    fig = plots.gradient_heatmap(np.outer(np.linspace(1, 2, 4), 0.8**lags))
    assert isinstance(fig, Figure) and len(fig.axes) == 2  # heatmap + colour bar
    fig.savefig(tmp_path / "heatmap.png")
    assert (tmp_path / "heatmap.png").stat().st_size > 0

    fig = plots.decay_vs_bound(0.5 * 0.8**lags, 0.9**lags)
    assert len(fig.axes) == 1 and len(fig.axes[0].lines) == 2
    with pytest.raises(ValueError, match=r"bound: expected shape \(10,\)"):
        plots.decay_vs_bound(0.8**lags, 0.9 ** lags[:5])
    with pytest.raises(ValueError, match="curves: expected a non-empty dict"):
        plots.gradient_decay({})
    with pytest.raises(ValueError, match=r"norms: expected a non-empty array \[steps, T\]"):
        plots.gradient_heatmap(lags)

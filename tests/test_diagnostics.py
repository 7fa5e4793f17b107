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


# ---------------------------------------------------------------- compiled once


def _counting(cell):
    """``cell`` with its step wrapped to count traces (a Python side effect runs only then)."""
    traces = [0]

    def step(params, carry, x):
        traces[0] += 1
        return cell.step(params, carry, x)

    return cell._replace(step=step), traces


@pytest.mark.parametrize("function", ["carry_grad_norms", "jacobian_norms", "lyapunov_exponents"])
def test_repeated_eager_calls_trace_the_step_once(function):
    cell, traces = _counting(jaxrnn.lstm(3))
    params = cell.init(jax.random.key(0), INPUT_SIZE, F64)
    xs = jax.random.normal(jax.random.key(1), (T, B, INPUT_SIZE), F64)
    loss = _loss(jax.random.key(3), (T, B, 3))
    lengths = jnp.array([T, 2])
    run = {
        "carry_grad_norms": lambda: diagnostics.carry_grad_norms(
            cell, params, xs, loss, lengths=lengths, readout=_read_h
        ),
        "jacobian_norms": lambda: diagnostics.jacobian_norms(cell, params, xs),
        "lyapunov_exponents": lambda: diagnostics.lyapunov_exponents(cell, params, xs, k=2),
    }[function]
    first = run()
    after_first = traces[0]
    assert after_first > 0
    for _ in range(2):
        again = run()
        for a, b in zip(jax.tree.leaves(again), jax.tree.leaves(first), strict=True):
            np.testing.assert_array_equal(a, b)
    assert traces[0] == after_first


def _read_h(params, carry):
    return carry.h


# ---------------------------------------------------------------- options, padding, edges


def _truncated_norms(a, hidden, steps, k, lengths, last_only):
    """‖∂L/∂h_t‖ of BPTT(k) for h_t = a h_{t-1} + W_ih x_t, y_t = h_t, in closed form.

    The gradient through the carry is cut before every step t with t % k == 0 (t > 0), so
    h_t reaches the outputs y_s of its own chunk only, s = t, …, e (e the chunk's last
    valid step): ∂L/∂h_t = Σ_s a^{s-t} ∂L/∂y_s. ``last_only``: L = Σ y_{T-1}, else Σ_s Σ y_s.
    """
    out = np.zeros((steps, len(lengths)))
    for b, length in enumerate(lengths):
        for t in range(length):
            end = min((t // k + 1) * k, length) - 1
            targets = [steps - 1] if last_only else range(t, end + 1)
            out[t, b] = sum(a ** (s - t) for s in targets if t <= s <= end) * np.sqrt(hidden)
    return out


@pytest.mark.parametrize("last_only", [True, False], ids=["loss_at_last_step", "loss_at_all"])
def test_truncate_gives_the_norms_truncated_bptt_sees(last_only):
    a, H, steps, k = 0.7, 4, 10, 4
    cell, params = _linear_elman(a * jnp.eye(H, dtype=F64))
    xs = jax.random.normal(jax.random.key(1), (steps, 3, 2), F64)
    lengths = [steps, 7, 3]

    def loss(ys):
        return ys[-1].sum() if last_only else ys.sum()

    got = diagnostics.carry_grad_norms(
        cell, params, xs, loss, lengths=jnp.array(lengths), truncate=k
    )
    want = _truncated_norms(a, H, steps, k, lengths, last_only)
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=0)
    assert (got[:8, 0] == 0).all() if last_only else (got[3, :2] == np.sqrt(H)).all()
    # truncate >= T is full BPTT; the record and the keyword are the same option.
    full = diagnostics.carry_grad_norms(cell, params, xs, loss, lengths=jnp.array(lengths))
    whole = jaxrnn.ScanOptions(truncate=steps)
    np.testing.assert_array_equal(
        diagnostics.carry_grad_norms(
            cell, params, xs, loss, lengths=jnp.array(lengths), options=whole
        ),
        full,
    )


def test_checkpoint_and_unroll_give_the_same_norms_and_are_honoured():
    cell = jaxrnn.lstm(3)
    params = cell.init(jax.random.key(0), INPUT_SIZE, F64)
    steps = 7
    xs = jax.random.normal(jax.random.key(1), (B, steps, INPUT_SIZE), F64)
    loss = _loss(jax.random.key(3), (B, steps, 3))
    kw = dict(lengths=jnp.array([steps, 4]), time_major=False)
    plain = diagnostics.carry_grad_norms(cell, params, xs, loss, **kw)
    for options in (
        jaxrnn.ScanOptions(checkpoint=3),  # 3 does not divide 7: a shorter last chunk
        jaxrnn.ScanOptions(checkpoint=3, unroll=2, backward="autodiff"),
    ):
        got = diagnostics.carry_grad_norms(cell, params, xs, loss, options=options, **kw)
        for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(plain), strict=True):
            np.testing.assert_allclose(g, w, rtol=1e-13, atol=1e-15)
    program = str(
        jax.make_jaxpr(
            lambda p: diagnostics.carry_grad_norms(cell, p, xs, loss, checkpoint=3, unroll=2, **kw)
        )(params)
    )
    assert "remat" in program and "unroll=2" in program
    assert "remat" not in str(
        jax.make_jaxpr(lambda p: diagnostics.carry_grad_norms(cell, p, xs, loss, **kw))(params)
    )


def test_nan_in_padding_reaches_no_norm():
    cell = jaxrnn.lstm(3)
    params = cell.init(jax.random.key(0), INPUT_SIZE, F64)
    xs = jax.random.normal(jax.random.key(1), (T, B, INPUT_SIZE), F64)
    lengths = jnp.array([T, 2])
    loss = _loss(jax.random.key(3), (T, B, 3))
    clean = diagnostics.carry_grad_norms(cell, params, xs.at[2:, 1].set(0.0), loss, lengths=lengths)
    dirty = diagnostics.carry_grad_norms(
        cell, params, xs.at[2:, 1].set(jnp.nan).at[3, 1, 0].set(jnp.inf), loss, lengths=lengths
    )
    for d, c in zip(jax.tree.leaves(dirty), jax.tree.leaves(clean), strict=True):
        assert np.isfinite(d).all()
        np.testing.assert_array_equal(d, c)
        assert (d[2:, 1] == 0).all() and (d[0] > 0).all()


def test_lengths_outside_the_range_act_as_the_nearest_end_under_jit():
    cell = jaxrnn.gru(3)
    params = cell.init(jax.random.key(0), INPUT_SIZE, F64)
    xs = jax.random.normal(jax.random.key(1), (T, B, INPUT_SIZE), F64)
    loss = _loss(jax.random.key(3), (T, B, 3))
    norms = jax.jit(lambda n: diagnostics.carry_grad_norms(cell, params, xs, loss, lengths=n))
    np.testing.assert_array_equal(
        norms(jnp.array([T + 3, -2])),
        diagnostics.carry_grad_norms(cell, params, xs, loss, lengths=jnp.array([T, 0])),
    )


def test_a_replaced_step_is_honoured_like_a_user_cell():
    builtin = jaxrnn.lstm(3)
    params = builtin.init(jax.random.key(0), INPUT_SIZE, F64)

    def noisy_step(params, carry, x):  # another input transform: 2 x instead of x
        return builtin.step(params, carry, 2.0 * x)

    replaced = builtin._replace(step=noisy_step)
    user = jaxrnn.Cell(builtin.init, builtin.initial_carry, noisy_step)
    xs = jax.random.normal(jax.random.key(1), (T, B, INPUT_SIZE), F64)
    loss = _loss(jax.random.key(3), (T, B, 3))
    got = {}
    for readout in (None, _read_h):
        got[readout] = diagnostics.carry_grad_norms(replaced, params, xs, loss, readout=readout)
        want = diagnostics.carry_grad_norms(user, params, xs, loss, readout=readout)
        for g, w in zip(jax.tree.leaves(got[readout]), jax.tree.leaves(want), strict=True):
            np.testing.assert_array_equal(g, w)
    # Not the built-in cell's numbers: its spec describes another step.
    assert not np.allclose(
        got[_read_h].h, diagnostics.carry_grad_norms(builtin, params, xs, loss).h
    )
    # Without a readout, nothing reaches the final carry (y_{T-1} is the step's own output).
    assert (got[None].h[-1] == 0).all() and (got[_read_h].h[-1] > 0).all()
    np.testing.assert_array_equal(
        diagnostics.jacobian_norms(replaced, params, xs).to_final,
        diagnostics.jacobian_norms(user, params, xs).to_final,
    )


def test_options_that_do_not_apply_raise_and_name_the_field():
    cell = jaxrnn.gru(3)
    params = cell.init(jax.random.key(0), 2, F64)
    xs = jnp.ones((T, B, 2), F64)
    with pytest.raises(ValueError, match=r"method: carry_grad_norms follows the cell's step one"):
        diagnostics.carry_grad_norms(cell, params, xs, jnp.sum, method="deer")
    parallel = jaxrnn.ScanOptions(method="associative")
    with pytest.raises(ValueError, match=r"method: jacobian_norms .*got method='associative'"):
        diagnostics.jacobian_norms(cell, params, xs, options=parallel)
    with pytest.raises(ValueError, match=r"truncate: not an option of jacobian_norms.*truncate=2"):
        diagnostics.jacobian_norms(cell, params, xs, truncate=2)
    with pytest.raises(ValueError, match=r"checkpoint: not an option of lyapunov_exponents"):
        diagnostics.lyapunov_exponents(cell, params, xs, options=jaxrnn.ScanOptions(checkpoint=2))
    with pytest.raises(TypeError, match=r"reverse: not an option of jaxrnn.scan"):
        diagnostics.carry_grad_norms(cell, params, xs, jnp.sum, reverse=True)
    with pytest.raises(ValueError, match=r"unroll: expected a positive integer"):
        diagnostics.lyapunov_exponents(cell, params, xs, unroll=0)
    # One record for every layer: backward is accepted and changes nothing, unroll is honoured.
    record = jaxrnn.ScanOptions(unroll=2, backward="autodiff")
    np.testing.assert_allclose(
        diagnostics.lyapunov_exponents(cell, params, xs, options=record),
        diagnostics.lyapunov_exponents(cell, params, xs),
        rtol=1e-13,
    )
    np.testing.assert_allclose(
        diagnostics.jacobian_norms(cell, params, xs, options=record).to_final,
        diagnostics.jacobian_norms(cell, params, xs).to_final,
        rtol=1e-13,
    )


@pytest.mark.parametrize("function", ["carry_grad_norms", "jacobian_norms", "lyapunov_exponents"])
@pytest.mark.parametrize("time_major", [True, False])
def test_zero_steps_raise_naming_xs(function, time_major):
    cell = jaxrnn.gru(3)
    params = cell.init(jax.random.key(0), 2, F64)
    xs = jnp.ones((0, B, 2) if time_major else (B, 0, 2), F64)
    args = (jnp.sum,) if function == "carry_grad_norms" else ()
    with pytest.raises(ValueError, match=r"xs: expected at least one time step \(T >= 1"):
        getattr(diagnostics, function)(cell, params, xs, *args, time_major=time_major)


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

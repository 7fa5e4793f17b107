"""Parallel-in-time methods against the sequential scan; linear cells against their equations."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn
from jaxrnn import _parallel
from jaxrnn._checks import METHODS
from jaxrnn._sequential import sequential_scan
from jaxrnn._time_axis import TimeAxis
from tests.helpers import random_carry, vjp_all

T, B, I = 8, 3, 2
LENGTHS = (8, 4, 0)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _setup(cell, dtype=jnp.float64, batch=(B,)):
    k_params, k_carry, k_x = jax.random.split(jax.random.key(0), 3)
    params = cell.init(k_params, I, dtype)
    carry = random_carry(cell, k_carry, batch, dtype)
    xs = jax.random.normal(k_x, (T, *batch, I), dtype)
    return params, carry, xs


def _max_error(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    return max(
        (
            float(jnp.abs(u - v).max())
            for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
        ),
        default=0.0,
    )


_NONLINEAR = {
    "elman": lambda: jaxrnn.elman(3),
    "gru": lambda: jaxrnn.gru(3),
    "lstm": lambda: jaxrnn.lstm(2),
}
_LINEAR = {
    "mingru": lambda: jaxrnn.mingru(3),
    "minlstm": lambda: jaxrnn.minlstm(3),
    "lru": lambda: jaxrnn.lru(2, r_min=0.5, r_max=0.99),
}
# One method per cell, in turn (tests/test_paths.py runs every method with every cell
# against the loop of its step); one direction per cell, so each method runs both ways.
_REVERSE = {
    "elman": False,
    "gru": True,
    "lstm": False,
    "mingru": False,
    "minlstm": True,
    "lru": True,
}
_METHOD = {
    "elman": "deer",
    "gru": "quasi-deer",
    "lstm": "quasi-deer",
    "mingru": "associative",
    "minlstm": "deer",
    "lru": "associative",
}
CASES = [(name, _METHOD[name], _REVERSE[name]) for name in (*_NONLINEAR, *_LINEAR)]
_SEQUENTIAL_CACHE: dict = {}
_SEQUENTIAL_COTANGENTS: dict = {}


def _sequential(name, reverse):
    """The sequential scan's outputs and VJP with ``vjp_all``'s random cotangent, once per cell."""
    if (name, reverse) not in _SEQUENTIAL_CACHE:
        cell = {**_NONLINEAR, **_LINEAR}[name]()
        params, carry, xs = _setup(cell)

        def run(p, x, c):
            return jaxrnn.scan(cell, p, x, carry=c, lengths=jnp.array(LENGTHS), reverse=reverse)

        out, vjp = jax.vjp(run, params, xs, carry)
        leaves, treedef = jax.tree.flatten(out)
        keys = jax.random.split(jax.random.key(9), len(leaves))
        cotangent = jax.tree.unflatten(
            treedef,
            [jax.random.normal(k, a.shape, a.dtype) for k, a in zip(keys, leaves, strict=True)],
        )
        _SEQUENTIAL_COTANGENTS[name] = cotangent
        _SEQUENTIAL_CACHE[name, reverse] = out, vjp(cotangent)
    return _SEQUENTIAL_CACHE[name, reverse]


@pytest.mark.parametrize(
    ("name", "method", "reverse"),
    CASES,
    ids=[f"{n}-{m}-{'rev' if r else 'fwd'}" for n, m, r in CASES],
)
def test_every_method_equals_the_sequential_scan_with_lengths(name, method, reverse):
    cell = {**_NONLINEAR, **_LINEAR}[name]()
    params, carry, xs = _setup(cell)

    def run(p, x, c):
        return jaxrnn.scan(
            cell, p, x, carry=c, lengths=jnp.array(LENGTHS), reverse=reverse, method=method
        )

    (got, got_grads), (want, want_grads) = (
        vjp_all(run, (params, xs, carry)),
        _sequential(name, reverse),
    )
    assert _max_error(got, want) < 1e-8
    assert _max_error(got_grads, want_grads) < 1e-6
    # Padding: exactly zero outputs, and no gradient to the padded inputs.
    ys, dxs = got[1], got_grads[1]
    assert bool((ys[4:, 1] == 0).all()) and bool((ys[:, 2] == 0).all())
    assert bool((dxs[4:, 1] == 0).all()) and bool((dxs[:, 2] == 0).all())
    # The empty sequence keeps its initial carry exactly.
    np.testing.assert_array_equal(jax.tree.leaves(got[0])[0][2], jax.tree.leaves(carry)[0][2])


@pytest.mark.parametrize(("name", "method"), [("gru", "deer"), ("lru", "associative")])
def test_float32_batch_major_is_close_to_float64(name, method):
    """The float64 sequential run, cast to float32 and batch-major, with the same cotangent."""
    cell, reverse = {**_NONLINEAR, **_LINEAR}[name](), _REVERSE[name]
    params, carry, xs = jax.tree.map(lambda a: a.astype(jnp.float32), _setup(cell))
    (want, want_grads), cotangent = _sequential(name, reverse), _SEQUENTIAL_COTANGENTS[name]

    def run(p, x, c):
        return jaxrnn.scan(
            cell,
            p,
            x,
            carry=c,
            lengths=jnp.array(LENGTHS),
            reverse=reverse,
            time_major=False,
            method=method,
        )

    got, vjp = jax.vjp(run, params, jnp.swapaxes(xs, 0, 1), carry)
    cotangent = jax.tree.map(lambda a: a.astype(jnp.float32), cotangent)
    got_grads = vjp((cotangent[0], jnp.swapaxes(cotangent[1], 0, 1)))
    assert got[1].dtype == jnp.float32
    got = (got[0], jnp.swapaxes(got[1], 0, 1))
    got_grads = (got_grads[0], jnp.swapaxes(got_grads[1], 0, 1), got_grads[2])
    assert _max_error(got, want) < 2e-5
    assert _max_error(got_grads, want_grads) < 1e-4


def test_deer_reaches_the_sequential_trajectory_in_at_most_T_iterations():
    """Large recurrent weights and a tolerance below rounding: the iterations run to the cap T,
    where the trajectory is the sequential one exactly (each iteration fixes one more step)."""
    cell = jaxrnn.elman(3, recurrent_init=lambda k, s, d: 4.0 * jax.random.normal(k, s, d))
    params, carry, xs = _setup(cell)
    _, want = jaxrnn.scan(cell, params, xs, carry=carry)
    iterations = {}
    for quasi in (False, True):
        _, ys, info = jaxrnn.deer(cell, params, xs, carry=carry, quasi=quasi, tol=1e-14)
        assert info.iterations.shape == info.residual.shape == info.converged.shape == (B,)
        assert info.iterations.dtype == jnp.int32 and info.converged.dtype == jnp.bool_
        iterations[quasi] = np.asarray(info.iterations)
        assert (iterations[quasi] >= 1).all() and (iterations[quasi] <= T).all()
        assert float(info.residual.max()) < 1e-10 and info.converged.tolist() == [True] * B
        np.testing.assert_allclose(ys, want, atol=1e-10)
    # Newton (exact Jacobians) needs no more iterations than quasi-Newton.
    assert (iterations[False] <= iterations[True]).all()
    # A cap below T is honoured; the info says it did not converge, with a residual to match.
    _, _, info = jaxrnn.deer(cell, params, xs, carry=carry, max_iters=2, throw=False)
    assert info.iterations.tolist() == [2, 2, 2] and info.converged.tolist() == [False] * B
    assert float(info.residual.min()) > 1e-3


_GRU = jaxrnn.gru(3)  # one cell (one step function) for the tests that can share compilations


def test_damped_deer_reaches_the_same_fixed_point():
    """ELK damping in the Newton loop (the diagonal variant's step is tested below)."""
    cell = _GRU
    params, carry, xs = _setup(cell)
    reverse = _REVERSE["gru"]
    _, ys, info = jaxrnn.deer(
        cell, params, xs, carry=carry, lengths=jnp.array(LENGTHS), reverse=reverse, damping=0.01
    )
    # Damping gives up exactness after T iterations; here it still converges within T.
    assert info.converged.tolist() == [True] * B
    assert (info.iterations <= T).all() and float(info.residual.max()) < 1e-9
    assert int(info.iterations[2]) == 1  # the empty sequence is exact at once
    np.testing.assert_allclose(ys, _sequential("gru", reverse)[0][1], atol=1e-8)


@pytest.mark.parametrize("algebra", ["dense", "diagonal"])
def test_a_damped_step_solves_its_least_squares_problem(algebra):
    """ELK: argmin_h Σ|h_t − J_t h_{t−1} − u_t|² + λ Σ_valid |h_t − g_t|², by dense lstsq."""
    steps, dim, damping = 5, 2, 0.7
    rng = np.random.default_rng(0)
    jac = rng.normal(size=(steps, 1, dim, dim)) * 0.8
    if algebra == "diagonal":
        jac = jac * np.eye(dim)
    jac[0] = 0
    u, guess = rng.normal(size=(2, steps, 1, dim))
    valid = np.array([[True], [True], [False], [True], [False]])
    rows, rhs = [], []
    for t in range(steps):  # dynamics rows, then the damping rows of the valid steps
        row = np.zeros((dim, steps * dim))
        row[:, t * dim : (t + 1) * dim] = np.eye(dim)
        if t:
            row[:, (t - 1) * dim : t * dim] = -jac[t, 0]
        rows.append(row)
        rhs.append(u[t, 0])
    for t in np.flatnonzero(valid[:, 0]):
        row = np.zeros((dim, steps * dim))
        row[:, t * dim : (t + 1) * dim] = math.sqrt(damping) * np.eye(dim)
        rows.append(row)
        rhs.append(math.sqrt(damping) * guess[t, 0])
    want = np.linalg.lstsq(np.concatenate(rows), np.concatenate(rhs), rcond=None)[0]
    alg = _parallel._DENSE if algebra == "dense" else _parallel._DIAGONAL
    jac_arg = jac if algebra == "dense" else np.diagonal(jac, axis1=-2, axis2=-1)
    elk_step = jax.jit(_parallel._elk_step, static_argnums=(0, 1, 5))
    got = elk_step(
        alg, TimeAxis(), *map(jnp.asarray, (jac_arg, u, guess)), damping, jnp.asarray(valid)
    )
    np.testing.assert_allclose(got[:, 0].reshape(-1), want, atol=1e-12)


# --- convergence, judged sequence by sequence -----------------------------------------------------


def _diverging_elman():
    """An Elman cell without a squashing activation and with large recurrent weights: its
    float32 trajectory overflows to Inf (then NaN) within a few steps."""
    cell = jaxrnn.elman(4, activation="identity")
    params = cell.init(jax.random.key(0), I, jnp.float32)
    params = params._replace(w_hh=1000.0 * params.w_hh)
    xs = jax.random.normal(jax.random.key(1), (20, B, I), jnp.float32)
    return cell, params, xs


def test_a_diverging_cell_raises_by_default_and_never_reads_as_converged():
    cell, params, xs = _diverging_elman()
    assert not bool(jnp.isfinite(jaxrnn.scan(cell, params, xs)[1]).all())
    with pytest.raises(RuntimeError, match=r"^DEER did not converge: 3 of 3 sequences") as raised:
        jaxrnn.deer(cell, params, xs)
    message = str(raised.value)
    for text in (
        "(the first at batch index 0)",
        "tol=1e-05",
        "max_iters=20 iterations (T=20)",
        "3 of them have a NaN or Inf residual",
        "damping > 0",
        "a larger max_iters",
        "method='sequential'",
        "throw=False",
    ):
        assert text in message
    # Under jit: a runtime error with the same text, when the computation runs.
    run = jax.jit(lambda p, x: jaxrnn.scan(cell, p, x, method="deer")[1])
    expected = r"DEER did not converge: 3 of 3 sequences .* NaN or Inf"
    with pytest.raises(RuntimeError, match=expected):
        jax.block_until_ready(run(params, xs))
    # throw=False: no error; the info says not converged, with a NaN residual (never 0).
    _, _, info = jaxrnn.deer(cell, params, xs, throw=False)
    assert info.converged.tolist() == [False] * B and info.iterations.tolist() == [20] * B
    assert bool(jnp.isnan(info.residual).all())
    _, ys = jaxrnn.scan(
        cell, params, xs, method="deer", method_options=jaxrnn.DEEROptions(throw=False)
    )
    assert ys.shape == (20, B, 4)


@pytest.mark.parametrize(
    ("quasi", "damping"), [(False, 0.0), (True, 0.0), (False, 0.01)], ids=["deer", "quasi", "elk"]
)
def test_a_nan_in_one_sequence_leaves_the_others_right(quasi, damping):
    """The batch's Newton systems are independent: sequence 1 never converges, 0 and 2 do."""
    cell, reverse, lengths = _GRU, _REVERSE["gru"], jnp.array(LENGTHS)
    params, carry, xs = _setup(cell)
    xs = xs.at[2, 1, 0].set(jnp.nan)  # a valid step of sequence 1 (length 4)
    _, want = jaxrnn.scan(cell, params, xs, carry=carry, lengths=lengths, reverse=reverse)
    kwargs = {"carry": carry, "lengths": lengths, "reverse": reverse, "quasi": quasi}
    final, ys, info = jaxrnn.deer(cell, params, xs, damping=damping, throw=False, **kwargs)
    assert info.converged.tolist() == [True, False, True]
    assert bool(jnp.isnan(info.residual[1])) and int(info.iterations[1]) == T
    assert float(jnp.maximum(info.residual[0], info.residual[2])) < 1e-9
    assert int(info.iterations[0]) < T or quasi or damping  # Newton stops early on sequence 0
    np.testing.assert_allclose(ys[:, 0], want[:, 0], atol=1e-8)
    np.testing.assert_array_equal(ys[:, 2], 0)
    np.testing.assert_array_equal(final[2], carry[2])
    assert bool(jnp.isnan(ys[:3, 1]).all())  # reverse: steps 2, 1, 0 follow the NaN
    with pytest.raises(
        RuntimeError,
        match=r"did not converge: 1 of 3 sequences \(the first at batch index 1\) have not",
    ):
        jaxrnn.deer(cell, params, xs, damping=damping, **kwargs)


def test_scan_with_too_few_deer_iterations_raises_by_default():
    """A GRU over T=30 steps in 2 iterations: eagerly, under jit, vmap and grad."""
    cell, steps = _GRU, 30
    params = cell.init(jax.random.key(0), I, jnp.float64)
    xs = jax.random.normal(jax.random.key(1), (steps, B, I), jnp.float64)
    opts = jaxrnn.DEEROptions(max_iters=2)

    def run(p, x, method="deer", options=opts):
        return jaxrnn.scan(cell, p, x, method=method, method_options=options)[1]

    for method, name in (("deer", "DEER"), ("quasi-deer", "quasi-DEER")):
        with pytest.raises(
            RuntimeError,
            match=rf"^{name} did not converge: 3 of 3 sequences .* max_iters=2 iterations \(T=30\)",
        ):
            run(params, xs, method)
    expected = r"DEER did not converge: 3 of 3 sequences .* tol=1e-10"
    with pytest.raises(RuntimeError, match=expected):
        jax.block_until_ready(jax.jit(run)(params, xs))
    with pytest.raises(RuntimeError, match=expected):  # one sequence per call, one check
        jax.block_until_ready(jax.vmap(run, in_axes=(None, 1), out_axes=1)(params, xs))
    with pytest.raises(RuntimeError, match="DEER did not converge"):
        jax.grad(lambda p: run(p, xs).sum())(params)
    # throw=False returns the unconverged result as it is.
    ys = run(params, xs, options=opts._replace(throw=False))
    assert float(jnp.abs(ys - jaxrnn.scan(cell, params, xs)[1]).max()) > 1e-3


def test_quasi_deer_backward_raises_when_its_adjoint_does_not_converge():
    """Tiny inputs: the forward iterations pass the (relative) test at once, while the adjoint,
    of order 1, needs more quasi-Newton iterations than max_iters."""
    cell = jaxrnn.elman(
        3, use_bias=False, recurrent_init=lambda k, s, d: 0.9 * jax.random.normal(k, s, d)
    )
    params = cell.init(jax.random.key(0), I, jnp.float64)
    xs = 1e-7 * jax.random.normal(jax.random.key(1), (12, 2, I), jnp.float64)
    _, _, info = jaxrnn.deer(cell, params, xs, quasi=True, max_iters=3, tol=1e-4)
    assert info.converged.tolist() == [True, True]

    def loss(p, **options):
        opts = jaxrnn.DEEROptions(**options)
        return jaxrnn.scan(cell, p, xs, method="quasi-deer", method_options=opts)[1].sum()

    with pytest.raises(
        RuntimeError,
        match=r"quasi-DEER's backward pass did not converge: .* 2 of 2 sequences .* "
        r"tol=0.0001 after max_iters=3 iterations",
    ):
        jax.block_until_ready(jax.grad(loss)(params, tol=1e-4, max_iters=3))
    jax.block_until_ready(jax.grad(loss)(params, tol=1e-4, max_iters=3, throw=False))  # no check
    want = jax.grad(lambda p: jaxrnn.scan(cell, p, xs)[1].sum())(params)
    assert _max_error(jax.grad(loss)(params), want) < 1e-8  # the defaults: converged, exact


def _grid_cell():
    """A user cell whose input at one step is a [2, 3] grid: two feature axes."""

    def init(key, input_size=None, dtype=jnp.float64):
        k_w, k_u = jax.random.split(key)
        return {
            "w": 0.5 * jax.random.normal(k_w, (2, 2), dtype),
            "u": jax.random.normal(k_u, (2, 3), dtype),
        }

    def initial_carry(batch_shape=(), dtype=jnp.float64):
        return jnp.zeros((*batch_shape, 2), dtype)

    def step(params, h, x):
        h = jnp.tanh(h @ params["w"] + jnp.einsum("...ij,ij->...i", x, params["u"]))
        return h, jnp.stack([h, -h], axis=-1)  # a [2, 2] output per step

    return jaxrnn.Cell(init, initial_carry, step)


def test_deer_with_several_feature_axes():
    cell = _grid_cell()
    params = cell.init(jax.random.key(0))
    xs = jax.random.normal(jax.random.key(1), (T, B, 2, 3), jnp.float64)
    carry, lengths = cell.initial_carry((B,)), jnp.array(LENGTHS)
    want = sequential_scan(cell.step, params, xs, carry, lengths, True)
    options = jaxrnn.ScanOptions(method="deer")
    got = _parallel.parallel_scan(
        cell, params, xs, carry, lengths, True, options, num_feature_axes=2
    )
    assert got[1].shape == (T, B, 2, 2) and _max_error(got, want) < 1e-10
    final, ys, info = jaxrnn.deer(
        cell,
        params,
        jnp.moveaxis(xs, 0, 1),
        lengths=lengths,
        reverse=True,
        time_major=False,
        num_feature_axes=2,
        quasi=True,
    )
    assert info.converged.shape == (B,) and bool(info.converged.all())
    assert _max_error((final, jnp.moveaxis(ys, 1, 0)), want) < 1e-8


# --- the linear cells against numpy ------------------------------------------------------------


def _numpy_linear_step(name, p, h, x):
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), p)
    if name == "lru":
        hsize = p.nu_log.shape[0]
        lam = np.exp(-np.exp(p.nu_log) + 1j * np.exp(p.theta_log))
        bx = (x @ p.w_ih.T + 1j * (x @ p.w_ih_im.T)) * np.exp(p.gamma_log)
        hc = lam * (h[..., :hsize] + 1j * h[..., hsize:]) + bx
        y = np.real(hc @ (p.w_out + 1j * p.w_out_im).T) + p.d * x
        return np.concatenate([hc.real, hc.imag], axis=-1), y
    g = x @ p.w_ih.T + p.b_ih
    hsize = h.shape[-1]
    if name == "mingru":
        z, h_tilde = _sigmoid(g[..., :hsize]), g[..., hsize:]
        h = (1 - z) * h + z * h_tilde
    else:
        f, i = _sigmoid(g[..., :hsize]), _sigmoid(g[..., hsize : 2 * hsize])
        h = f / (f + i) * h + i / (f + i) * g[..., 2 * hsize :]
    return h, h


@pytest.mark.parametrize("name", list(_LINEAR))
def test_linear_cells_follow_their_equations(name):
    cell = _LINEAR[name]()
    params, carry, xs = _setup(cell)
    final, ys = jaxrnn.scan(cell, params, xs, carry=carry)
    h, want = np.asarray(carry), []
    for t in range(T):
        h, y = _numpy_linear_step(name, params, h, np.asarray(xs[t]))
        want.append(y)
    np.testing.assert_allclose(ys, np.stack(want), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(final, h, rtol=1e-12, atol=1e-12)
    # The spec's coefficients, for all steps at once, are the step's recurrence.
    a, b = cell.spec.coefficients(params, xs)
    state = cell.spec.to_state(carry)
    np.testing.assert_allclose(
        cell.spec.to_carry(a[0] * state + b[0]), cell.step(params, carry, xs[0])[0], atol=1e-14
    )


def test_linear_cells_init_and_dtypes():
    p = jaxrnn.mingru(4).init(jax.random.key(0), 9)
    assert p.w_ih.shape == (8, 9) and float(jnp.abs(p.w_ih).max()) <= 1 / 3
    assert jaxrnn.minlstm(4, use_bias=False).init(jax.random.key(0), 9).b_ih is None
    # bfloat16 params and inputs: the carry stays float32, the output is bfloat16.
    for cell in (jaxrnn.minlstm(4), jaxrnn.lru(4)):
        params = jax.jit(cell.init, static_argnums=(1, 2))(jax.random.key(0), 2, jnp.bfloat16)
        x = jnp.ones((3, 2), jnp.bfloat16)
        carry, y = jax.jit(cell.step)(params, cell.initial_carry((3,), jnp.bfloat16), x)
        assert carry.dtype == jnp.float32 and y.dtype == jnp.bfloat16


def test_lru_ring_initialisation():
    r_min, r_max, max_phase = 0.4, 0.9, 0.5
    cell = jaxrnn.lru(2000, r_min=r_min, r_max=r_max, max_phase=max_phase)
    p = jax.jit(cell.init, static_argnums=(1, 2))(jax.random.key(0), 4, jnp.float64)
    modulus = np.exp(-np.exp(np.asarray(p.nu_log)))
    phase = np.exp(np.asarray(p.theta_log))
    assert r_min <= modulus.min() and modulus.max() <= r_max
    assert phase.min() >= 0 and phase.max() <= max_phase
    # Uniform on the ring: |λ|² is uniform on [r_min², r_max²] (mean in the middle).
    assert abs(np.mean(modulus**2) - (r_min**2 + r_max**2) / 2) < 0.01
    np.testing.assert_allclose(np.exp(np.asarray(p.gamma_log)), np.sqrt(1 - modulus**2), rtol=1e-12)
    re, im = jaxrnn._linear.lru_eigenvalues(p)
    np.testing.assert_allclose(np.hypot(re, im), modulus, rtol=1e-12)
    assert cell.initial_carry((3,), jnp.float64).shape == (3, 4000)
    assert p.w_out.shape == (4, 2000) and p.d.shape == (4,)
    assert abs(float(jnp.std(p.w_ih)) - 1 / math.sqrt(8)) < 0.01


# --- errors ---------------------------------------------------------------------------------------


def test_errors_name_the_argument():
    cell = jaxrnn.gru(3)
    params, _, xs = _setup(cell)
    with pytest.raises(ValueError, match=r"method: 'associative' needs a cell .* linear"):
        jaxrnn.scan(cell, params, xs, method="associative")
    with pytest.raises(ValueError, match="method: expected one of"):
        jaxrnn.scan(cell, params, xs, method="parallel")
    with pytest.raises(ValueError, match="method_options: only for method='deer'"):
        jaxrnn.scan(cell, params, xs, method_options=jaxrnn.DEEROptions())
    with pytest.raises(TypeError, match=r"method_options: expected a jaxrnn\.DEEROptions"):
        jaxrnn.scan(cell, params, xs, method="deer", method_options={"tol": 1e-3})
    with pytest.raises(ValueError, match="truncate: only for method='sequential'"):
        jaxrnn.scan(cell, params, xs, method="deer", truncate=5)
    with pytest.raises(ValueError, match="backward: only for method='sequential'"):
        jaxrnn.scan(cell, params, xs, method="quasi-deer", backward="autodiff")
    for kwargs, match in (
        ({"tol": 0.0}, "tol: expected a positive"),
        ({"max_iters": 0}, "max_iters: expected a positive integer"),
        ({"damping": -1.0}, "damping: expected a number >= 0"),
        ({"quasi": 1}, "quasi: expected a bool"),
    ):
        with pytest.raises((ValueError, TypeError), match=match):
            jaxrnn.deer(cell, params, xs, **kwargs)
    with pytest.raises(ValueError, match=r"lengths: expected values in \[0, T=8\]"):
        jaxrnn.deer(cell, params, xs, lengths=jnp.array([9, 0, 0]))
    with pytest.raises(ValueError, match="x: expected shape"):
        jaxrnn.deer(cell, params, xs[..., :1])
    with pytest.raises(ValueError, match="r_min, r_max"):
        jaxrnn.lru(4, r_min=0.9, r_max=0.5)
    with pytest.raises(ValueError, match="max_phase"):
        jaxrnn.lru(4, max_phase=0.0)
    with pytest.raises(ValueError, match="hidden_size"):
        jaxrnn.mingru(0)


def test_zero_steps_and_vmap_and_jit():
    cell = jaxrnn.mingru(3)
    params, carry, xs = _setup(cell)
    for method in METHODS[1:]:
        final, ys = jaxrnn.scan(cell, params, xs[:0], carry=carry, method=method)
        assert ys.shape == (0, B, 3)
        np.testing.assert_array_equal(final, carry)
    want = jaxrnn.scan(cell, params, xs, carry=carry)
    got = jax.jit(
        jax.vmap(
            lambda x, c: jaxrnn.scan(cell, params, x, carry=c, method="deer"),
            in_axes=(1, 0),
            out_axes=(0, 1),
        )
    )(xs, carry)
    assert _max_error(got, want) < 1e-10

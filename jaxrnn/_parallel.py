"""Parallel-in-time evaluation: associative scans of linear cells, DEER and quasi-DEER for any cell.

``jaxrnn.scan(..., method=...)`` dispatches here. Every method computes the
same function as the sequential scan, masking and direction included: a step
``t >= lengths[b]`` is the identity on the carry with a zero output, so it is
simply one more step of the recurrence (``a_t = 1, b_t = 0`` for a linear
cell, the Jacobian ``I`` for DEER), and ``reverse=True`` runs the recurrence
on the time-reversed inputs.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from jaxrnn._cell import Array, Carry, Cell, Params
from jaxrnn._linear import LinearSpec
from jaxrnn._scan import check_carry, check_lengths, check_xs, default_dtype

METHODS = ("sequential", "associative", "deer", "quasi-deer")


class DEEROptions(NamedTuple):
    """Options of ``jaxrnn.scan(..., method="deer" | "quasi-deer", method_options=...)``.

    The fields are the keyword arguments of :func:`deer` of the same names.

    Attributes:
      tol: stop once the trajectory solves the recurrence to ``tol``:
        max_t |f(h_{t-1}, x_t) − h_t| ≤ tol · max(1, max_t |h_t|) over all
        steps and sequences (the trajectory returned is then one iteration
        better still); default 1e-10 for a float64 carry, 1e-5 otherwise. The
        adjoint iterations of quasi-DEER's backward pass use the same test.
      max_iters: at most this many iterations, and never more than T (the
        default), the number in which an undamped iteration reaches the
        sequential trajectory exactly.
      damping: λ ≥ 0 of ELK (Gonzalez et al. 2024): each iteration minimises
        the linearised residual plus λ·|state − previous state|² (over the
        valid steps) by a parallel Kalman filter and smoother. 0 (the
        default) is plain (quasi-)DEER; larger values take shorter, safer
        steps for unstable dynamics, at the price of more iterations on
        stable ones and of the guarantee of reaching the sequential
        trajectory in T iterations (``max_iters`` is still at most T:
        check ``DEERInfo.residual``).

    Example:
      >>> import jax, jax.numpy as jnp, jaxrnn
      >>> cell = jaxrnn.gru(4)
      >>> params = cell.init(jax.random.key(0), input_size=2)
      >>> opts = jaxrnn.DEEROptions(tol=1e-4, max_iters=10)
      >>> carry, ys = jaxrnn.scan(cell, params, jnp.ones((20, 2)), method="quasi-deer",
      ...                         method_options=opts)
      >>> ys.shape
      (20, 4)
    """

    tol: float | None = None
    max_iters: int | None = None
    damping: float = 0.0


class DEERInfo(NamedTuple):
    """How a :func:`deer` solve converged.

    Attributes:
      iterations: int32 scalar, the number of Newton (or quasi-Newton) iterations.
      residual: the largest |f(h_{t-1}, x_t) − h_t| over all steps and
        sequences of the returned trajectory (0 for the exact sequential
        trajectory, up to rounding).

    Example:
      >>> import jax, jax.numpy as jnp, jaxrnn
      >>> cell = jaxrnn.elman(3)
      >>> params = cell.init(jax.random.key(0), input_size=2, dtype=jnp.float64)
      >>> _, _, info = jaxrnn.deer(cell, params, jnp.ones((8, 2)))
      >>> int(info.iterations) <= 8, float(info.residual) < 1e-10
      (True, True)
    """

    iterations: Array
    residual: Array


def deer(
    cell: Cell,
    params: Params,
    xs: Array,
    *,
    carry: Carry | None = None,
    lengths: Array | None = None,
    reverse: bool = False,
    time_major: bool = True,
    quasi: bool = False,
    tol: float | None = None,
    max_iters: int | None = None,
    damping: float = 0.0,
) -> tuple[Carry, Array, DEERInfo]:
    r"""Run any cell over a sequence by Newton's method on the whole trajectory (DEER).

    The sequential scan computes the trajectory :math:`h_t = f(h_{t-1}, x_t)`
    one step after another. DEER solves all T equations at once: from a guess
    of the whole trajectory (the initial carry at every step), each iteration
    linearises f at the guess, :math:`J_t = \partial f / \partial h (h_{t-1},
    x_t)` for every t in parallel, and solves the linear recurrence

    .. math::

       h_t = J_t h_{t-1} + \bigl(f(h_{t-1}^{guess}, x_t) - J_t h_{t-1}^{guess}\bigr)

    with :func:`jax.lax.associative_scan` over (matrix, vector) pairs. Each
    iteration makes at least one more step exact, so at most T iterations
    reach the sequential trajectory; near it, convergence is quadratic. A
    carry with several leaves (LSTM's ``(h, c)``) is flattened into one state
    vector of size D per sequence. Cost per iteration: O(T·D³) work and
    O(T·D²) memory, in O(log T) sequential depth.

    ``quasi=True`` (quasi-DEER, Gonzalez et al. 2024) keeps only the diagonal
    of each J_t: O(T·D) memory (the diagonal is computed column by column),
    more but cheaper iterations, and the same fixed point.

    Gradients are not computed through the iterations: at the fixed point,
    the implicit function theorem gives the gradients by one adjoint linear
    recurrence :math:`\bar h_t = \bar g_t + J_{t+1}^\top \bar h_{t+1}`, solved by
    one reverse associative scan over the transposed Jacobians (for
    ``quasi=True``, by quasi-Newton iterations on that linear recurrence, with
    exact Jacobian-transpose products, so the gradients are exact too).

    Differentiation: first-order reverse mode (``jax.grad``, ``jax.vjp``); the
    implicit gradient is a custom VJP, so forward mode (``jax.jvp``) and
    gradients of gradients are not available through DEER (the associative
    method has both, and so has the sequential one with
    ``backward="autodiff"``).

    ``lengths`` and ``reverse`` mean what they mean for :func:`jaxrnn.scan`:
    a padded step is the identity on the carry (its Jacobian is I) with a zero
    output, and ``reverse`` solves the recurrence on the time-reversed inputs.

    Args:
      cell: any :class:`Cell`.
      params: the cell's params.
      xs: inputs ``[T, *batch, I]`` (``[*batch, T, I]`` with ``time_major=False``).
      carry: the initial carry (zeros when None).
      lengths: integer array of shape ``batch``, as for :func:`jaxrnn.scan`.
      reverse: run from each sequence's last valid step to its first.
      time_major: the layout of ``xs`` and of the outputs.
      quasi: quasi-DEER: diagonal Jacobians only.
      tol: convergence tolerance, see :class:`DEEROptions`.
      max_iters: the most iterations, at most (and by default) T; one
        iteration count is shared by all sequences of the batch.
      damping: ELK's λ ≥ 0, see :class:`DEEROptions`.

    Returns:
      ``(final_carry, ys, info)``: what :func:`jaxrnn.scan` returns, and a
      :class:`DEERInfo`.

    Example:
      >>> import jax, jax.numpy as jnp, jaxrnn
      >>> cell = jaxrnn.gru(2)
      >>> params = cell.init(jax.random.key(0), input_size=1, dtype=jnp.float64)
      >>> xs = jax.random.normal(jax.random.key(1), (200, 4, 1), jnp.float64)
      >>> carry, ys, info = jaxrnn.deer(cell, params, xs)
      >>> _, ys_seq = jaxrnn.scan(cell, params, xs)
      >>> float(jnp.abs(ys - ys_seq).max()) < 1e-10, int(info.iterations) < 20
      (True, True)

    References:
      Lim, Zhu, Selfridge & Kasim, "Parallelizing non-linear sequential models
      over the sequence length", ICLR 2024.
      Gonzalez, Warrington, Smith & Linderman, "Towards scalable and stable
      parallelization of nonlinear RNNs", NeurIPS 2024 (quasi-DEER, ELK).
    """
    xs = check_xs(xs)
    batch_axis_count = xs.ndim - 2
    if not time_major:
        xs = jnp.moveaxis(xs, -2, 0)
    carry = check_carry(cell, carry, xs.shape[1:-1], default_dtype(params, xs))
    lengths = check_lengths(lengths, xs.shape[1:-1], xs.shape[0])
    final, ys, info = _deer(
        cell, params, xs, carry, lengths, reverse, quasi, tol, max_iters, damping
    )
    if not time_major:
        ys = jnp.moveaxis(ys, 0, batch_axis_count)
    return final, ys, info


def parallel_scan(
    method: Any,
    method_options: Any,
    cell: Cell,
    params: Params,
    xs: Array,
    carry: Carry,
    lengths: Array | None,
    reverse: bool,
    *,
    truncate: int | None,
    checkpoint: int | None,
    backward: str,
) -> tuple[Carry, Array]:
    """:func:`jaxrnn.scan` with a ``method`` other than ``"sequential"`` (checked, time-major)."""
    if method not in METHODS:
        raise ValueError(f"method: expected one of {list(METHODS)}, got {method!r}")
    deer_like = method in ("deer", "quasi-deer")
    if method_options is not None and not deer_like:
        raise ValueError(
            f"method_options: only for method='deer' or 'quasi-deer', got method={method!r}"
        )
    if method_options is not None and not isinstance(method_options, DEEROptions):
        raise TypeError(
            f"method_options: expected a jaxrnn.DEEROptions or None, got {method_options!r}"
        )
    for name, value in (("truncate", truncate), ("checkpoint", checkpoint)):
        if value is not None:
            raise ValueError(
                f"{name}: only for method='sequential'; the {method!r} method has no "
                f"step-by-step backward pass to truncate or checkpoint"
            )
    if deer_like and backward != "fused":
        raise ValueError(
            f"backward: only for method='sequential'; method={method!r} always differentiates "
            f"implicitly at the fixed point, got backward={backward!r}"
        )
    if method == "associative":
        return associative_scan(cell, params, xs, carry, lengths, reverse)
    options = DEEROptions() if method_options is None else method_options
    final, ys, _ = _deer(
        cell, params, xs, carry, lengths, reverse, method == "quasi-deer", *options
    )
    return final, ys


def _sequential(cell: Cell, params: Params, xs: Array, carry: Carry) -> tuple[Carry, Array]:
    """A plain scan: what every method computes for T = 0."""
    return jax.lax.scan(functools.partial(cell.step, params), carry, xs)


def _linear_combine(first: tuple[Array, Array], second: tuple[Array, Array]) -> tuple[Array, Array]:
    """(a_i, b_i)∘(a_j, b_j) = (a_j a_i, a_j b_i + b_j): step i, then step j (element-wise)."""
    a_i, b_i = first
    a_j, b_j = second
    return a_j * a_i, a_j * b_i + b_j


def associative_scan(
    cell: Cell,
    params: Params,
    xs: Array,
    carry: Carry,
    lengths: Array | None,
    reverse: bool,
) -> tuple[Carry, Array]:
    """``jaxrnn.scan(method="associative")`` (checked inputs, time-major ``xs``)."""
    spec = cell.spec
    if not isinstance(spec, LinearSpec):
        raise ValueError(
            "method: 'associative' needs a cell whose recurrence is linear in its carry, "
            "h_t = a_t * h_{t-1} + b_t (a cell with a jaxrnn.LinearSpec: jaxrnn.mingru, "
            f"jaxrnn.minlstm, jaxrnn.lru), got a cell with spec {spec!r}; use "
            "method='deer' or 'quasi-deer' for a nonlinear cell"
        )
    num_steps = xs.shape[0]
    if num_steps == 0:
        return _sequential(cell, params, xs, carry)
    y_struct = jax.eval_shape(cell.step, params, carry, xs[0])[1]  # the step checks its inputs
    return _associative_core(spec, reverse, y_struct.dtype, params, xs, carry, lengths)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _associative_core(
    spec: LinearSpec,
    reverse: bool,
    y_dtype: Any,
    params: Params,
    xs: Array,
    carry: Carry,
    lengths: Array | None,
) -> tuple[Carry, Array]:
    """The associative scan, compiled as one computation (also when called eagerly)."""
    num_steps = xs.shape[0]
    a, b = spec.coefficients(params, xs)
    h0 = spec.to_state(carry)
    dtype = jnp.result_type(a, b, h0)
    a, b = a.astype(dtype), b.astype(dtype)
    valid = None
    if lengths is not None:
        steps = jnp.arange(num_steps).reshape((num_steps,) + (1,) * lengths.ndim)
        valid = (steps < lengths[None])[..., None]
        a, b = jnp.where(valid, a, 1), jnp.where(valid, b, 0)
    if reverse:
        a, b = jnp.flip(a, 0), jnp.flip(b, 0)
    b = b.at[0].set(a[0] * h0 + b[0])
    _, hs = jax.lax.associative_scan(_linear_combine, (a, b))
    final = jax.tree.map(lambda new, old: new.astype(old.dtype), spec.to_carry(hs[-1]), carry)
    if reverse:
        hs = jnp.flip(hs, 0)
    ys = spec.readout(params, hs, xs).astype(y_dtype)
    if valid is not None:
        ys = jnp.where(valid, ys, 0)
    return final, ys


# ---------------------------------------------------------------------------------------------
# DEER


class _Algebra(NamedTuple):
    """The few operations on Jacobians DEER needs: dense [..., D, D] or diagonal [..., D]."""

    mm: Callable[[Array, Array], Array]
    mv: Callable[[Array, Array], Array]
    tr: Callable[[Array], Array]
    solve: Callable[[Array, Array], Array]  # (M, B) -> M^{-1} B
    eye: Callable[[Array], Array]  # an identity shaped like a Jacobian


_DENSE = _Algebra(
    mm=jnp.matmul,
    mv=lambda a, v: jnp.einsum("...ij,...j->...i", a, v),
    tr=lambda a: jnp.swapaxes(a, -1, -2),
    solve=jnp.linalg.solve,
    eye=lambda a: jnp.broadcast_to(jnp.eye(a.shape[-1], dtype=a.dtype), a.shape),
)
_DIAGONAL = _Algebra(
    mm=jnp.multiply,
    mv=jnp.multiply,
    tr=lambda a: a,
    solve=lambda m, b: b / m,
    eye=jnp.ones_like,
)


def _combine(alg: _Algebra, first: tuple[Array, Array], second: tuple[Array, Array]) -> Any:
    """(A_i, b_i)∘(A_j, b_j) = (A_j A_i, A_j b_i + b_j) with matrices or diagonals."""
    a_i, b_i = first
    a_j, b_j = second
    return alg.mm(a_j, a_i), alg.mv(a_j, b_i) + b_j


def _solve_linear(alg: _Algebra, a: Array, b: Array, reverse: bool = False) -> Array:
    """h_t = a_t h_{t-1} + b_t for all t (h_{-1} = 0; with ``reverse``, h_t = a_t h_{t+1} + b_t)."""
    return jax.lax.associative_scan(functools.partial(_combine, alg), (a, b), reverse=reverse)[1]


@dataclasses.dataclass(frozen=True)
class _Problem:
    """What the solver needs besides arrays: the step, the carry layout, the static options.

    ``tol`` and ``max_iters`` are traced values (a new tolerance does not
    recompile); ``damping`` is static, as 0 and > 0 run different code.
    """

    step: Callable[..., Any]
    unravel: Callable[[Array], Carry]
    quasi: bool
    damping: float

    @property
    def algebra(self) -> _Algebra:
        return _DIAGONAL if self.quasi else _DENSE


def _row_step(
    problem: _Problem, params: Params, s: Array, x: Array, valid: Array
) -> tuple[Array, Array]:
    """One masked step of one sequence on the flat state ``s`` ``[D]``: identity when not valid."""
    new_carry, y = problem.step(params, problem.unravel(s), x)
    new_s = ravel_pytree(new_carry)[0].astype(s.dtype)
    return jnp.where(valid, new_s, s), jnp.where(valid, y, jnp.zeros_like(y))


def _all_steps(
    problem: _Problem, params: Params, s_prev: Array, xs: Array, valid: Array
) -> tuple[Array, Array]:
    """Every step at once: ``s_prev`` ``[T, N, D]``, ``xs`` ``[T, N, I]`` -> states, outputs."""
    step = functools.partial(_row_step, problem, params)
    return jax.vmap(jax.vmap(step))(s_prev, xs, valid)


def _previous(s0: Array, states: Array) -> Array:
    """The state before every step: ``[s0, h_0, …, h_{T-2}]``."""
    return jnp.concatenate([s0[None], states[:-1]])


def _shift_back(v: Array) -> Array:
    """``out[t] = v[t + 1]``, and 0 at the last step."""
    return jnp.concatenate([v[1:], jnp.zeros_like(v[:1])])


def _max_abs(v: Array) -> Array:
    return jnp.max(jnp.abs(v), initial=0.0)


def _relative(error: Array, value: Array) -> Array:
    """The convergence test of every iteration: max |error| / max(1, max |value|)."""
    return _max_abs(error) / jnp.maximum(1.0, _max_abs(value))


def _jacobians(problem: _Problem, rows: Callable[[Array], Array], like: Array) -> Array:
    """The Jacobians (or diagonals) from ``rows(e)``, a product with ``e`` broadcast over T, N.

    ``rows`` is a JVP (giving columns) or a VJP (giving rows); the diagonal is
    the same either way, and the caller transposes a dense result as needed.
    """
    eye = jnp.eye(like.shape[-1], dtype=like.dtype)

    def product(e: Array) -> Array:
        return rows(jnp.broadcast_to(e, like.shape))

    if problem.quasi:
        # One product per column, one after the other: O(T·N·D) memory.
        def diagonal_entry(e: Array) -> Array:
            e_full = jnp.broadcast_to(e, like.shape)
            return jnp.sum(product(e) * e_full, axis=-1)

        return jnp.moveaxis(jax.lax.map(diagonal_entry, eye), 0, -1)
    return jax.vmap(product, out_axes=-1)(eye)


def _filter_combine(alg: _Algebra, first: Any, second: Any) -> Any:
    """The associative operator of the parallel Kalman filter (Särkkä & García-Fernández 2021)."""
    a_i, b_i, c_i, eta_i, j_i = first
    a_j, b_j, c_j, eta_j, j_j = second
    m = alg.eye(c_i) + alg.mm(c_i, j_j)  # I + C_i J_j; its transpose is I + J_j C_i
    aj_minv = alg.tr(alg.solve(alg.tr(m), alg.tr(a_j)))  # A_j (I + C_i J_j)^{-1}
    ait_ninv = alg.tr(alg.solve(m, a_i))  # A_i^T (I + J_j C_i)^{-1}
    return (
        alg.mm(aj_minv, a_i),
        alg.mv(aj_minv, b_i + alg.mv(c_i, eta_j)) + b_j,
        alg.mm(alg.mm(aj_minv, c_i), alg.tr(a_j)) + c_j,
        alg.mv(ait_ninv, eta_j - alg.mv(j_j, b_i)) + eta_i,
        alg.mm(alg.mm(ait_ninv, j_j), a_i) + j_i,
    )


def _elk_step(
    alg: _Algebra, jac: Array, u: Array, guess: Array, damping: float, valid: Array | None = None
) -> Array:
    """One damped (ELK) iteration: argmin_h Σ|h_t − J_t h_{t−1} − u_t|² + λ Σ|h_t − guess_t|².

    A linear-Gaussian smoothing problem (dynamics noise I, observations
    ``guess`` with noise I/λ), solved by a parallel Kalman filter and a
    parallel Rauch–Tung–Striebel smoother. ``jac[0]`` must be 0 and ``u[0]``
    the exact first state. Steps where ``valid`` ``[T, N]`` is False (padding,
    exactly the identity) are not damped.
    """
    # κ = λ/(1+λ) per step, 0 on padding; shaped for vectors [T, N, 1] and for Jacobians.
    kappa = jnp.full(u.shape[:2], damping / (1 + damping), u.dtype)
    if valid is not None:
        kappa = jnp.where(valid, kappa, 0)
    k_vec = kappa[..., None]
    k_jac = k_vec.reshape(kappa.shape + (1,) * (jac.ndim - 2))
    jac_t = alg.tr(jac)
    elements = (
        (1 - k_jac) * jac,
        (1 - k_vec) * u + k_vec * guess,
        (1 - k_jac) * alg.eye(jac),
        k_vec * alg.mv(jac_t, guess - u),
        k_jac * alg.mm(jac_t, jac),
    )
    _, mean, cov, _, _ = jax.lax.associative_scan(functools.partial(_filter_combine, alg), elements)
    # Smoother: h_t = G_t h_{t+1} + (m_t − G_t (J_{t+1} m_t + u_{t+1})),
    # with the gain G_t = P_t J_{t+1}^T (J_{t+1} P_t J_{t+1}^T + I)^{-1}.
    jac_next, u_next, m, p = jac[1:], u[1:], mean[:-1], cov[:-1]
    jp = alg.mm(jac_next, p)
    gain = alg.tr(alg.solve(alg.mm(jp, alg.tr(jac_next)) + alg.eye(jp), jp))
    offset = m - alg.mv(gain, alg.mv(jac_next, m) + u_next)
    gains = jnp.concatenate([gain, jnp.zeros_like(gain[:1])])
    offsets = jnp.concatenate([offset, mean[-1:]])
    return _solve_linear(alg, gains, offsets, reverse=True)


class _Limits(NamedTuple):
    """When the iterations stop: tolerance (in the state dtype) and the most iterations (int32)."""

    tol: Array
    max_iters: Array


def _keep_going(limits: _Limits, count: Array, residual: Array) -> Array:
    return (count < limits.max_iters) & (residual > limits.tol)


def _newton(
    problem: _Problem, limits: _Limits, params: Params, s0: Array, xs: Array, valid: Array
) -> tuple[Array, Array]:
    """The trajectory ``[T, N, D]`` by (quasi-)Newton iterations, and the iteration count."""
    alg = problem.algebra

    def body(state: tuple[Array, Array, Array]) -> tuple[Array, Array, Array]:
        guess, count, _ = state
        s_prev = _previous(s0, guess)
        f, jvp = jax.linearize(lambda s: _all_steps(problem, params, s, xs, valid)[0], s_prev)
        jac = _jacobians(problem, jvp, s_prev)
        # Step 0 starts from the known s0: its new state is f[0] exactly.
        u = (f - alg.mv(jac, s_prev)).at[0].set(f[0])
        jac = jac.at[0].set(0)
        if problem.damping > 0:
            new = _elk_step(alg, jac, u, guess, problem.damping, valid)
        else:
            new = _solve_linear(alg, jac, u)
        # Stop once the guess solves the recurrence (new is better still): its residual is free.
        return new, count + 1, _relative(f - guess, guess)

    guess = jnp.broadcast_to(s0, (xs.shape[0], *s0.shape))
    init = (guess, jnp.int32(0), jnp.array(jnp.inf, s0.dtype))
    states, count, _ = jax.lax.while_loop(lambda st: _keep_going(limits, *st[1:]), body, init)
    return states, count


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _solve(
    problem: _Problem, limits: _Limits, params: Params, s0: Array, xs: Array, valid: Array
) -> tuple[Array, Array, Array, Array]:
    """The fixed point h_t = f(h_{t−1}, x_t), its outputs, iterations and residual.

    Differentiated implicitly at the fixed point (``limits``, ``valid``, the
    count and the residual get no gradient).
    """
    return _solve_fwd(problem, limits, params, s0, xs, valid)[0]


def _solve_fwd(
    problem: _Problem, limits: _Limits, params: Params, s0: Array, xs: Array, valid: Array
) -> tuple[tuple[Array, Array, Array, Array], Any]:
    states, count = _newton(problem, limits, params, s0, xs, valid)
    new_states, ys = _all_steps(problem, params, _previous(s0, states), xs, valid)
    residual = _max_abs(new_states - states)
    return (states, ys, count, residual), (limits, params, s0, xs, valid, states)


def _solve_bwd(problem: _Problem, residuals: Any, cotangents: Any) -> Any:
    """The adjoint λ_t = ḡ_t + J_{t+1}^T λ_{t+1} + (∂y_{t+1}/∂h_t)^T ȳ_{t+1}, then one VJP.

    With g the states' cotangent and ȳ the outputs': one linearisation of every
    step at the fixed point gives every product needed.
    """
    limits, params, s0, xs, valid, states = residuals
    g_states, g_ys, _, _ = cotangents
    alg = problem.algebra
    s_prev = _previous(s0, states)
    _, vjp = jax.vjp(lambda p, s, x: _all_steps(problem, p, s, x, valid), params, s_prev, xs)
    no_states, no_ys = jnp.zeros_like(states), jnp.zeros_like(g_ys)

    def transpose_product(lam: Array) -> Array:
        """Every J_t^T λ_t, as rows of the adjoint system."""
        return vjp((lam, no_ys))[1]

    # The outputs' cotangent reaches the state before each step.
    g = g_states + _shift_back(vjp((no_states, g_ys))[1])
    # A VJP with e_i gives row i of J_t: the rows, stacked on the last axis, are J^T.
    jac_t = _jacobians(problem, transpose_product, s_prev)
    a = _shift_back(jac_t)  # λ_t depends on λ_{t+1} through J_{t+1}^T
    if not problem.quasi:
        lam = _solve_linear(alg, a, g, reverse=True)
    else:

        def body(state: tuple[Array, Array, Array]) -> tuple[Array, Array, Array]:
            lam, count, _ = state
            # Exact J^T λ from the VJP; only the implicit part uses the diagonal.
            exact = g + _shift_back(transpose_product(lam))
            new = _solve_linear(alg, a, exact - _shift_back(jac_t * lam), reverse=True)
            return new, count + 1, _relative(exact - lam, lam)

        init = (jnp.zeros_like(g), jnp.int32(0), jnp.array(jnp.inf, g.dtype))
        lam = jax.lax.while_loop(lambda st: _keep_going(limits, *st[1:]), body, init)[0]
    p_bar, s_prev_bar, x_bar = vjp((lam, g_ys))
    return None, p_bar, s_prev_bar[0], x_bar, None


_solve.defvjp(_solve_fwd, _solve_bwd)


def _check_options(
    quasi: Any, tol: Any, max_iters: Any, damping: Any, num_steps: int, dtype: Any
) -> tuple[float, int, float]:
    """Validated (tol, max_iters, damping), with the defaults filled in."""
    if not isinstance(quasi, bool):
        raise TypeError(f"quasi: expected a bool, got {quasi!r}")
    if tol is None:
        tol = 1e-10 if jnp.dtype(dtype) == jnp.float64 else 1e-5
    if isinstance(tol, bool) or not isinstance(tol, int | float) or not tol > 0:
        raise ValueError(f"tol: expected a positive number or None, got {tol!r}")
    if max_iters is None:
        max_iters = num_steps
    if isinstance(max_iters, bool) or not isinstance(max_iters, int) or max_iters <= 0:
        raise ValueError(f"max_iters: expected a positive integer or None, got {max_iters!r}")
    if isinstance(damping, bool) or not isinstance(damping, int | float) or not damping >= 0:
        raise ValueError(f"damping: expected a number >= 0, got {damping!r}")
    if not math.isfinite(damping):
        raise ValueError(f"damping: expected a finite number, got {damping!r}")
    return float(tol), min(max_iters, num_steps), float(damping)


def _deer(
    cell: Cell,
    params: Params,
    xs: Array,
    carry: Carry,
    lengths: Array | None,
    reverse: bool,
    quasi: bool,
    tol: float | None,
    max_iters: int | None,
    damping: float,
) -> tuple[Carry, Array, DEERInfo]:
    """:func:`deer` on checked inputs, time-major."""
    num_steps, batch_shape = xs.shape[0], xs.shape[1:-1]
    rows = math.prod(batch_shape)
    carry_rows = jax.tree.map(lambda c: c.reshape(rows, *c.shape[len(batch_shape) :]), carry)
    template = jax.tree.map(lambda c: jnp.zeros(c.shape[1:], c.dtype), carry_rows)
    flat, unravel = ravel_pytree(template)
    tol, max_iters, damping = _check_options(
        quasi, tol, max_iters, damping, max(num_steps, 1), flat.dtype
    )
    if num_steps == 0:
        final, ys = _sequential(cell, params, xs, carry)
        return final, ys, DEERInfo(jnp.int32(0), jnp.zeros((), flat.dtype))
    jax.eval_shape(cell.step, params, carry, xs[0])  # the step checks its inputs
    problem = _Problem(cell.step, unravel, quasi, damping)
    limits = _Limits(jnp.asarray(tol, flat.dtype), jnp.asarray(max_iters, jnp.int32))
    x_rows = xs.reshape(num_steps, rows, xs.shape[-1])
    if lengths is None:
        valid = jnp.ones((num_steps, rows), bool)
    else:
        valid = jnp.arange(num_steps)[:, None] < lengths.reshape(1, rows)
    final_rows, ys, count, residual = _deer_rows(
        problem, reverse, limits, params, carry_rows, x_rows, valid
    )
    final = jax.tree.map(lambda f, c: f.reshape(c.shape), final_rows, carry)
    ys = ys.reshape(num_steps, *batch_shape, ys.shape[-1])
    return final, ys, DEERInfo(count, residual)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _deer_rows(
    problem: _Problem,
    reverse: bool,
    limits: _Limits,
    params: Params,
    carry_rows: Carry,
    x_rows: Array,
    valid: Array,
) -> tuple[Carry, Array, Array, Array]:
    """DEER on ``N`` rows, compiled as one computation (also when called eagerly)."""
    s0 = jax.vmap(lambda c: ravel_pytree(c)[0])(carry_rows)
    if reverse:
        x_rows, valid = jnp.flip(x_rows, 0), jnp.flip(valid, 0)
    states, ys, count, residual = _solve(problem, limits, params, s0, x_rows, valid)
    if reverse:
        ys = jnp.flip(ys, 0)
    final = jax.vmap(problem.unravel)(states[-1])
    return final, ys, count, jax.lax.stop_gradient(residual)

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
import numpy as np
from jax.flatten_util import ravel_pytree
from jax.typing import ArrayLike
from jaxtyping import Float, Shaped

from jaxrnn._cell import Array, Carry, Cell, LinearSpec, Params, described_spec
from jaxrnn._checks import (
    DEEROptions,
    ScanOptions,
    check_carry,
    check_lengths,
    check_resets,
    default_dtype,
    from_time_major,
    sequence_time,
    to_time_major,
)
from jaxrnn._sequential import fresh_steps, valid_steps, zero_padding
from jaxrnn._time_axis import TimeAxis


class DEERInfo(NamedTuple):
    """How a :func:`deer` solve converged, sequence by sequence.

    Every field has the batch shape of ``xs`` (``()`` for one sequence):
    each sequence of the batch is judged on its own.

    Attributes:
      iterations: int32, the (quasi-)Newton iterations each sequence took:
        the iterations until it passed the convergence test, plus the one
        more it then takes, or ``max_iters`` when it never passed it (the
        loop over the batch ran ``iterations.max()`` times).
      residual: max_t |f(h_{t-1}, x_t) − h_t| of the returned trajectory,
        over the steps and carry entries of each sequence (0 for the exact
        sequential trajectory, up to rounding; NaN, or Inf, when the
        trajectory holds a NaN or Inf).
      converged: bool, whether the returned trajectory passes the test of
        :class:`DEEROptions` ``tol``: ``residual <= tol · max(1, max_t |h_t|)``;
        never True for a NaN or Inf residual.

    Example:
      >>> import jax, jax.numpy as jnp, jaxrnn
      >>> cell = jaxrnn.elman(3)
      >>> params = cell.init(jax.random.key(0), input_size=2, dtype=jnp.float64)
      >>> _, _, info = jaxrnn.deer(cell, params, jnp.ones((8, 4, 2)))  # T=8, batch 4
      >>> info.iterations.shape, bool(info.converged.all()), float(info.residual.max()) < 1e-10
      ((4,), True, True)
    """

    iterations: Array
    residual: Array
    converged: Array


def deer(
    cell: Cell,
    params: Params,
    xs: Shaped[ArrayLike, "..."],
    *,
    carry: Carry | None = None,
    lengths: Array | None = None,
    reverse: bool = False,
    time_major: bool = True,
    quasi: bool = False,
    tol: float | None = None,
    max_iters: int | None = None,
    damping: float = 0.0,
    throw: bool = True,
    num_feature_axes: int = 1,
    sequence_axis: str | None = None,
    resets: Shaped[ArrayLike, "..."] | None = None,
) -> tuple[Carry, Float[Array, "..."], DEERInfo]:
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

    ``lengths``, ``reverse`` and ``resets`` mean what they mean for
    :func:`jaxrnn.scan`: a padded step is the identity on the carry (its
    Jacobian is I) with a zero output, ``reverse`` solves the recurrence on
    the time-reversed inputs, and a segment's first step reads the initial
    carry (its Jacobian with respect to the state before is 0).

    Convergence is judged for each sequence of the batch on its own (the
    Newton systems of different sequences are independent): a sequence that
    has converged is left alone while the others iterate, so a NaN or a
    diverging trajectory in one sequence leaves the others' results right.
    A NaN or Inf residual is never "converged". When some sequence has not
    converged after ``max_iters`` iterations, ``throw=True`` (the default)
    raises a ``RuntimeError`` that says how many sequences, their residual,
    ``tol`` and ``max_iters``: at once when called outside any
    transformation, and under ``jit``, ``vmap`` or ``grad`` when the
    computation runs (a host callback, :func:`jax.pure_callback`, tied to the
    results; JAX raises it as a ``jax.errors.JaxRuntimeError``, a
    ``RuntimeError`` whose message contains the same text, and also logs the
    traceback). ``throw=False`` returns the result as it is, and
    ``info.converged`` says which sequences converged. With ``throw=True``
    the backward pass of quasi-DEER raises likewise when its adjoint
    iterations leave a finite residual above ``tol`` (a NaN cotangent gives
    NaN gradients, not an error).

    Args:
      cell: any :class:`Cell`.
      params: the cell's params.
      xs: inputs ``[T, *batch, I]`` (``[*batch, T, I]`` with ``time_major=False``;
        with ``num_feature_axes=k``, the last k axes are one step's input).
      carry: the initial carry (zeros when None).
      lengths: integer array of shape ``batch``, as for :func:`jaxrnn.scan`.
      reverse: run from each sequence's last valid step to its first.
      time_major: the layout of ``xs`` and of the outputs.
      quasi: quasi-DEER: diagonal Jacobians only.
      tol: convergence tolerance, see :class:`DEEROptions`.
      max_iters: the most iterations, at most (and by default) T.
      damping: ELK's λ ≥ 0, see :class:`DEEROptions`.
      throw: raise when some sequence has not converged (see above).
      num_feature_axes: how many trailing axes of ``xs`` are one step's
        input, as for :func:`jaxrnn.scan`.
      sequence_axis: split the time axis across this mesh axis, as for
        :func:`jaxrnn.scan` (sequence parallelism); ``info`` is the same on
        every device. The run is then traced even when called eagerly, so
        ``throw`` raises when the computation runs, as under ``jit``.
      resets: bool array ``[T, *batch]`` (``[*batch, T]`` with
        ``time_major=False``), True where a step starts a new segment, as
        for :func:`jaxrnn.scan`.

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
      >>> float(jnp.abs(ys - ys_seq).max()) < 1e-10, int(info.iterations.max()) < 20
      (True, True)

      Too few iterations raise by default; ``throw=False`` reports them instead:

      >>> _, _, info = jaxrnn.deer(cell, params, xs, max_iters=2, throw=False)
      >>> info.converged.tolist()
      [False, False, False, False]
      >>> jaxrnn.deer(cell, params, xs, max_iters=2)
      Traceback (most recent call last):
      ...
      RuntimeError: DEER did not converge: 4 of 4 sequences ...

    References:
      Lim, Zhu, Selfridge & Kasim, "Parallelizing non-linear sequential models
      over the sequence length", ICLR 2024.
      Gonzalez, Warrington, Smith & Linderman, "Towards scalable and stable
      parallelization of nonlinear RNNs", NeurIPS 2024 (quasi-DEER, ELK).
    """
    xs, batch_shape = to_time_major(xs, time_major, num_feature_axes)
    if sequence_axis is not None and not isinstance(sequence_axis, str):
        raise TypeError(f"sequence_axis: expected a mesh axis name or None, got {sequence_axis!r}")
    time = sequence_time(sequence_axis, xs.shape[0])
    carry = check_carry(cell, carry, batch_shape, default_dtype(params, xs))
    lengths = check_lengths(lengths, batch_shape, xs.shape[0] * time.shards())
    if not isinstance(reverse, bool):
        raise TypeError(f"reverse: expected a bool, got {reverse!r}")
    resets = check_resets(resets, xs.shape[0], batch_shape, time_major)
    first_step = time.first_step(xs.shape[0])
    xs = zero_padding(xs, lengths, first_step)
    fresh = fresh_steps(resets, lengths, reverse, first_step, time)
    options = DEEROptions(tol, max_iters, damping, throw)
    run = functools.partial(_deer, cell, reverse=reverse, quasi=quasi, options=options)
    run = functools.partial(run, num_feature_axes=num_feature_axes, sequence_axis=sequence_axis)
    final, ys, info = _on_time_chunks(run, sequence_axis, params, xs, carry, lengths, 3, fresh)
    return final, from_time_major(ys, time_major, len(batch_shape)), info


def parallel_scan(
    cell: Cell,
    params: Params,
    xs: Array,
    carry: Carry,
    lengths: Array | None,
    reverse: bool,
    options: ScanOptions,
    *,
    num_feature_axes: int = 1,
    fresh: Array | None = None,
) -> tuple[Carry, Array]:
    """:func:`jaxrnn.scan` with a ``method`` other than ``"sequential"``.

    Inputs checked, time-major ``[T, *batch, *features]`` with
    ``num_feature_axes`` feature axes, padding zeroed; ``options`` checked
    (:func:`jaxrnn._checks.scan_options` refuses the options these methods
    cannot honour). ``fresh`` ``[T, *batch]``
    (:func:`jaxrnn._sequential.fresh_steps`): the steps that start from
    ``carry``, the initial carry, split along time like ``xs``.
    """
    axis = options.sequence_axis
    run: Callable[..., Any]
    if options.method == "associative":
        run = functools.partial(associative_scan, cell, reverse=reverse, sequence_axis=axis)
    else:
        run = functools.partial(
            _deer,
            cell,
            reverse=reverse,
            quasi=options.method == "quasi-deer",
            options=options.method_options or DEEROptions(),
            num_feature_axes=num_feature_axes,
            sequence_axis=axis,
        )
    outputs = 2 if options.method == "associative" else 3
    return _on_time_chunks(run, axis, params, xs, carry, lengths, outputs, fresh)[:2]


def _on_time_chunks(
    run: Callable[..., Any],
    axis: str | None,
    params: Params,
    xs: Array,
    carry: Carry,
    lengths: Array | None,
    num_outputs: int,
    fresh: Array | None = None,
) -> Any:
    """``run(params, xs, carry, lengths, fresh)``, each device on its chunk of the steps when split.

    Inside a ``shard_map`` over ``axis`` (or without ``axis``), ``xs`` is
    already this device's chunk and ``run`` is called as it is. Outside, the
    call is wrapped in a ``shard_map`` over ``axis`` of the current mesh:
    ``xs`` and ``fresh`` split along time, the rest replicated; what ``run`` returns is the
    final carry, the outputs, split along time like ``xs``, and (when
    ``num_outputs`` is 3) DEER's information; all but the outputs are the
    same on every device.
    """
    if axis is None or axis in jax.sharding.get_abstract_mesh().manual_axes:
        return run(params, xs, carry, lengths, fresh)
    split, whole = jax.sharding.PartitionSpec(axis), jax.sharding.PartitionSpec()
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.axis_types[mesh.axis_names.index(axis)] == jax.sharding.AxisType.Explicit:
        # Explicit sharding is part of the arrays' types: move them onto the layout
        # shard_map expects (time split over ``axis``, nothing else on ``axis``).
        params, carry, lengths = _respec(axis, (params, carry, lengths), time=False)
        xs, fresh = _respec(axis, (xs, fresh), time=True)
    in_specs = (whole, split, whole, whole, split)
    out_specs = (whole, split) if num_outputs == 2 else (whole, split, whole)
    return jax.shard_map(run, in_specs=in_specs, out_specs=out_specs, axis_names={axis})(
        params, xs, carry, lengths, fresh
    )


def _respec(axis: str, tree: Any, *, time: bool) -> Any:
    """``tree`` resharded: ``axis`` off every dimension, and on the first with ``time``."""

    def one(a: Array) -> Array:
        spec = list(jax.typeof(a).sharding.spec) + [None] * a.ndim
        spec = [_without(entry, axis) for entry in spec[: a.ndim]]
        if time:
            spec[0] = axis
        return jax.sharding.reshard(a, jax.sharding.PartitionSpec(*spec))

    return jax.tree.map(one, tree)


def _without(entry: Any, axis: str) -> Any:
    """One dimension's entry of a PartitionSpec without ``axis``."""
    if entry == axis:
        return None
    if isinstance(entry, tuple):
        rest = tuple(e for e in entry if e != axis)
        return rest or None
    return entry


def _no_steps(cell: Cell, params: Params, xs: Array, carry: Carry) -> tuple[Carry, Array]:
    """T = 0: the initial carry and no outputs (checked by the step, as the sequential scan)."""
    y = jax.eval_shape(cell.step, params, carry, jax.ShapeDtypeStruct(xs.shape[1:], xs.dtype))[1]
    return carry, jnp.zeros((0, *y.shape), y.dtype)


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
    fresh: Array | None = None,
    *,
    reverse: bool,
    sequence_axis: str | None = None,
) -> tuple[Carry, Array]:
    """``jaxrnn.scan(method="associative")`` (checked inputs, time-major ``xs``).

    With ``sequence_axis``, called inside a ``shard_map`` over it: ``xs`` and
    ``fresh`` are this device's chunk of the steps. A fresh step (a segment's
    first, :func:`jaxrnn._sequential.fresh_steps`) reads the initial state:
    its coefficients become ``a_t = 0``, ``b_t = a_t h_0 + b_t``.
    """
    spec = described_spec(cell)
    if not isinstance(spec, LinearSpec):
        why = (
            "its spec describes another step than cell.step (a replaced or wrapped step)"
            if isinstance(cell.spec, LinearSpec)
            else f"got a cell with spec {cell.spec!r}"
        )
        raise ValueError(
            "method: 'associative' needs a cell whose recurrence is linear in its carry, "
            "h_t = a_t * h_{t-1} + b_t (a cell with a jaxrnn.LinearSpec of its own step: "
            f"jaxrnn.mingru, jaxrnn.minlstm, jaxrnn.lru); {why}; use "
            "method='deer' or 'quasi-deer' for any other cell"
        )
    num_steps = xs.shape[0]
    if num_steps == 0:
        return _no_steps(cell, params, xs, carry)
    y_struct = jax.eval_shape(cell.step, params, carry, xs[0])[1]  # the step checks its inputs
    time = TimeAxis(sequence_axis, reverse)
    return _associative_core(spec, time, y_struct.dtype, params, xs, carry, lengths, fresh)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _associative_core(
    spec: LinearSpec,
    time: TimeAxis,
    y_dtype: Any,
    params: Params,
    xs: Array,
    carry: Carry,
    lengths: Array | None,
    fresh: Array | None,
) -> tuple[Carry, Array]:
    """The associative scan, compiled as one computation (also when called eagerly)."""
    num_steps = xs.shape[0]
    a, b = spec.coefficients(params, xs)
    h0 = spec.to_state(carry)
    dtype = jnp.result_type(a, b, h0)
    a, b = a.astype(dtype), b.astype(dtype)
    valid = None
    if lengths is not None:
        valid = valid_steps(lengths, num_steps, time.first_step(num_steps))[..., None]
        a, b = jnp.where(valid, a, 1), jnp.where(valid, b, 0)
    if fresh is not None:  # h_t = a_t h_0 + b_t: nothing of the state before reaches h_t
        restart = fresh[..., None]
        a, b = jnp.where(restart, 0, a), jnp.where(restart, a * h0[None] + b, b)
    if time.flipped:
        a, b = jnp.flip(a, 0), jnp.flip(b, 0)
    b = b.at[0].set(jnp.where(time.position() == 0, a[0] * h0 + b[0], b[0]))
    _, hs = time.scan(_linear_combine, (a, b))
    last = spec.to_carry(time.last(hs))
    final = jax.tree.map(lambda new, old: new.astype(old.dtype), last, carry)
    if time.flipped:
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


def _solve_linear(
    alg: _Algebra, time: TimeAxis, a: Array, b: Array, reverse: bool = False
) -> Array:
    """h_t = a_t h_{t-1} + b_t for all t (h_{-1} = 0; with ``reverse``, h_t = a_t h_{t+1} + b_t)."""
    return time.scan(functools.partial(_combine, alg), (a, b), reverse=reverse)[1]


@dataclasses.dataclass(frozen=True)
class _Problem:
    """What the solver needs besides arrays: the step, the carry layout, the static options.

    ``tol`` and ``max_iters`` are traced values (a new tolerance does not
    recompile); ``damping`` is static, as 0 and > 0 run different code, and
    so is ``check_adjoint``: whether quasi-DEER's backward pass raises when
    its adjoint iterations do not converge (``throw``). ``time`` says
    whether the arrays hold the whole (possibly flipped) sequence or one
    device's chunk of it.
    """

    step: Callable[..., Any]
    unravel: Callable[[Array], Carry]
    quasi: bool
    damping: float
    check_adjoint: bool
    time: TimeAxis

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
    """Every step at once: ``s_prev`` ``[T, N, D]``, ``xs`` ``[T, N, *features]`` -> states, ys."""
    step = functools.partial(_row_step, problem, params)
    return jax.vmap(jax.vmap(step))(s_prev, xs, valid)


class _Limits(NamedTuple):
    """When the iterations stop: tolerance (in the state dtype) and the most iterations (int32)."""

    tol: Array
    max_iters: Array


def _keep_going(limits: _Limits, iteration: Array, done: Array) -> Array:
    """Iterate while some sequence is not done and fewer than ``max_iters`` iterations ran."""
    return (iteration < limits.max_iters) & ~jnp.all(done)


def _max_abs(time: TimeAxis, v: Array) -> Array:
    """Per sequence: max |v| over the steps and entries of ``v`` ``[T, N, D]`` -> ``[N]``.

    NaN when ``v`` holds a NaN (XLA's max propagates it).
    """
    return time.max(jnp.max(jnp.abs(v), axis=(0, 2), initial=0.0))


def _relative(time: TimeAxis, error: Array, value: Array) -> Array:
    """The convergence test, per sequence: max |error| / max(1, max |value|) -> ``[N]``."""
    return _max_abs(time, error) / jnp.maximum(1.0, _max_abs(time, value))


def _passes(time: TimeAxis, limits: _Limits, error: Array, value: Array) -> Array:
    """``[N]`` booleans: the relative residual is at most ``tol`` (False for NaN or Inf)."""
    return _relative(time, error, value) <= limits.tol


def _jacobians(problem: _Problem, rows: Callable[[Array], Array], like: Array) -> Array:
    """The Jacobians (or diagonals) from ``rows(e)``, a product with ``e`` broadcast over T, N.

    ``rows`` is a JVP (giving columns) or a VJP (giving rows); the diagonal is
    the same either way, and the caller transposes a dense result as needed.
    """
    eye = jnp.eye(like.shape[-1], dtype=like.dtype)

    def product(e: Array) -> Array:
        return rows(problem.time.varying(jnp.broadcast_to(e, like.shape)))

    if problem.quasi:
        # One product per column, one after the other: O(T·N·D) memory.
        def diagonal_entry(e: Array) -> Array:
            e_full = problem.time.varying(jnp.broadcast_to(e, like.shape))
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
    alg: _Algebra,
    time: TimeAxis,
    jac: Array,
    u: Array,
    guess: Array,
    damping: float,
    valid: Array | None = None,
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
    _, mean, cov, _, _ = time.scan(functools.partial(_filter_combine, alg), elements)
    # Smoother: h_t = G_t h_{t+1} + (m_t − G_t (J_{t+1} m_t + u_{t+1})),
    # with the gain G_t = P_t J_{t+1}^T (J_{t+1} P_t J_{t+1}^T + I)^{-1}; at the last
    # step J_{t+1} = 0 and u_{t+1} = 0 (what ``time.next`` gives there): G = 0, h = m.
    jac_next, u_next = time.next(jac), time.next(u)
    jp = alg.mm(jac_next, cov)
    gain = alg.tr(alg.solve(alg.mm(jp, alg.tr(jac_next)) + alg.eye(jp), jp))
    offset = mean - alg.mv(gain, alg.mv(jac_next, mean) + u_next)
    return _solve_linear(alg, time, gain, offset, reverse=True)


def _frozen(done: Array, old: Array, new: Array) -> Array:
    """``new`` ``[T, N, D]``, except ``old`` for the sequences already ``done`` ``[N]``."""
    return jnp.where(done[None, :, None], old, new)


def _before(time: TimeAxis, s0: Array, states: Array, fresh: Array) -> Array:
    """The state before every step: ``s0`` at the ``fresh`` steps ``[T, N]``, else the previous."""
    return jnp.where(fresh[..., None], s0, time.previous(s0, states))


def _newton(
    problem: _Problem,
    limits: _Limits,
    params: Params,
    s0: Array,
    xs: Array,
    valid: Array,
    fresh: Array,
) -> tuple[Array, Array]:
    """The trajectory ``[T, N, D]`` by (quasi-)Newton iterations, and each sequence's count ``[N]``.

    The N Newton systems are independent (each sequence's Jacobians are its
    own), so each sequence is judged on its own: once its guess solves the
    recurrence to ``tol`` (its residual is free from the linearisation), it
    takes that iteration's better trajectory and is then left as it is,
    while the others go on. A NaN residual never passes, so a sequence with
    NaN iterates until ``max_iters`` without touching the others.
    """
    alg, time = problem.algebra, problem.time

    def body(state: tuple[Array, Array, Array, Array]) -> tuple[Array, Array, Array, Array]:
        guess, count, done, iteration = state
        s_prev = _before(time, s0, guess, fresh)
        f, jvp = jax.linearize(lambda s: _all_steps(problem, params, s, xs, valid)[0], s_prev)
        jac = _jacobians(problem, jvp, s_prev)
        # A fresh step (the first, a segment's first) starts from the known s0: its new
        # state is f exactly, and its Jacobian with respect to the state before is 0.
        u = jnp.where(fresh[..., None], f, f - alg.mv(jac, s_prev))
        jac = jnp.where(fresh.reshape(fresh.shape + (1,) * (jac.ndim - 2)), 0, jac)
        if problem.damping > 0:
            new = _elk_step(alg, time, jac, u, guess, problem.damping, valid)
        else:
            new = _solve_linear(alg, time, jac, u)
        new = _frozen(done, guess, new)
        count = count + jnp.where(done, 0, 1).astype(count.dtype)
        return new, count, done | _passes(time, limits, f - guess, guess), iteration + 1

    num_rows = s0.shape[0]
    guess = time.varying(jnp.broadcast_to(s0, (xs.shape[0], *s0.shape)))
    init = (guess, jnp.zeros(num_rows, jnp.int32), jnp.zeros(num_rows, bool), jnp.int32(0))
    states, count, _, _ = jax.lax.while_loop(
        lambda st: _keep_going(limits, st[3], st[2]), body, init
    )
    return states, count


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _solve(
    problem: _Problem,
    limits: _Limits,
    params: Params,
    s0: Array,
    xs: Array,
    valid: Array,
    fresh: Array,
) -> tuple[Array, Array, Array, Array, Array]:
    """The fixed point h_t = f(h_{t−1}, x_t), its outputs, and per sequence: count, residual, flag.

    The last three are ``[N]``: iterations, residual, and whether it converged.
    At the ``fresh`` steps ``[T, N]`` (the first, and each segment's first),
    h_{t−1} is ``s0``.

    Differentiated implicitly at the fixed point (``limits``, ``valid``,
    ``fresh``, the count, the residual and the flags get no gradient).
    """
    return _solve_fwd(problem, limits, params, s0, xs, valid, fresh)[0]


def _solve_fwd(
    problem: _Problem,
    limits: _Limits,
    params: Params,
    s0: Array,
    xs: Array,
    valid: Array,
    fresh: Array,
) -> tuple[tuple[Array, Array, Array, Array, Array], Any]:
    states, count = _newton(problem, limits, params, s0, xs, valid, fresh)
    time = problem.time
    new_states, ys = _all_steps(problem, params, _before(time, s0, states, fresh), xs, valid)
    # Judged on the trajectory returned, not on the last guess tested.
    error = new_states - states
    residual, converged = _max_abs(time, error), _passes(time, limits, error, states)
    residuals = (limits, params, s0, xs, valid, fresh, states)
    return (states, ys, count, residual, converged), residuals


def _solve_bwd(problem: _Problem, residuals: Any, cotangents: Any) -> Any:
    """The adjoint λ_t = ḡ_t + J_{t+1}^T λ_{t+1} + (∂y_{t+1}/∂h_t)^T ȳ_{t+1}, then one VJP.

    With g the states' cotangent and ȳ the outputs': one linearisation of every
    step at the fixed point gives every product needed.
    """
    limits, params, s0, xs, valid, fresh, states = residuals
    g_states, g_ys = cotangents[:2]
    alg, time = problem.algebra, problem.time
    s_prev = _before(time, s0, states, fresh)
    _, vjp = jax.vjp(lambda p, s, x: _all_steps(problem, p, s, x, valid), params, s_prev, xs)
    no_states, no_ys = jnp.zeros_like(states), jnp.zeros_like(g_ys)

    def to_state_before(v: Array) -> Array:
        """Each step's ``s_prev`` cotangent as the previous state's: none at the fresh steps."""
        return jnp.where(fresh[..., None], 0, v)

    def transpose_product(lam: Array) -> Array:
        """Every J_t^T λ_t, as rows of the adjoint system (0 at the fresh steps)."""
        return to_state_before(vjp((lam, no_ys))[1])

    # The outputs' cotangent reaches the state before each step.
    g = g_states + time.next(to_state_before(vjp((no_states, g_ys))[1]))
    # A VJP with e_i gives row i of J_t: the rows, stacked on the last axis, are J^T.
    jac_t = _jacobians(problem, transpose_product, s_prev)
    a = time.next(jac_t)  # λ_t depends on λ_{t+1} through J_{t+1}^T
    if not problem.quasi:
        lam = _solve_linear(alg, time, a, g, reverse=True)
    else:

        def body(state: tuple[Array, Array, Array]) -> tuple[Array, Array, Array]:
            lam, done, iteration = state
            # Exact J^T λ from the VJP; only the implicit part uses the diagonal.
            exact = g + time.next(transpose_product(lam))
            new = _solve_linear(alg, time, a, exact - time.next(jac_t * lam), reverse=True)
            new = _frozen(done, lam, new)
            return new, done | _passes(time, limits, exact - lam, lam), iteration + 1

        init = (jnp.zeros_like(g), jnp.zeros(g.shape[1], bool), jnp.int32(0))
        lam = jax.lax.while_loop(lambda st: _keep_going(limits, st[2], st[1]), body, init)[0]
        if problem.check_adjoint:
            error = g + time.next(transpose_product(lam)) - lam
            relative = _relative(time, error, lam)
            # A NaN cotangent gives NaN gradients, visible as such: only finite misses raise.
            missed = jnp.isfinite(relative) & (relative > limits.tol)
            lam = _tie(
                lam,
                _host_check(
                    functools.partial(_adjoint_message, problem.damping),
                    missed,
                    relative,
                    limits.tol,
                    limits.max_iters,
                ),
            )
    p_bar, s_prev_bar, x_bar = vjp((lam, g_ys))
    # The fresh steps read s0 (on every chunk that has one); params are read by every chunk.
    s0_bar = jnp.sum(jnp.where(fresh[..., None], s_prev_bar, 0), axis=0)
    p_bar, s0_bar = time.sum_cotangent((p_bar, s0_bar), (params, s0))
    return None, p_bar, s0_bar, x_bar, None, None


_solve.defvjp(_solve_fwd, _solve_bwd)


# ---------------------------------------------------------------------------- not converged


def _not_converged_message(
    quasi: bool,
    tol: float,
    max_iters: int,
    num_steps: int,
    damping: float,
    converged: np.ndarray,
    residual: np.ndarray,
) -> str:
    """What a DEER run that did not converge says: how many sequences, residual, what to try."""
    converged, residual = np.asarray(converged, bool), np.asarray(residual)
    missed = ~converged
    worst = residual[missed]
    non_finite = int((~np.isfinite(worst)).sum())
    if converged.ndim == 0:
        which = "the sequence has"
    else:
        first = tuple(int(i) for i in np.argwhere(missed)[0])
        which = (
            f"{int(missed.sum())} of {converged.size} sequences (the first at batch index "
            f"{first[0] if len(first) == 1 else first}) have"
        )
    largest = float(np.nanmax(worst)) if non_finite < worst.size else float("nan")
    text = (
        f"{'quasi-DEER' if quasi else 'DEER'} did not converge: {which} not reached "
        f"tol={tol:.3g} (relative to max(1, max|h|)) after max_iters={max_iters} iterations "
        f"(T={num_steps}{f', damping={damping:g}' if damping else ''}); the largest residual "
        f"max_t |f(h_(t-1), x_t) - h_t| among them is {largest:.3g}"
    )
    if non_finite:
        text += (
            f", and {non_finite} of them {'have' if non_finite > 1 else 'has'} a NaN or Inf "
            "residual (NaN or Inf in the inputs, carry or params, or a trajectory that diverges)"
        )
    return text + (
        f". Try {'another damping' if damping else 'damping > 0 (ELK)'}, a larger max_iters "
        "(at most T), or method='sequential'; throw=False (jaxrnn.DEEROptions(throw=False) for "
        "jaxrnn.scan) returns the result as it is, with DEERInfo.converged saying which "
        "sequences converged."
    )


def _adjoint_message(damping: float, missed: Any, relative: Any, tol: Any, max_iters: Any) -> str:
    missed, relative = np.asarray(missed, bool), np.asarray(relative)
    return (
        f"quasi-DEER's backward pass did not converge: the adjoint iterations of "
        f"{int(missed.sum())} of {missed.size} sequences end with a relative residual of "
        f"{float(relative[missed].max()):.3g} > tol={float(np.ravel(tol)[0]):.3g} after "
        f"max_iters={int(np.ravel(max_iters)[0])} iterations"
        f"{f' (damping={damping:g})' if damping else ''}. Try a larger max_iters (at most "
        "T), method='deer' or method='sequential'; throw=False skips this check."
    )


def _host_check(message: Callable[..., str], failed: Array, *context: Array) -> Array:
    """A True scalar from the host, or ``RuntimeError(message(...))`` if any of ``failed``.

    :func:`jax.pure_callback`: no effect to forbid it anywhere, one call for a
    whole ``vmap`` (the arrays gain its axes); it runs only if its result is
    used, hence :func:`_tie`. Its arguments get no gradient.
    """

    def check(failed: np.ndarray, *args: Any) -> np.ndarray:
        *context, token = args
        if np.any(failed):
            raise RuntimeError(message(failed, *context))
        return np.asarray(token)

    failed, context = jax.lax.stop_gradient((failed, context))
    return jax.pure_callback(
        check,
        jax.ShapeDtypeStruct((), jnp.bool_),
        failed,
        *context,
        jnp.ones((), jnp.bool_),
        vmap_method="broadcast_all",
    )


def _tie(tree: Any, ok: Array) -> Any:
    """``tree`` unchanged, but computed after the check ``ok`` (so that it runs)."""
    return jax.tree.map(lambda a: jnp.where(ok, a, jnp.zeros_like(a)), tree)


def _raise_unless_converged(
    final: Carry, ys: Array, info: DEERInfo, message: Callable[..., str]
) -> tuple[Carry, Array, DEERInfo]:
    """Raise a RuntimeError unless every sequence converged.

    At once when ``info`` is concrete, else when the traced computation runs.
    """
    try:
        converged = np.asarray(info.converged)
    except jax.errors.TracerArrayConversionError:
        converged = None
    if converged is not None:
        if not converged.all():
            raise RuntimeError(message(converged, np.asarray(info.residual)))
        return final, ys, info
    ok = _host_check(
        lambda failed, residual: message(~failed, residual), ~info.converged, info.residual
    )
    return _tie(final, ok), _tie(ys, ok), info._replace(residual=_tie(info.residual, ok))


# ---------------------------------------------------------------------------- driver


def _check_options(
    quasi: Any, options: DEEROptions, num_steps: int, dtype: Any
) -> tuple[float, int, float, bool]:
    """Validated (tol, max_iters, damping, throw), with the defaults filled in."""
    tol, max_iters, damping, throw = options
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
    if not isinstance(throw, bool):
        raise TypeError(f"throw: expected a bool, got {throw!r}")
    return float(tol), min(max_iters, num_steps), float(damping), throw


def _deer(
    cell: Cell,
    params: Params,
    xs: Array,
    carry: Carry,
    lengths: Array | None,
    fresh: Array | None,
    reverse: bool,
    quasi: bool,
    options: DEEROptions,
    num_feature_axes: int = 1,
    sequence_axis: str | None = None,
) -> tuple[Carry, Array, DEERInfo]:
    """:func:`deer` on checked inputs, time-major ``[T, *batch, *features]``.

    With ``sequence_axis``, called inside a ``shard_map`` over it: ``xs`` and
    ``fresh`` are this device's chunk of the steps. ``fresh``
    (:func:`jaxrnn._sequential.fresh_steps`): the steps that start from the
    initial carry.
    """
    time = TimeAxis(sequence_axis, reverse)
    num_steps, split = xs.shape[0], xs.ndim - num_feature_axes
    total_steps = num_steps * time.shards()
    batch_shape, feature_shape = xs.shape[1:split], xs.shape[split:]
    rows = math.prod(batch_shape)
    carry_rows = jax.tree.map(lambda c: c.reshape(rows, *c.shape[len(batch_shape) :]), carry)
    template = jax.tree.map(lambda c: jnp.zeros(c.shape[1:], c.dtype), carry_rows)
    flat, unravel = ravel_pytree(template)
    tol, max_iters, damping, throw = _check_options(quasi, options, max(total_steps, 1), flat.dtype)
    if num_steps == 0:
        final, ys = _no_steps(cell, params, xs, carry)
        info = DEERInfo(
            jnp.zeros(batch_shape, jnp.int32),
            jnp.zeros(batch_shape, flat.dtype),
            jnp.ones(batch_shape, bool),
        )
        return final, ys, info
    jax.eval_shape(cell.step, params, carry, xs[0])  # the step checks its inputs
    problem = _Problem(cell.step, unravel, quasi, damping, quasi and throw, time)
    limits = _Limits(jnp.asarray(tol, flat.dtype), jnp.asarray(max_iters, jnp.int32))
    x_rows = xs.reshape(num_steps, rows, *feature_shape)
    if lengths is None:
        valid = jnp.ones((num_steps, rows), bool)
    else:
        valid = valid_steps(lengths.reshape(rows), num_steps, time.first_step(num_steps))
    # The steps that read the initial state: each segment's first, and the sequence's first.
    first = jnp.zeros((num_steps, rows), bool).at[0].set(time.position() == 0)
    if time.flipped:
        first = jnp.flip(first, 0)  # flipped back in _deer_rows: the first processed step
    if fresh is not None:
        first = first | fresh.reshape(num_steps, rows)
    final_rows, ys, count, residual, converged = _deer_rows(
        problem, limits, params, carry_rows, x_rows, valid, first
    )
    final = jax.tree.map(lambda f, c: f.reshape(c.shape), final_rows, carry)
    ys = ys.reshape(num_steps, *batch_shape, *ys.shape[2:])
    info = DEERInfo(*(a.reshape(batch_shape) for a in (count, residual, converged)))
    if throw:
        message = functools.partial(
            _not_converged_message, quasi, tol, max_iters, total_steps, damping
        )
        final, ys, info = _raise_unless_converged(final, ys, info, message)
    return final, ys, info


@functools.partial(jax.jit, static_argnums=(0,))
def _deer_rows(
    problem: _Problem,
    limits: _Limits,
    params: Params,
    carry_rows: Carry,
    x_rows: Array,
    valid: Array,
    fresh: Array,
) -> tuple[Carry, Array, Array, Array, Array]:
    """DEER on ``N`` rows, compiled as one computation (also when called eagerly)."""
    s0 = jax.vmap(lambda c: ravel_pytree(c)[0])(carry_rows)
    flipped = problem.time.flipped  # reverse: each chunk flipped, and the chunks' order
    if flipped:
        x_rows, valid, fresh = jnp.flip(x_rows, 0), jnp.flip(valid, 0), jnp.flip(fresh, 0)
    states, ys, count, residual, converged = _solve(
        problem, limits, params, s0, x_rows, valid, fresh
    )
    if flipped:
        ys = jnp.flip(ys, 0)
    final = jax.vmap(problem.unravel)(problem.time.last(states))
    return final, ys, count, jax.lax.stop_gradient(residual), converged

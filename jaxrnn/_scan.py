"""`jaxrnn.scan`: run a cell over a sequence, with masking and direction."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn import _fused
from jaxrnn._cell import (
    Array,
    Carry,
    Cell,
    Params,
    Shape,
    check_positive_int,
    scan_in_chunks,
)

if TYPE_CHECKING:
    from jaxrnn._parallel import DEEROptions


def scan(
    cell: Cell,
    params: Params,
    xs: Array,
    *,
    carry: Carry | None = None,
    lengths: Array | None = None,
    reverse: bool = False,
    time_major: bool = True,
    unroll: int | bool = 1,
    truncate: int | None = None,
    checkpoint: int | None = None,
    backward: Literal["fused", "autodiff"] = "fused",
    method: Literal["sequential", "associative", "deer", "quasi-deer"] = "sequential",
    method_options: DEEROptions | None = None,
) -> tuple[Carry, Array]:
    """Run ``cell`` over the time axis of ``xs``.

    Without ``lengths`` this is exactly::

      for t in range(T):                      # t = T-1 … 0 with reverse=True
          carry, ys[t] = cell.step(params, carry, xs[t])

    With ``lengths`` (sequences right-padded), step ``t`` of sequence ``b`` is
    skipped when ``t >= lengths[b]``: its carry is left unchanged and its
    output is exactly zero. The final carry is therefore each sequence's carry
    after its last valid step, and ``reverse=True`` walks each sequence from
    its own last valid step back to step 0, so padding stays at the end (the
    semantics of flax's ``flip_sequences`` and PyTorch's ``PackedSequence``).

    Args:
      cell: the :class:`Cell` to run.
      params: the cell's params, from ``cell.init``.
      xs: inputs ``[T, *batch, I]``, or ``[*batch, T, I]`` with ``time_major=False``.
      carry: the initial carry for ``batch`` (zeros when None), structured like
        ``cell.initial_carry(batch)``.
      lengths: integer array of shape ``batch`` with values in [0, T]: the
        number of valid steps of each sequence. Values are checked when they
        are concrete; under ``jit`` they are not, and values outside [0, T]
        act as the nearest end of that range.
      reverse: run from the last valid step to the first; outputs keep the
        input's time order.
      time_major: whether the time axis of ``xs`` (and of the outputs) is the
        first axis or the one before the features.
      unroll: passed to :func:`jax.lax.scan`.
      truncate: truncated BPTT, BPTT(k) of Williams & Peng 1990: the gradient
        through the carry is stopped every ``truncate`` steps of each
        sequence (counted from where it starts, its last valid step when
        ``reverse``), so each chunk of k steps is differentiated on its own
        while the forward pass carries the state across. The initial carry
        still gets the first chunk's gradient. ``truncate >= T`` is full BPTT.
      checkpoint: checkpointing through time: only every ``checkpoint``-th
        carry is kept for the backward pass, which recomputes each chunk of
        steps from its first carry. Memory for the backward pass grows like
        T/k + k instead of T, for about one more forward pass of compute;
        gradients are unchanged.
      backward: how gradients are computed. ``"fused"`` (default): for the
        built-in cells in float32 or float64 (LSTM without projection),
        without ``truncate``, one sequence-level custom VJP
        with the input projection hoisted out of the loop, one recurrent
        matmul per step each way, and every weight gradient computed as one
        matmul after the loop (cuDNN's structure); every other case (user
        cells, bfloat16, ``truncate``) uses autodiff. With ``checkpoint``, each
        chunk of steps is one fused custom VJP under :func:`jax.checkpoint`.
        ``"autodiff"``: plain autodiff through :func:`jax.lax.scan`. Both give
        the same gradients to rounding and both support reverse-over-reverse
        (e.g. Hessian-vector products by ``jax.grad`` of ``jax.grad``).
        Forward mode (``jax.jvp``, ``jax.jacfwd``, RTRL) needs
        ``backward="autodiff"``: JAX raises a ``TypeError`` for forward mode
        through a custom VJP.
      method: how the T steps are computed; every method gives the same
        carry, outputs and gradients (to rounding, or to the tolerance of
        DEER), with ``lengths`` and ``reverse``. ``"sequential"`` (default):
        one step after another, as above. ``"associative"``: for a cell whose
        recurrence is linear in its carry (:func:`jaxrnn.mingru`,
        :func:`jaxrnn.minlstm`, :func:`jaxrnn.lru`, any cell with a
        :class:`jaxrnn.LinearSpec`), all steps at once by
        :func:`jax.lax.associative_scan`, O(log T) sequential depth; a
        ValueError for any other cell. ``"deer"``: any cell, by Newton
        iterations on the whole trajectory; ``"quasi-deer"``: the same with
        diagonal Jacobians. See :func:`jaxrnn.deer`, which also returns the
        convergence information. ``truncate`` and ``checkpoint`` are for
        ``"sequential"`` only, and ``unroll`` has no effect on the other
        methods. Their gradients are autodiff for ``"associative"`` (with
        either ``backward``) and implicit at the fixed point for DEER, which
        supports first-order reverse mode only (``backward="autodiff"`` is
        an error there).
      method_options: a :class:`jaxrnn.DEEROptions` (tolerance, maximum
        number of iterations, damping) for ``"deer"`` and ``"quasi-deer"``;
        None for the defaults.

    Returns:
      ``(final_carry, ys)`` with ``ys`` of shape ``[T, *batch, O]`` (or
      ``[*batch, T, O]``).

    Example:
      >>> import jax, jax.numpy as jnp, jaxrnn
      >>> cell = jaxrnn.lstm(16)
      >>> params = cell.init(jax.random.key(0), input_size=3)
      >>> xs = jnp.ones((4, 10, 3))  # [B, T, I]
      >>> carry, ys = jaxrnn.scan(cell, params, xs, lengths=jnp.array([10, 7, 1, 0]),
      ...                         time_major=False)
      >>> ys.shape, carry.h.shape
      ((4, 10, 16), (4, 16))
      >>> bool((ys[1, 7:] == 0).all()), bool((carry.h[3] == 0).all())
      (True, True)

      Long sequences: truncated BPTT in chunks of 50 steps, storing only every
      100th carry for the backward pass.

      >>> loss = lambda p, xs: jaxrnn.scan(cell, p, xs, truncate=50, checkpoint=100)[1].sum()
      >>> grads = jax.grad(loss)(params, jnp.ones((1000, 2, 3)))

      The same function, computed in parallel over time by Newton's method (DEER):

      >>> _, ys_deer = jaxrnn.scan(cell, params, xs, lengths=jnp.array([10, 7, 1, 0]),
      ...                          time_major=False, method="deer")
      >>> bool(jnp.allclose(ys_deer, ys, atol=1e-4))
      True
    """
    xs = check_xs(xs)
    batch_axis_count = xs.ndim - 2
    if not time_major:
        xs = jnp.moveaxis(xs, -2, 0)
    num_steps, batch_shape = xs.shape[0], xs.shape[1:-1]
    carry = check_carry(cell, carry, batch_shape, default_dtype(params, xs))
    lengths = check_lengths(lengths, batch_shape, num_steps)
    if not (isinstance(unroll, bool) or (isinstance(unroll, int) and unroll >= 1)):
        raise ValueError(f"unroll: expected a positive integer or a bool, got {unroll!r}")
    for name, value in (("truncate", truncate), ("checkpoint", checkpoint)):
        if value is not None:
            check_positive_int(value, name)
    if backward not in ("fused", "autodiff"):
        raise ValueError(f"backward: expected 'fused' or 'autodiff', got {backward!r}")
    if method != "sequential" or method_options is not None:
        from jaxrnn import _parallel  # imports this module

        final, ys = _parallel.parallel_scan(
            method,
            method_options,
            cell,
            params,
            xs,
            carry,
            lengths,
            reverse,
            truncate=truncate,
            checkpoint=checkpoint,
            backward=backward,
        )
        if not time_major:
            ys = jnp.moveaxis(ys, 0, batch_axis_count)
        return final, ys
    if backward == "fused" and truncate is None and _fused.supports(cell, params, xs, carry):
        # The cell's own step checks its inputs; the fused path does not call it.
        jax.eval_shape(cell.step, params, carry, xs[0])
        final, ys = _fused.fused_scan(cell, params, xs, carry, lengths, reverse, unroll, checkpoint)
        if not time_major:
            ys = jnp.moveaxis(ys, 0, batch_axis_count)
        return final, ys

    if checkpoint is not None and num_steps % checkpoint:
        # Pad to whole chunks; the padded steps are masked out like any padding.
        pad = jnp.zeros((-num_steps % checkpoint, *xs.shape[1:]), xs.dtype)
        xs = jnp.concatenate([xs, pad])
        if lengths is None:
            lengths = jnp.full(batch_shape, num_steps, jnp.int32)
    body = functools.partial(_step, cell.step, params, lengths, truncate, reverse, num_steps)
    inputs = (jnp.arange(xs.shape[0], dtype=jnp.int32), xs)
    try:
        if checkpoint is None:
            final, ys = jax.lax.scan(body, carry, inputs, reverse=reverse, unroll=unroll)
        else:

            def run_chunk(carry: Carry, chunk: Any) -> tuple[Carry, Array]:
                return jax.lax.scan(body, carry, chunk, reverse=reverse, unroll=unroll)

            final, ys = scan_in_chunks(run_chunk, carry, inputs, checkpoint, reverse, num_steps)
    except (ValueError, TypeError) as e:
        e.add_note(f"(raised by cell.step on one time step of xs, of shape {xs.shape[1:]})")
        raise
    if not time_major:
        ys = jnp.moveaxis(ys, 0, batch_axis_count)
    return final, ys


def _step(
    step: Any,
    params: Params,
    lengths: Array | None,
    truncate: int | None,
    reverse: bool,
    num_steps: int,
    carry: Carry,
    inputs: tuple[Array, Array],
) -> tuple[Carry, Array]:
    """One step of :func:`scan`: truncation at chunk starts, the cell, then the mask."""
    t, x = inputs

    def where(mask: Array, new: Array, old: Array) -> Array:
        mask = mask.reshape(mask.shape + (1,) * (new.ndim - mask.ndim))
        return jnp.where(mask, new, old)

    if truncate is not None:
        # Index of step t in its sequence's processing order.
        end = num_steps if lengths is None else lengths
        index = end - 1 - t if reverse else t
        cut = (index > 0) & (index % truncate == 0)
        new_carry, y = step(
            params, jax.tree.map(lambda c: where(cut, jax.lax.stop_gradient(c), c), carry), x
        )
    else:
        new_carry, y = step(params, carry, x)
    if lengths is None:
        return new_carry, y
    valid = t < lengths
    new_carry = jax.tree.map(lambda new, old: where(valid, new, old), new_carry, carry)
    return new_carry, where(valid, y, jnp.zeros_like(y))


def check_xs(xs: Any, name: str = "xs") -> Array:
    """Return ``xs`` as a floating array of rank ≥ 2, or raise naming ``name``."""
    if not hasattr(xs, "shape"):
        xs = jnp.asarray(xs)
    if xs.ndim < 2:
        raise ValueError(
            f"{name}: expected shape [T, *batch, input_size] (rank >= 2), "
            f"got shape {tuple(xs.shape)}"
        )
    if not jnp.issubdtype(xs.dtype, jnp.floating):
        raise TypeError(f"{name}: expected a floating dtype, got {xs.dtype}")
    return jnp.asarray(xs)


def default_dtype(params: Params, xs: Array) -> Any:
    """The dtype of a default carry: the result type of ``xs`` and the params."""
    return jnp.result_type(xs, *jax.tree.leaves(params))


def check_carry(
    cell: Cell, carry: Carry | None, batch_shape: Shape, dtype: Any, name: str = "carry"
) -> Carry:
    """Return ``carry`` (zeros when None) after checking it against ``cell.initial_carry``."""
    expected = jax.eval_shape(lambda: cell.initial_carry(batch_shape, dtype))
    if carry is None:
        return cell.initial_carry(batch_shape, dtype)
    check_like(carry, expected, name)
    return jax.tree.map(jnp.asarray, carry)


def check_like(tree: Any, expected: Any, name: str) -> None:
    """Raise unless ``tree`` has the structure and leaf shapes of ``expected``."""
    got_def: Any = jax.tree.structure(tree)
    want_def: Any = jax.tree.structure(expected)
    if got_def != want_def:
        raise TypeError(f"{name}: expected a pytree of structure {want_def}, got {got_def}")
    got = jax.tree_util.tree_flatten_with_path(tree)[0]
    for (path, leaf), want in zip(got, jax.tree.leaves(expected), strict=True):
        where = name + jax.tree_util.keystr(path)
        if not hasattr(leaf, "shape") or tuple(leaf.shape) != tuple(want.shape):
            shape = tuple(leaf.shape) if hasattr(leaf, "shape") else type(leaf).__name__
            raise ValueError(f"{where}: expected shape {tuple(want.shape)}, got {shape}")
        if not jnp.issubdtype(leaf.dtype, jnp.floating):
            raise TypeError(f"{where}: expected a floating dtype, got {leaf.dtype}")


def check_lengths(lengths: Any, batch_shape: Shape, num_steps: int) -> Array | None:
    """Return ``lengths`` as an integer array of shape ``batch_shape``, or raise."""
    if lengths is None:
        return None
    if not hasattr(lengths, "dtype"):
        lengths = np.asarray(lengths)
    if not jnp.issubdtype(lengths.dtype, jnp.integer):
        raise TypeError(f"lengths: expected an integer dtype, got {lengths.dtype}")
    if tuple(lengths.shape) != tuple(batch_shape):
        raise ValueError(
            f"lengths: expected one length per sequence, shape {tuple(batch_shape)}, "
            f"got shape {tuple(lengths.shape)}"
        )
    try:
        values = np.asarray(lengths)
    except jax.errors.TracerArrayConversionError:
        values = None
    if values is not None and values.size and (values.min() < 0 or values.max() > num_steps):
        raise ValueError(
            f"lengths: expected values in [0, T={num_steps}], "
            f"got values in [{values.min()}, {values.max()}]"
        )
    return jnp.asarray(lengths)

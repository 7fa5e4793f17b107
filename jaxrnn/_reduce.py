"""`jaxrnn.scan_reduce`: a sequence's per-step losses summed inside the time loop.

:func:`jaxrnn.scan` returns every output; a loss at every step of a very long
sequence needs them only one chunk of steps at a time. This module runs the
same execution paths as :mod:`jaxrnn._scan` over chunks of steps and reduces
each chunk's outputs before the next one runs, so no ``[T, *batch, O]`` array
exists in the forward or the backward pass when the chunks are checkpointed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Unpack

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike
from jaxtyping import Shaped

from jaxrnn import _fused, _parallel
from jaxrnn._cell import Array, Carry, Cell, Params, Shape
from jaxrnn._checks import ScanKwargs, ScanOptions, check_scan_args
from jaxrnn._sequential import chunk_runner, fresh_steps, scan_in_chunks, where_valid


def scan_reduce(
    cell: Cell,
    params: Params,
    xs: Shaped[ArrayLike, "..."],
    fn: Callable[[Array, Any], Any],
    targets: Any = None,
    *,
    carry: Carry | None = None,
    lengths: Array | None = None,
    reverse: bool = False,
    time_major: bool = True,
    num_feature_axes: int = 1,
    options: ScanOptions | None = None,
    resets: Shaped[ArrayLike, "..."] | None = None,
    **kwargs: Unpack[ScanKwargs],
) -> tuple[Carry, Any]:
    """Run ``cell`` over ``xs`` like :func:`jaxrnn.scan` and sum ``fn`` of each step's output.

    Computes, without ever holding the outputs of all steps::

      carry, ys = jaxrnn.scan(cell, params, xs, carry=carry, lengths=lengths, ...)
      totals = sum over valid steps t of fn(ys[t], targets[t])   # leaf by leaf

    ``fn`` maps one step's output ``y_t`` ``[*batch, O]`` and that step's
    slice of ``targets`` to a pytree of per-sequence values, each with the
    batch shape as its leading axes (a loss ``[*batch]``, a count of correct
    predictions, ...); ``totals`` holds their sums over the steps of each
    sequence. A readout layer belongs in ``fn``: it may close over any
    arrays, and gradients reach them (``jax.grad`` of a function that builds
    ``fn`` from its params).

    Memory: the steps run in chunks of ``checkpoint`` steps; a chunk's
    outputs, its ``fn`` values and its backward residuals exist only while
    that chunk runs, and the backward pass keeps one carry per chunk. A
    gradient therefore needs O(T/k · carry + k · residuals) memory with
    ``checkpoint=k``, instead of :func:`jaxrnn.scan`'s ``[T, *batch, O]``
    outputs and their cotangent on top of the residuals. Without
    ``checkpoint`` the whole sequence is one chunk. The methods
    ``"associative"``, ``"deer"`` and ``"quasi-deer"`` work on the whole
    sequence at once and give the same result without the memory bound.

    Padded steps (``t >= lengths[b]``) contribute exactly zero: their
    ``fn`` values are discarded and their inputs and targets are set to zero
    before any step runs, so NaN or Inf in the padding reaches no gradient.
    ``reverse``, ``truncate``, ``backward`` and every other option mean what
    they mean in :func:`jaxrnn.scan`; the fused path serves the built-in
    cells chunk by chunk. With ``sequence_axis`` inside a ``shard_map``,
    ``xs`` and ``targets`` are this device's chunk of the steps and
    ``totals`` are the sums over the whole sequences, the same on every device.

    Args:
      cell: the :class:`Cell` to run.
      params: the cell's params.
      xs: inputs ``[T, *batch, I]`` (``[*batch, T, I]`` with ``time_major=False``).
      fn: ``fn(y_t, targets_t) -> pytree`` of arrays whose leading axes are
        the batch shape; ``targets_t`` is None when ``targets`` is None.
      targets: None, or a pytree of per-step arrays laid out like ``xs``
        (``[T, *batch, ...]``, or ``[*batch, T, ...]`` with
        ``time_major=False``): labels, regression targets, weights.
      carry: the initial carry (zeros when None).
      lengths: integer array of shape ``batch`` with values in [0, T].
      reverse: run each sequence from its last valid step to its first.
      time_major: the layout of ``xs`` and ``targets``.
      num_feature_axes: how many trailing axes of ``xs`` are one step's input.
      options: a :class:`jaxrnn.ScanOptions`; keywords override its fields.
      resets: bool array ``[T, *batch]`` (``[*batch, T]`` with
        ``time_major=False``), True where a step starts a new segment from
        the initial carry, as for :func:`jaxrnn.scan`; the totals still sum
        every valid step of each sequence, across its segments.
      **kwargs: ``truncate``, ``checkpoint``, ``backward``, ``unroll``,
        ``method``, ``method_options`` as in :func:`jaxrnn.scan`.

    Returns:
      ``(final_carry, totals)``: the carry :func:`jaxrnn.scan` returns and
      ``fn``'s values summed over each sequence's valid steps.

    Example:
      A next-step cross-entropy with a linear head over 10 000 steps, whose
      gradient keeps no ``[T, B, V]`` logits (nor ``[T, B, H]`` outputs):

      >>> import jax, jax.numpy as jnp, jaxrnn
      >>> cell = jaxrnn.lstm(16)
      >>> params = {"rnn": cell.init(jax.random.key(0), input_size=1), "w": jnp.zeros((16, 5))}
      >>> T, B = 10_000, 2
      >>> xs, labels = jnp.ones((T, B, 1)), jnp.zeros((T, B), jnp.int32)
      >>> def loss(params):
      ...     def per_step(h, label):  # h: [B, 16], label: [B]
      ...         logits = h @ params["w"]
      ...         return -jax.nn.log_softmax(logits)[jnp.arange(B), label]
      ...     _, total = jaxrnn.scan_reduce(cell, params["rnn"], xs, per_step, labels,
      ...                                   checkpoint=100)
      ...     return total.sum() / (T * B)
      >>> value, grads = jax.value_and_grad(loss)(params)
      >>> round(float(value), 4)  # uniform logits: log 5
      1.6094

      It equals ``scan`` followed by the same reduction:

      >>> xs = jax.random.normal(jax.random.key(1), (20, 3, 1))
      >>> lengths = jnp.array([20, 7, 0])
      >>> _, ys = jaxrnn.scan(cell, params["rnn"], xs, lengths=lengths)
      >>> mask = jnp.arange(20)[:, None] < lengths[None, :]
      >>> _, sums = jaxrnn.scan_reduce(cell, params["rnn"], xs, lambda y, _: y.sum(-1),
      ...                              lengths=lengths, checkpoint=6)
      >>> bool(jnp.allclose(sums, jnp.where(mask, ys.sum(-1), 0).sum(0), atol=1e-5))
      True

    Raises:
      ValueError, TypeError: as :func:`jaxrnn.scan`, and naming ``targets``
        (leaves without the leading ``[T, *batch]`` axes) or ``fn`` (values
        without the batch shape as leading axes, or an error raised inside it).
    """
    args = check_scan_args(
        cell,
        params,
        xs,
        carry,
        lengths,
        reverse,
        time_major,
        num_feature_axes,
        options,
        kwargs,
        resets,
    )
    xs, batch_shape, carry, lengths, options = args[:5]
    num_steps = xs.shape[0]
    if not callable(fn):
        raise TypeError(f"fn: expected a function fn(y_t, targets_t), got {type(fn).__name__}")
    targets = _time_major_targets(targets, time_major, num_steps, batch_shape)
    _check_fn(cell, params, carry, xs, fn, targets, batch_shape)
    reduce = _chunk_reducer(fn, lengths)
    steps = jnp.arange(num_steps, dtype=jnp.int32) + args.time.first_step(num_steps)
    fresh = fresh_steps(args.resets, lengths, reverse, args.time.first_step(num_steps), args.time)

    if options.method != "sequential" or options.method_options is not None:
        zeroed, targets = _zero_padding(steps, lengths, (xs, targets))
        carry, ys = _parallel.parallel_scan(
            cell,
            params,
            zeroed,
            carry,
            lengths,
            reverse,
            options,
            num_feature_axes=num_feature_axes,
            fresh=fresh,
        )
        totals = jax.tree.map(lambda s: s[0], reduce(steps, ys, targets))
        if args.time.name is not None:  # this device's chunk of the steps: add the others'
            totals = jax.lax.psum(totals, args.time.name)
        return carry, totals

    if _fused.takes(cell, params, xs, carry, options, num_feature_axes):
        run = _fused.chunk_runner(
            cell, params, lengths, reverse, options.unroll, init=carry, fresh=fresh
        )
    else:
        run = chunk_runner(
            cell.step,
            params,
            lengths,
            reverse,
            num_steps,
            unroll=options.unroll,
            truncate=options.truncate,
            init=carry,
            fresh=fresh,
        )

    def run_chunk(carry: Carry, chunk: tuple[Array, Array, Any]) -> tuple[Carry, Any]:
        t, xs_c, targets_c = chunk
        xs_c, targets_c = _zero_padding(t, lengths, (xs_c, targets_c))
        carry, ys = run(carry, (t, xs_c))
        return carry, reduce(t, ys, targets_c)

    inputs = (steps, xs, targets)
    if options.checkpoint is None:
        carry, sums = run_chunk(carry, inputs)
    else:
        # Each chunk's sums come out with a time axis of length 1: one row per chunk.
        carry, sums = scan_in_chunks(run_chunk, carry, inputs, options.checkpoint, reverse)
    return carry, jax.tree.map(lambda s: s.sum(0), sums)


def _valid(t: Array, lengths: Array) -> Array:
    """``[k, *batch]`` booleans: step ``t[i]`` of sequence b is valid."""
    t = t.astype(lengths.dtype).reshape((-1,) + (1,) * lengths.ndim)
    return t < lengths[None]


def _zero_padding(t: Array, lengths: Array | None, tree: Any) -> Any:
    """Every time-major leaf of ``tree`` with its padded steps set to zero."""
    if lengths is None:
        return tree
    valid = _valid(t, lengths)
    return jax.tree.map(lambda a: where_valid(valid, a, jnp.zeros((), a.dtype)), tree)


def _chunk_reducer(fn: Callable[[Array, Any], Any], lengths: Array | None) -> Callable[..., Any]:
    """``reduce(t, ys, targets)``: ``fn`` at each step, padding dropped, summed to ``[1, ...]``."""

    def reduce(t: Array, ys: Array, targets: Any) -> Any:
        values = jax.vmap(fn)(ys, targets)
        if lengths is not None:
            values = _zero_padding(t, lengths, values)
        return jax.tree.map(lambda v: v.sum(0, keepdims=True), values)

    return reduce


def _time_major_targets(targets: Any, time_major: bool, num_steps: int, batch_shape: Shape) -> Any:
    """``targets`` as time-major arrays ``[T, *batch, ...]``, checked."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(targets)
    expected = (num_steps, *batch_shape)
    layout = "[T, *batch, ...]" if time_major else "[*batch, T, ...]"
    checked = []
    for path, leaf in leaves:
        name = "targets" + jax.tree_util.keystr(path)
        try:
            leaf = jnp.asarray(leaf)
        except TypeError as e:
            raise TypeError(f"{name}: expected an array, got {type(leaf).__name__}") from e
        given = leaf.shape
        if not time_major and leaf.ndim > len(batch_shape):
            leaf = jnp.moveaxis(leaf, len(batch_shape), 0)
        if leaf.shape[: len(expected)] != expected:
            raise ValueError(
                f"{name}: expected {layout} with T={num_steps}, batch={batch_shape}, got shape "
                f"{given}"
            )
        checked.append(leaf)
    return jax.tree.unflatten(treedef, checked)


def _check_fn(
    cell: Cell,
    params: Params,
    carry: Carry,
    xs: Array,
    fn: Callable[[Array, Any], Any],
    targets: Any,
    batch_shape: Shape,
) -> None:
    """Trace ``fn`` on one step's output; its values must lead with the batch shape."""
    x = jax.ShapeDtypeStruct(xs.shape[1:], xs.dtype)
    try:
        _, y = jax.eval_shape(cell.step, params, carry, x)
    except (ValueError, TypeError) as e:
        e.add_note(f"(raised by cell.step on one time step of xs, of shape {xs.shape[1:]})")
        raise
    target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), targets)
    try:
        values = jax.eval_shape(fn, y, target)
    except Exception as e:
        shapes = jax.tree.map(lambda a: a.shape, y)
        e.add_note(f"(raised by fn(y_t, targets_t) with y_t of shape {shapes})")
        raise
    for path, value in jax.tree_util.tree_flatten_with_path(values)[0]:
        shape = tuple(getattr(value, "shape", ()))
        if shape[: len(batch_shape)] != batch_shape:
            where = "fn(y_t, targets_t)" + jax.tree_util.keystr(path)
            raise ValueError(
                f"fn: expected every value to have the batch shape {batch_shape} as its leading "
                f"axes (one value per sequence, summed over its steps), got shape {shape} for "
                f"{where}; reduce over the batch after scan_reduce instead"
            )

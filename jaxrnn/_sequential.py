"""The sequential masked scan: a cell's own step, one time step after another.

What :func:`jaxrnn.scan` computes by definition, and what every fast path is
tested against. Also the two pieces the fused path shares with it: zeroing
the padded inputs and checkpointing through time in chunks.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxrnn._cell import Array, Carry, Params, StepFn
from jaxrnn._time_axis import TimeAxis


def valid_steps(lengths: Array, num_steps: int, start: Array | int = 0) -> Array:
    """``[T, *batch]`` booleans: step t of sequence b is valid when ``start + t < lengths[b]``.

    ``start``: the index of the first of these steps in the whole sequence
    (a chunk of a sequence split across devices).
    """
    steps = jnp.arange(num_steps, dtype=lengths.dtype) + jnp.asarray(start, lengths.dtype)
    return steps.reshape((num_steps,) + (1,) * lengths.ndim) < lengths[None]


def where_valid(valid: Array, new: Any, old: Any) -> Any:
    """``new`` where ``valid``, else ``old``, leaf by leaf; ``valid`` broadcast on trailing axes."""

    def pick(a: Array, b: Array) -> Array:
        return jnp.where(valid.reshape(valid.shape + (1,) * (a.ndim - valid.ndim)), a, b)

    return jax.tree.map(pick, new, old)


def zero_padding(xs: Array, lengths: Array | None, start: Array | int = 0) -> Array:
    """``xs`` ``[T, *batch, ...]`` with every padded step (``start + t >= lengths[b]``) set to zero.

    A masked step's output and carry are discarded, but its VJP still
    multiplies the (zero) cotangent by the step's intermediate values: a NaN
    or Inf read from padding would poison every parameter gradient (0·NaN).
    Zeroing the padding first keeps padded steps out of the gradient, as a
    packed sequence never reads them.
    """
    if lengths is None:
        return xs
    valid = valid_steps(lengths, xs.shape[0], start)
    return where_valid(valid, xs, jnp.zeros((), xs.dtype))


def fresh_steps(
    resets: Array | None,
    lengths: Array | None,
    reverse: bool,
    start: Array | int = 0,
    time: TimeAxis | None = None,
) -> Array | None:
    """``[T, *batch]`` booleans: step t is processed from the initial carry (a segment's first).

    ``resets[t, b]`` says that step t of sequence b starts a new segment (in
    time order); resets at padded steps (``start + t >= lengths[b]``) are
    ignored. Forward, a segment is processed from its first step, so the
    fresh steps are the resets. With ``reverse`` a segment is processed from
    its last step, the one before the next reset: step t is fresh when step
    t + 1 is a valid reset (the steps after the last valid one start from
    the initial carry already). ``time`` is the time axis the arrays are
    chunks of (the shift by one step crosses devices); None for the whole sequence.
    """
    if resets is None or resets.shape[0] == 0:
        return None  # no steps: nothing to reset
    if lengths is not None:
        resets = resets & valid_steps(lengths, resets.shape[0], start)
    if not reverse:
        return resets
    return (time or TimeAxis()).next(resets)


def segment_index(fresh: Array, lengths: Array | None, reverse: bool) -> Array:
    """``[T, *batch]``: how many steps of its segment were processed before step t.

    What truncation counts: step t's index in its segment's processing order
    (0 at a fresh step and at the first processed step of each sequence).
    """
    num_steps = fresh.shape[0]
    steps = jnp.arange(num_steps).reshape((num_steps,) + (1,) * (fresh.ndim - 1))
    steps = jnp.broadcast_to(steps, fresh.shape)
    if not reverse:
        first = jax.lax.cummax(jnp.where(fresh, steps, 0), axis=0)
        return steps - first
    end = num_steps if lengths is None else lengths[None].astype(steps.dtype)
    first = jax.lax.cummin(jnp.where(fresh, steps, num_steps), axis=0, reverse=True)
    return jnp.minimum(first, end - 1) - steps


def masked_step(
    step: Callable[[Params, Carry, Any], tuple[Carry, Any]],
    params: Params,
    lengths: Array | None,
    truncate: int | None,
    reverse: bool,
    num_steps: int,
    carry: Carry,
    inputs: tuple[Array, Any],
    *,
    init: Carry = None,
    fresh: Array | None = None,
    index: Array | None = None,
) -> tuple[Carry, Any]:
    """One step of the sequential scan: reset, truncation at chunk starts, the cell, then the mask.

    ``inputs`` is ``(t, x)``; ``x`` is passed to ``step`` as it is (any pytree).
    With ``fresh`` ``[T, *batch]`` (see :func:`fresh_steps`), the carry
    before a fresh step t is ``init``; ``index`` (see :func:`segment_index`)
    is then what ``truncate`` counts.
    """
    t, x = inputs
    if fresh is not None:
        carry = where_valid(fresh[t], init, carry)
    if lengths is not None:
        t = t.astype(lengths.dtype)  # int64 lengths with x64 on: no mixed-width promotion
    if truncate is not None:
        # Index of step t in its sequence's (or segment's) processing order.
        if index is not None:
            position = index[t]
        else:
            end = num_steps if lengths is None else lengths
            position = end - 1 - t if reverse else t
        cut = (position > 0) & (position % truncate == 0)
        carry_in = where_valid(cut, jax.tree.map(jax.lax.stop_gradient, carry), carry)
        new_carry, y = step(params, carry_in, x)
    else:
        new_carry, y = step(params, carry, x)
    if lengths is None:
        return new_carry, y
    valid = t < lengths
    new_carry = where_valid(valid, new_carry, carry)
    return new_carry, where_valid(valid, y, jax.tree.map(jnp.zeros_like, y))


def scan_in_chunks(
    run: Callable[[Carry, Any], tuple[Carry, Any]],
    carry: Carry,
    inputs: Any,
    size: int,
    reverse: bool,
) -> tuple[Carry, Any]:
    """Checkpointing through time: ``run`` over chunks of ``size`` steps, each rematerialised.

    ``inputs`` are time-major; ``run(carry, chunk) -> (carry, ys)`` scans one
    chunk. Only each chunk's first carry is kept for the backward pass, which
    recomputes the chunk. When ``size`` does not divide T, the last chunk in
    processing order is shorter (the first steps with ``reverse``): nothing
    is padded, so no step runs that the sequence does not have.
    """
    num_steps = jax.tree.leaves(inputs)[0].shape[0]
    rest = num_steps % size
    whole = num_steps - rest
    split = rest if reverse else whole  # where the whole chunks end (reverse: begin)
    body_in = jax.tree.map(lambda a: a[split:] if reverse else a[:split], inputs)
    tail_in = jax.tree.map(lambda a: a[:split] if reverse else a[split:], inputs)
    remat = jax.checkpoint(run, prevent_cse=False)
    ys_tail = None
    if whole:
        chunks = jax.tree.map(lambda a: a.reshape(-1, size, *a.shape[1:]), body_in)
        carry, ys_body = jax.lax.scan(remat, carry, chunks, reverse=reverse)
        ys_body = jax.tree.map(lambda y: y.reshape(-1, *y.shape[2:]), ys_body)
    if rest:
        carry, ys_tail = remat(carry, tail_in)
    if not whole:
        return carry, ys_tail
    if not rest:
        return carry, ys_body
    parts = (ys_tail, ys_body) if reverse else (ys_body, ys_tail)
    return carry, jax.tree.map(lambda a, b: jnp.concatenate([a, b]), *parts)


def chunk_runner(
    step: StepFn,
    params: Params,
    lengths: Array | None,
    reverse: bool,
    num_steps: int,
    *,
    unroll: int | bool = 1,
    truncate: int | None = None,
    init: Carry = None,
    fresh: Array | None = None,
) -> Callable[[Carry, tuple[Array, Any]], tuple[Carry, Any]]:
    """``run(carry, (t, xs)) -> (carry, ys)``: the masked loop over some steps of the sequence.

    ``t`` holds the steps' indices in the whole sequence of ``num_steps``, so
    the mask, the resets and the truncation points are those of the whole
    sequence whichever chunk of it ``run`` is given. ``fresh``: the steps
    that start from ``init`` (:func:`fresh_steps` of the whole sequence).
    """
    index = None
    if fresh is not None and truncate is not None:
        index = segment_index(fresh, lengths, reverse)
    body = functools.partial(
        masked_step,
        step,
        params,
        lengths,
        truncate,
        reverse,
        num_steps,
        init=init,
        fresh=fresh,
        index=index,
    )

    def run(carry: Carry, inputs: tuple[Array, Any]) -> tuple[Carry, Any]:
        return jax.lax.scan(body, carry, inputs, reverse=reverse, unroll=unroll)

    return run


def sequential_scan(
    step: StepFn,
    params: Params,
    xs: Any,
    carry: Carry,
    lengths: Array | None,
    reverse: bool,
    *,
    unroll: int | bool = 1,
    truncate: int | None = None,
    checkpoint: int | None = None,
    fresh: Array | None = None,
) -> tuple[Carry, Any]:
    """:func:`jaxrnn.scan`'s definition (checked, time-major inputs): one step at a time.

    ``fresh`` (:func:`fresh_steps`): the steps whose carry before them is
    ``carry``, the initial carry, instead of the previous step's.
    """
    num_steps = jax.tree.leaves(xs)[0].shape[0]
    run = chunk_runner(
        step,
        params,
        lengths,
        reverse,
        num_steps,
        unroll=unroll,
        truncate=truncate,
        init=carry,
        fresh=fresh,
    )
    inputs = (jnp.arange(num_steps, dtype=jnp.int32), xs)
    if checkpoint is None:
        return run(carry, inputs)
    return scan_in_chunks(run, carry, inputs, checkpoint, reverse)

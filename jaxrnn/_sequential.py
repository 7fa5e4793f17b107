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


def masked_step(
    step: Callable[[Params, Carry, Any], tuple[Carry, Any]],
    params: Params,
    lengths: Array | None,
    truncate: int | None,
    reverse: bool,
    num_steps: int,
    carry: Carry,
    inputs: tuple[Array, Any],
) -> tuple[Carry, Any]:
    """One step of the sequential scan: truncation at chunk starts, the cell, then the mask.

    ``inputs`` is ``(t, x)``; ``x`` is passed to ``step`` as it is (any pytree).
    """
    t, x = inputs
    if lengths is not None:
        t = t.astype(lengths.dtype)  # int64 lengths with x64 on: no mixed-width promotion
    if truncate is not None:
        # Index of step t in its sequence's processing order.
        end = num_steps if lengths is None else lengths
        index = end - 1 - t if reverse else t
        cut = (index > 0) & (index % truncate == 0)
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
) -> Callable[[Carry, tuple[Array, Any]], tuple[Carry, Any]]:
    """``run(carry, (t, xs)) -> (carry, ys)``: the masked loop over some steps of the sequence.

    ``t`` holds the steps' indices in the whole sequence of ``num_steps``, so
    the mask and the truncation points are those of the whole sequence
    whichever chunk of it ``run`` is given.
    """
    body = functools.partial(masked_step, step, params, lengths, truncate, reverse, num_steps)

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
) -> tuple[Carry, Any]:
    """:func:`jaxrnn.scan`'s definition (checked, time-major inputs): one step at a time."""
    num_steps = jax.tree.leaves(xs)[0].shape[0]
    run = chunk_runner(step, params, lengths, reverse, num_steps, unroll=unroll, truncate=truncate)
    inputs = (jnp.arange(num_steps, dtype=jnp.int32), xs)
    if checkpoint is None:
        return run(carry, inputs)
    return scan_in_chunks(run, carry, inputs, checkpoint, reverse)

"""Flax's conventions, shared by :mod:`jaxrnn.nnx` and :mod:`jaxrnn.linen` (no flax import).

* Carries: Flax's LSTM cells carry the tuple ``(c, h)``; jaxrnn's carry the
  NamedTuple ``LSTMCarry(h, c)``. The modules written to Flax's protocols take
  and return Flax's tuple, so that code written for Flax (``c, h = carry``)
  reads the right arrays; every other carry is the same in both.
* ``reverse``: Flax's ``RNN`` reverses each sequence within its length
  (``flip_sequences``: padding stays at the end) and runs the cell forward.
* ``dtype``: Flax's layers cast params and inputs to the computation dtype.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from jaxrnn._cell import Array, Carry
from jaxrnn._lstm import LSTMCarry


def to_flax(carry: Carry) -> Any:
    """Convert to Flax's convention: ``LSTMCarry(h, c)`` becomes the tuple ``(c, h)``.

    Example:
      >>> import jaxrnn
      >>> from jaxrnn._flax_conventions import to_flax
      >>> c, h = to_flax(jaxrnn.LSTMCarry(h="h", c="c"))
      >>> c, h
      ('c', 'h')
    """
    if isinstance(carry, LSTMCarry):
        return (carry.c, carry.h)
    return carry


def from_flax(carry: Any, template: Carry, name: str = "carry") -> Carry:
    """A carry in Flax's convention back in jaxrnn's, the structure read from ``template``.

    Args:
      carry: a carry as :func:`to_flax` returns it.
      template: a carry of the cell in jaxrnn's convention (e.g. its initial carry).
      name: the argument's name, for the error.

    Raises:
      TypeError: naming ``name`` when an LSTM's carry is not a pair ``(c, h)``.

    Example:
      >>> import jaxrnn
      >>> from jaxrnn._flax_conventions import from_flax
      >>> from_flax(("c", "h"), jaxrnn.LSTMCarry(h=0, c=0))
      LSTMCarry(h='h', c='c')
    """
    if not isinstance(template, LSTMCarry):
        return carry
    if isinstance(carry, LSTMCarry):
        raise TypeError(
            f"{name}: expected Flax's LSTM carry, the tuple (c, h), got a jaxrnn.LSTMCarry(h, c); "
            "convert it with (carry.c, carry.h)"
        )
    if not isinstance(carry, tuple | list) or len(carry) != 2:
        raise TypeError(
            f"{name}: expected Flax's LSTM carry, the tuple (c, h), got {type(carry).__name__}"
        )
    c, h = carry
    return LSTMCarry(h=h, c=c)


def flip(xs: Array, lengths: Array | None, time_axis: int = 0) -> Array:
    """Reverse each sequence of ``xs`` within its length; padding stays at the end.

    Flax's ``flip_sequences``: step t of a sequence of length L moves to step
    L - 1 - t; with ``lengths`` None the whole time axis is reversed.

    Args:
      xs: ``[T, *batch, ...]``, the time axis at ``time_axis``.
      lengths: integer array of shape ``batch``, or None.
      time_axis: where the time axis of ``xs`` is.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxrnn._flax_conventions import flip
      >>> flip(jnp.array([[1, 1], [2, 2], [3, 0]]), jnp.array([3, 2]))[:, 1].tolist()
      [2, 1, 0]
    """
    xs = jnp.moveaxis(xs, time_axis, 0)
    steps = xs.shape[0]
    if lengths is None or steps == 0:
        flipped = jnp.flip(xs, axis=0)
    else:
        t = jnp.arange(steps).reshape((steps,) + (1,) * lengths.ndim)
        idx = (lengths[None] - 1 - t) % steps  # [T, *batch]: padding maps to padding
        idx = idx.reshape(idx.shape + (1,) * (xs.ndim - idx.ndim))
        flipped = jnp.take_along_axis(xs, idx, axis=0)
    return jnp.moveaxis(flipped, 0, time_axis)


def flip_resets(resets: Array, lengths: Array | None, time_axis: int = 0) -> Array:
    """The resets of the flipped sequences: a segment that ends at step t starts at L - 1 - t.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxrnn._flax_conventions import flip_resets
      >>> # segments [0, 2) and [2, 4) become [0, 2) and [2, 4) of the flipped sequence
      >>> flip_resets(jnp.array([True, False, True, False]), jnp.array(4)).tolist()
      [False, False, True, False]
    """
    resets = jnp.moveaxis(resets, time_axis, 0)
    ends = jnp.concatenate([resets[1:], jnp.zeros_like(resets[:1])])  # step t ends a segment
    return jnp.moveaxis(flip(ends, lengths), 0, time_axis)

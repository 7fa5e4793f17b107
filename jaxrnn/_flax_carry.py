"""Carries in Flax's convention, for the cell modules of :mod:`jaxrnn.nnx` and :mod:`jaxrnn.linen`.

This module does not import flax.

Flax's LSTM cells carry the tuple ``(c, h)``; jaxrnn's carry the NamedTuple
``LSTMCarry(h, c)``. The cell modules written to Flax's ``RNNCellBase``
protocol take and return Flax's tuple, so that code written for Flax (``c, h =
carry``) reads the right arrays; every other carry is the same in both.
"""

from __future__ import annotations

from typing import Any

from jaxrnn._cell import Carry
from jaxrnn._lstm import LSTMCarry


def to_flax(carry: Carry) -> Any:
    """Convert to Flax's convention: ``LSTMCarry(h, c)`` becomes the tuple ``(c, h)``.

    Example:
      >>> import jaxrnn
      >>> from jaxrnn._flax_carry import to_flax
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
      >>> from jaxrnn._flax_carry import from_flax
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

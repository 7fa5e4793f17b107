"""Recurrent (variational) dropout: one mask per sequence on the state a cell feeds back."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxrnn._cell import Array, Carry, Cell, Params, PRNGKey, as_float


class RecurrentDropoutCarry(NamedTuple):
    r"""The carry of a :func:`recurrent_dropout` cell.

    Attributes:
      carry: the wrapped cell's carry.
      noise: ``[*batch, H]`` the multiplicative noise :math:`\epsilon` of the
        hidden state: the step reads :math:`h \odot (1 + \epsilon)`, with
        :math:`1 + \epsilon` equal to 0 (dropped) or :math:`1/(1-p)` (kept)
        in training and :math:`\epsilon = 0` (no dropout) in evaluation, so
        the all-zero carry of ``initial_carry`` means evaluation. Real, in the
        real dtype of the hidden state.

    Example:
      >>> import jaxrnn
      >>> carry = jaxrnn.recurrent_dropout(jaxrnn.lstm(4), 0.25).initial_carry((2,))
      >>> carry.carry.c.shape, carry.noise.shape, float(abs(carry.noise).max())
      ((2, 4), (2, 4), 0.0)
    """

    carry: Carry
    noise: Array


def _hidden(carry: Carry) -> Array:
    """The hidden state of a carry: the carry itself, or its ``h`` field (an LSTM's)."""
    if hasattr(carry, "dtype"):  # an array
        return carry
    if hasattr(carry, "h") and hasattr(carry, "_replace"):
        return carry.h
    raise TypeError(
        "cell: recurrent_dropout expected a cell whose carry is an array or a NamedTuple with "
        f"a field h (the hidden state), got a carry of type {type(carry).__name__}"
    )


def _with_hidden(carry: Carry, h: Array) -> Carry:
    if hasattr(carry, "_replace") and hasattr(carry, "h"):
        return carry._replace(h=h)
    return h


def _real_dtype(dtype: Any) -> Any:
    return jnp.finfo(dtype).dtype  # complex64 -> float32; float dtypes unchanged


def recurrent_dropout(cell: Cell, rate: float) -> Cell:
    r"""Wrap ``cell`` with recurrent (variational) dropout on the hidden state it feeds back.

    Every step reads the previous hidden state through one mask drawn once per
    sequence (Gal & Ghahramani, 2016; Keras's ``recurrent_dropout``):

    .. math::

      \text{carry}_t, y_t = \text{step}(\theta, \text{carry}_{t-1}[h \to m \odot h], x_t),
      \qquad m_j = \frac{b_j}{1-p},\ b_j \sim \text{Bernoulli}(1-p),

    with the same :math:`m` at every step of a sequence and an independent
    one for each sequence (each batch element; each layer and direction of a
    stack), so that :math:`\mathbb{E}[m \odot h] = h` for the state each
    step reads. The hidden state :math:`h` is the carry itself (Elman, GRU,
    the linear cells) or its ``h`` field (:class:`jaxrnn.LSTMCarry`: the
    cell state ``c`` is not dropped). In an LSTM and an Elman cell ``h`` feeds
    only the recurrent product, exactly Gal & Ghahramani's scheme; a GRU and
    the linear cells also carry ``h`` into their interpolation, which then
    reads the dropped state too (Keras's GRU drops only the product's input).

    **Design.** The mask travels in the carry (:class:`RecurrentDropoutCarry`),
    as multiplicative noise that is zero in the carry ``initial_carry``
    returns: a scan without a drawn mask is the plain cell exactly, a carry
    built by zeros (a stack's, a reset's) means evaluation, and nothing about
    the params changes, so an optimizer never sees a mask. Training draws the
    mask into the carry with ``cell.draw(key, carry)`` (the :class:`Cell`'s
    ``draw`` field), which :func:`jaxrnn.stack`, :func:`jaxrnn.training.readout`
    and :mod:`jaxrnn.nnx` call when given a dropout key. Carried from one
    piece of a sequence to the next (truncated BPTT), the carry keeps its
    mask. No fast path runs this cell: :func:`jaxrnn.scan` runs its step.

    Args:
      cell: the :class:`Cell` to wrap; its carry must be an array or a
        NamedTuple with a field ``h``.
      rate: the probability :math:`p \in [0, 1)` of dropping each unit of
        the hidden state. 0 gives a cell that computes what ``cell`` does.

    Returns:
      A :class:`Cell` with ``cell``'s ``init`` and params, a
      :class:`RecurrentDropoutCarry` carry and ``draw(key, carry) -> carry``,
      which replaces the noise of ``carry`` (of any leading axes) by a fresh
      draw.

    Example:
      >>> import jax, jax.numpy as jnp, jaxrnn
      >>> cell = jaxrnn.recurrent_dropout(jaxrnn.lstm(16), rate=0.25)
      >>> params = cell.init(jax.random.key(0), input_size=3)
      >>> xs = jnp.ones((10, 4, 3))  # [T, B, I]
      >>> carry = cell.draw(jax.random.key(1), cell.initial_carry((4,)))  # training
      >>> _, ys = jaxrnn.scan(cell, params, xs, carry=carry)
      >>> _, evaluated = jaxrnn.scan(cell, params, xs)  # no mask drawn: evaluation
      >>> _, plain = jaxrnn.scan(jaxrnn.lstm(16), params, xs)
      >>> # equal up to float32 rounding (the plain cell runs the fused path)
      >>> bool(jnp.allclose(evaluated, plain, atol=1e-6)), bool((ys != plain).any())
      (True, True)

    References:
      Gal & Ghahramani, "A theoretically grounded application of dropout in
      recurrent neural networks", NeurIPS 2016.
      Semeniuta, Severyn & Barth, "Recurrent dropout without memory loss",
      COLING 2016.
    """
    if not isinstance(cell, Cell):
        raise TypeError(f"cell: expected a jaxrnn.Cell, got {type(cell).__name__}")
    p = as_float(rate)
    if p is None or not 0.0 <= p < 1.0:
        raise ValueError(f"rate: expected a number in [0, 1), got {rate!r}")

    def initial_carry(batch_shape: Any = (), dtype: Any = jnp.float32) -> RecurrentDropoutCarry:
        inner = cell.initial_carry(batch_shape, dtype)
        h = _hidden(inner)
        return RecurrentDropoutCarry(inner, jnp.zeros(h.shape, _real_dtype(h.dtype)))

    def step(params: Params, carry: RecurrentDropoutCarry, x: Any) -> tuple[Carry, Any]:
        if not isinstance(carry, RecurrentDropoutCarry):
            raise TypeError(
                "carry: expected the RecurrentDropoutCarry of a recurrent_dropout cell "
                f"(cell.initial_carry(batch_shape)), got {type(carry).__name__}"
            )
        inner, noise = carry
        h = _hidden(inner)
        if noise.shape != h.shape:
            raise ValueError(
                f"carry.noise: expected the shape of the hidden state {h.shape}, got {noise.shape}"
            )
        dropped = h * (1 + noise).astype(h.dtype)
        new_inner, y = cell.step(params, _with_hidden(inner, dropped), x)
        return RecurrentDropoutCarry(new_inner, noise), y

    def draw(key: PRNGKey, carry: RecurrentDropoutCarry) -> RecurrentDropoutCarry:
        if not isinstance(carry, RecurrentDropoutCarry):
            raise TypeError(
                "carry: expected the RecurrentDropoutCarry of a recurrent_dropout cell "
                f"(cell.initial_carry(batch_shape)), got {type(carry).__name__}"
            )
        shape, dtype = carry.noise.shape, carry.noise.dtype
        if p == 0.0:
            return carry._replace(noise=jnp.zeros(shape, dtype))
        keep = jax.random.bernoulli(key, 1.0 - p, shape)
        # 1/(1-p) - 1 is exact for 1/(1-p) >= 1, so 1 + noise is exactly 1/(1-p) or 0.
        kept = jnp.asarray(1.0 / (1.0 - p), dtype) - 1
        return carry._replace(noise=jnp.where(keep, kept, jnp.asarray(-1, dtype)))

    return Cell(cell.init, initial_carry, step, draw=draw)

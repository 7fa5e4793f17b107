"""Everyday helpers for right-padded sequences: the mask of valid steps, the output at the end.

``lengths`` gives each sequence's number of valid steps, as for
:func:`jaxrnn.scan`; its shape is the batch shape, so the time axis of
batch-major arrays ``[*batch, T, ...]`` is axis ``lengths.ndim``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike
from jaxtyping import Bool, Shaped

from jaxrnn._cell import Array, as_int
from jaxrnn._checks import check_lengths
from jaxrnn._sequential import valid_steps


def length_mask(
    lengths: ArrayLike, num_steps: int, *, time_major: bool = True
) -> Bool[Array, "..."]:
    """The valid steps of right-padded sequences: ``mask[t, b] = t < lengths[b]``.

    Args:
      lengths: integers of shape ``batch`` (any number of axes, including
        none), each in [0, T]. Checked when concrete; under ``jit`` values
        outside [0, T] act as the nearest end of that range (all steps
        padded, or all valid), as in :func:`jaxrnn.scan`.
      num_steps: T, a non-negative integer.
      time_major: ``[T, *batch]`` (True) or ``[*batch, T]`` (False).

    Returns:
      A bool array ``[T, *batch]`` (or ``[*batch, T]``), True at the valid steps.

    Example:
      >>> import jax.numpy as jnp, jaxrnn
      >>> jaxrnn.length_mask(jnp.array([3, 0, 1]), 4, time_major=False).astype(int).tolist()
      [[1, 1, 1, 0], [0, 0, 0, 0], [1, 0, 0, 0]]

      The mean of a per-step loss over the valid steps only:

      >>> losses = jnp.ones((4, 3))  # [T, B]
      >>> mask = jaxrnn.length_mask(jnp.array([3, 0, 1]), 4)
      >>> float(jnp.sum(losses * mask) / jnp.sum(mask))
      1.0
    """
    steps = as_int(num_steps)
    if steps is None or steps < 0:
        raise ValueError(f"num_steps: expected a non-negative integer, got {num_steps!r}")
    _check_time_major(time_major)
    lengths_arr = _lengths_array(lengths)
    checked = check_lengths(lengths_arr, tuple(lengths_arr.shape), steps)
    assert checked is not None
    mask = valid_steps(checked, steps)
    return mask if time_major else jnp.moveaxis(mask, 0, -1)


def last_valid(
    ys: Shaped[ArrayLike, "..."], lengths: ArrayLike, *, time_major: bool = True
) -> Shaped[Array, "..."]:
    """Each sequence's output at its last valid step: ``ys[lengths[b] - 1, b]``.

    A sequence of length 0 has no valid step: its result is zeros (it is
    never read from ``ys``, so padding that holds NaN does not leak, into
    the result nor into gradients).

    Args:
      ys: outputs ``[T, *batch, ...]``, or ``[*batch, T, ...]`` with
        ``time_major=False``, where ``batch`` is the shape of ``lengths``
        and ``...`` any feature axes (none included).
      lengths: integers of shape ``batch``, each in [0, T]: checked when
        concrete; under ``jit`` values outside [0, T] act as the nearest end
        of that range (zeros, or the step T - 1).
      time_major: where the time axis of ``ys`` is.

    Returns:
      ``[*batch, ...]``: the output at step ``lengths[b] - 1`` of each
      sequence, zeros where ``lengths[b] == 0``.

    Example:
      >>> import jax, jax.numpy as jnp, jaxrnn
      >>> cell = jaxrnn.gru(8)
      >>> params = cell.init(jax.random.key(0), input_size=3)
      >>> xs, lengths = jnp.ones((4, 10, 3)), jnp.array([10, 7, 1, 0])  # [B, T, I], [B]
      >>> carry, ys = jaxrnn.scan(cell, params, xs, lengths=lengths, time_major=False)
      >>> last = jaxrnn.last_valid(ys, lengths, time_major=False)
      >>> last.shape, bool((last == carry).all())  # a GRU's output is its carry
      ((4, 8), True)
    """
    ys, lengths, axis = _check_outputs(ys, lengths, time_major)
    return _at_last(ys, lengths, axis)


def bidirectional_last(
    ys: Shaped[ArrayLike, "..."], lengths: ArrayLike, *, time_major: bool = True
) -> Shaped[Array, "..."]:
    """The summary of a bidirectional layer: each direction's output once it has read everything.

    For the outputs ``[T, *batch, 2H]`` of a bidirectional layer merged by
    :func:`jaxrnn.concat` (forward features first, the default of
    ``jaxrnn.stack(..., bidirectional=True)``): the forward direction's
    output at each sequence's last valid step, concatenated with the
    backward direction's output at step 0 (where the backward direction,
    which starts at the last valid step, ends). For cells whose output is
    their hidden state, the concatenation of the two directions' final
    hidden states (PyTorch's ``h_n`` of the last layer). Zeros for a
    sequence of length 0.

    Args:
      ys: outputs ``[T, *batch, 2H]``, or ``[*batch, T, 2H]`` with
        ``time_major=False``, where ``batch`` is the shape of ``lengths``.
      lengths: integers of shape ``batch``, each in [0, T], as for
        :func:`last_valid`.
      time_major: where the time axis of ``ys`` is.

    Returns:
      ``[*batch, 2H]``: ``[forward at lengths - 1, backward at 0]``.

    Example:
      >>> import jax, jax.numpy as jnp, jaxrnn
      >>> rnn = jaxrnn.stack(jaxrnn.gru(8), bidirectional=True)
      >>> params = rnn.init(jax.random.key(0), input_size=3)
      >>> xs, lengths = jnp.ones((10, 4, 3)), jnp.array([10, 7, 1, 3])  # [T, B, I], [B]
      >>> carry, ys = rnn.apply(params, xs, lengths=lengths)
      >>> summary = jaxrnn.bidirectional_last(ys, lengths)
      >>> h_n = jnp.concatenate([carry[-1, 0], carry[-1, 1]], axis=-1)  # last layer, fwd | bwd
      >>> summary.shape, bool(jnp.allclose(summary, h_n))
      ((4, 16), True)
    """
    ys, lengths, axis = _check_outputs(ys, lengths, time_major)
    features = ys.shape[-1] if ys.ndim > axis + 1 else None
    if features is None or features % 2:
        raise ValueError(
            f"ys: expected the outputs of a bidirectional layer, [..., 2H] with an even last "
            f"axis after the time and batch axes (forward | backward, jaxrnn.concat), got shape "
            f"{tuple(ys.shape)}"
        )
    half = features // 2
    forward = _at_last(ys[..., :half], lengths, axis)
    backward = ys[..., half:]
    if ys.shape[axis] == 0:
        first = jnp.zeros(forward.shape, ys.dtype)
    else:
        first = _where_nonempty(lengths, jax.lax.index_in_dim(backward, 0, axis, keepdims=False))
    return jnp.concatenate([forward, first], axis=-1)


def _check_time_major(time_major: Any) -> None:
    if not isinstance(time_major, bool):
        raise TypeError(f"time_major: expected a bool, got {time_major!r}")


def _lengths_array(lengths: Any) -> Any:
    """``lengths`` as an array (concrete inputs stay NumPy), or a TypeError naming it."""
    if not hasattr(lengths, "dtype"):
        lengths = np.asarray(lengths)
    if not jnp.issubdtype(lengths.dtype, jnp.integer):
        raise TypeError(f"lengths: expected an integer dtype, got {lengths.dtype}")
    return lengths


def _check_outputs(ys: Any, lengths: Any, time_major: Any) -> tuple[Array, Array, int]:
    """``(ys, lengths, time axis)``: ``ys`` whose batch axes are ``lengths.shape``, checked."""
    _check_time_major(time_major)
    if not hasattr(ys, "shape"):
        ys = jnp.asarray(ys)
    lengths = _lengths_array(lengths)
    batch = tuple(lengths.shape)
    axis = 0 if time_major else len(batch)
    got = tuple(ys.shape[1 : 1 + len(batch)] if time_major else ys.shape[: len(batch)])
    if ys.ndim < len(batch) + 1 or got != batch:
        layout = "[T, *batch, ...]" if time_major else "[*batch, T, ...]"
        raise ValueError(
            f"ys: expected shape {layout} with batch = lengths.shape = {batch}, got shape "
            f"{tuple(ys.shape)}"
        )
    checked = check_lengths(lengths, batch, ys.shape[axis])
    assert checked is not None
    return jnp.asarray(ys), checked, axis


def _at_last(ys: Array, lengths: Array, axis: int) -> Array:
    """``ys`` at step ``lengths - 1`` along ``axis`` (the time axis), zeros for length 0."""
    num_steps = ys.shape[axis]
    result_shape = ys.shape[:axis] + ys.shape[axis + 1 :]
    if num_steps == 0:
        return jnp.zeros(result_shape, ys.dtype)
    # The index array of take_along_axis: [*batch] with a 1 at the time axis and each feature.
    index = jnp.expand_dims(jnp.clip(lengths - 1, 0, num_steps - 1), axis)
    index = index.reshape(*index.shape, *(1,) * (ys.ndim - index.ndim))
    picked = jnp.take_along_axis(ys, index, axis=axis).reshape(result_shape)
    return _where_nonempty(lengths, picked)


def _where_nonempty(lengths: Array, values: Array) -> Array:
    """``values`` ``[*batch, ...]`` with the rows of the sequences of length 0 set to zero."""
    keep = (lengths > 0).reshape(*lengths.shape, *(1,) * (values.ndim - lengths.ndim))
    return jnp.where(keep, values, jnp.zeros((), values.dtype))

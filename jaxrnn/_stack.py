"""Multi-layer and bidirectional stacks of a cell."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Unpack

import jax
import jax.numpy as jnp

from jaxrnn import _cudnn
from jaxrnn._cell import Array, Carry, Cell, Params, PRNGKey, Shape, check_positive_int
from jaxrnn._checks import (
    ScanKwargs,
    ScanOptions,
    check_lengths,
    check_like,
    check_resets,
    default_dtype,
    from_time_major,
    scan_options,
    to_time_major,
)
from jaxrnn._scan import scan
from jaxrnn._sequential import zero_padding

Merge = Callable[[Array, Array], Array]


def concat(forward: Array, backward: Array) -> Array:
    """Merge the two directions of a bidirectional layer by concatenating features.

    Example:
      >>> import jax.numpy as jnp, jaxrnn
      >>> jaxrnn.concat(jnp.ones((5, 3)), jnp.zeros((5, 3))).shape
      (5, 6)
    """
    return jnp.concatenate([forward, backward], axis=-1)


class LayerParams(NamedTuple):
    """Params of one layer: the forward cell's and, when bidirectional, the backward cell's.

    Example:
      >>> import jax, jaxrnn
      >>> layer = jaxrnn.stack(jaxrnn.gru(4)).init(jax.random.key(0), 3).first
      >>> layer.forward.w_hh.shape, layer.backward
      ((12, 4), None)
    """

    forward: Params
    backward: Params | None


class StackParams(NamedTuple):
    """Params of a :func:`stack`.

    Attributes:
      first: the first layer's :class:`LayerParams` (its input size is the stack's).
      rest: the other ``num_layers - 1`` layers, which all have the same shapes,
        as one :class:`LayerParams` whose leaves have a leading layer axis; None
        for a single layer.

    Example:
      >>> import jax, jaxrnn
      >>> rnn = jaxrnn.stack(jaxrnn.lstm(4), num_layers=3, bidirectional=True)
      >>> params = rnn.init(jax.random.key(0), input_size=3)
      >>> params.first.backward.w_ih.shape, params.rest.backward.w_ih.shape
      ((16, 3), (2, 16, 8))
    """

    first: LayerParams
    rest: LayerParams | None


class Stack(NamedTuple):
    """A stack of recurrent layers as three pure functions (see :func:`stack`).

    Attributes:
      init: ``init(key, input_size, dtype=jnp.float32) -> StackParams``.
      initial_carry: ``initial_carry(batch_shape=(), dtype=jnp.float32) ->
        carry``: the cell's carry with two leading axes ``[num_layers,
        num_directions]``.
      apply: ``apply(params, xs, *, carry=None, lengths=None, key=None,
        time_major=True, options=None, resets=None, **kwargs) -> (final_carry, ys)``:
        ``options`` (a :class:`jaxrnn.ScanOptions`) and the keywords
        ``unroll``, ``truncate``, ``checkpoint``, ``backward``, ``method``
        and ``method_options`` reach every layer's :func:`jaxrnn.scan` unchanged;
        so do ``lengths`` and ``resets`` (``[T, *batch]`` bools, or ``[*batch, T]``
        with ``time_major=False``, as for :func:`jaxrnn.scan`): every layer, and
        both directions of a bidirectional layer, restart at the same steps
        from their own initial carry. With ``kernel="cudnn"`` the whole stack
        of :func:`jaxrnn.lstm` layers, every layer and direction, is one call
        to cuDNN (see :func:`jaxrnn.scan`); it also needs ``merge`` to be
        :func:`concat` when there are several bidirectional layers (a single
        one takes any ``merge``), and no ``key`` when ``dropout`` > 0.

    Example:
      >>> import jax, jax.numpy as jnp, jaxrnn
      >>> rnn = jaxrnn.stack(jaxrnn.gru(8), num_layers=2)
      >>> carry = rnn.initial_carry((4,))  # [num_layers, num_directions, B, H]
      >>> carry.shape
      (2, 1, 4, 8)
    """

    init: Callable[..., StackParams]
    initial_carry: Callable[..., Carry]
    apply: Callable[..., tuple[Carry, Array]]


def stack(
    cell: Cell,
    *,
    num_layers: int = 1,
    bidirectional: bool = False,
    merge: Merge = concat,
    dropout: float = 0.0,
) -> Stack:
    """Stack ``num_layers`` layers of ``cell``, optionally bidirectional, like PyTorch's RNNs.

    Layer ``l + 1`` reads the outputs of layer ``l``. A bidirectional layer runs
    one cell forward and one backward in time (within each sequence's length)
    and combines their outputs with ``merge(forward, backward)``. Layers after
    the first all have the same shapes: their params are stacked along a
    leading axis and run by a :func:`jax.lax.scan` over depth, so compile time
    does not grow with ``num_layers``.

    Args:
      cell: the :class:`Cell` of every layer and direction.
      num_layers: number of layers.
      bidirectional: whether each layer also runs backward in time.
      merge: combines the two directions' outputs; concatenation by default.
      dropout: rate of the dropout applied to the outputs of every layer but
        the last, as PyTorch's ``dropout``. It is active only when ``apply``
        gets a ``key``. For dropout inside the recurrence, stack a
        :func:`jaxrnn.recurrent_dropout` cell: ``apply(..., key=)`` then also
        draws its masks (``cell.draw``), afresh for each call, into the given
        or initial carry.

    Returns:
      A :class:`Stack`. ``apply``'s final carry has the cell's carry structure
      with leading axes ``[num_layers, num_directions]`` (direction 0 is
      forward), the layout of PyTorch's ``h_n`` before it flattens them.

    Example:
      >>> import jax, jax.numpy as jnp, jaxrnn
      >>> rnn = jaxrnn.stack(jaxrnn.lstm(32), num_layers=3, bidirectional=True, dropout=0.1)
      >>> params = rnn.init(jax.random.key(0), input_size=8)
      >>> xs = jnp.ones((20, 4, 8))  # [T, B, I]
      >>> carry, ys = rnn.apply(params, xs, lengths=jnp.array([20, 5, 9, 1]),
      ...                       key=jax.random.key(1))
      >>> ys.shape, carry.h.shape
      ((20, 4, 64), (3, 2, 4, 32))
    """
    check_positive_int(num_layers, "num_layers")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout: expected a rate in [0, 1), got {dropout!r}")
    if not callable(merge):
        raise TypeError(f"merge: expected a callable (forward, backward) -> y, got {merge!r}")
    num_directions = 2 if bidirectional else 1

    def init_layer(key: PRNGKey, input_size: int, dtype: Any) -> LayerParams:
        k_fwd, k_bwd = jax.random.split(key)
        backward = cell.init(k_bwd, input_size, dtype) if bidirectional else None
        return LayerParams(cell.init(k_fwd, input_size, dtype), backward)

    def layer_output_size(layer: LayerParams, input_size: int, dtype: Any) -> int:
        x = jax.ShapeDtypeStruct((input_size,), dtype)
        _, y = jax.eval_shape(cell.step, layer.forward, cell.initial_carry((), dtype), x)
        if bidirectional:
            y = jax.eval_shape(merge, y, y)
        return int(y.shape[-1])

    def init(key: PRNGKey, input_size: int, dtype: Any = jnp.float32) -> StackParams:
        check_positive_int(input_size, "input_size")
        keys = jax.random.split(key, num_layers)
        first = init_layer(keys[0], input_size, dtype)
        if num_layers == 1:
            return StackParams(first, None)
        inner_size = layer_output_size(first, input_size, dtype)
        rest = jax.vmap(lambda k: init_layer(k, inner_size, dtype))(keys[1:])
        return StackParams(first, rest)

    def initial_carry(batch_shape: Shape = (), dtype: Any = jnp.float32) -> Carry:
        return jax.tree.map(
            lambda a: jnp.zeros((num_layers, num_directions, *a.shape), a.dtype),
            cell.initial_carry(batch_shape, dtype),
        )

    def run_layer(
        layer: LayerParams,
        xs: Array,
        carry: Carry,
        lengths: Array | None,
        options: ScanOptions,
        resets: Array | None,
    ) -> tuple[Carry, Array]:
        def direction(d: int) -> Carry:
            return jax.tree.map(lambda a: a[d], carry)

        c_fwd, ys = scan(
            cell,
            layer.forward,
            xs,
            carry=direction(0),
            lengths=lengths,
            options=options,
            resets=resets,
        )
        if not bidirectional:
            return jax.tree.map(lambda a: a[None], c_fwd), ys
        c_bwd, ys_bwd = scan(
            cell,
            layer.backward,
            xs,
            carry=direction(1),
            lengths=lengths,
            reverse=True,
            options=options,
            resets=resets,
        )
        return jax.tree.map(lambda f, b: jnp.stack([f, b]), c_fwd, c_bwd), merge(ys, ys_bwd)

    def drop(ys: Array, key: PRNGKey | None) -> Array:
        if key is None or dropout == 0.0:
            return ys
        keep = jax.random.bernoulli(key, 1.0 - dropout, ys.shape)
        return jnp.where(keep, ys / (1.0 - dropout), 0).astype(ys.dtype)

    def apply(
        params: StackParams,
        xs: Array,
        *,
        carry: Carry | None = None,
        lengths: Array | None = None,
        key: PRNGKey | None = None,
        time_major: bool = True,
        options: ScanOptions | None = None,
        resets: Array | None = None,
        **kwargs: Unpack[ScanKwargs],
    ) -> tuple[Carry, Array]:
        _check_stack_params(params, num_layers, bidirectional)
        options = scan_options(options, dict(kwargs))
        xs, batch_shape = to_time_major(xs, time_major)
        resets = check_resets(resets, xs.shape[0], batch_shape, time_major)
        dtype = default_dtype(params, xs)
        expected = jax.eval_shape(lambda: initial_carry(batch_shape, dtype))
        if carry is None:
            carry = initial_carry(batch_shape, dtype)
        else:
            check_like(carry, expected, "carry")
        if options.kernel == "cudnn":
            lengths = check_lengths(lengths, batch_shape, xs.shape[0])
            finals, ys = _cudnn.stack(
                cell,
                params,
                zero_padding(xs, lengths),
                carry,
                lengths,
                options,
                resets,
                merge=None if merge is concat else merge,
                dropout=dropout,
                key=key,
            )
            return finals, from_time_major(ys, time_major, len(batch_shape))
        if key is not None and cell.draw is not None:
            # A recurrent_dropout cell: one mask per layer, direction and sequence, drawn
            # afresh for this call from a key of its own (inter-layer masks use the other).
            key, k_masks = jax.random.split(key)
            carry = cell.draw(k_masks, carry)

        first_carry, ys = run_layer(
            params.first, xs, jax.tree.map(lambda a: a[0], carry), lengths, options, resets
        )
        finals = jax.tree.map(lambda a: a[None], first_carry)
        if params.rest is not None:
            layer_keys = None if key is None else jax.random.split(key, num_layers - 1)

            def depth_step(ys: Array, layer_in: Any) -> tuple[Array, Carry]:
                layer, layer_carry, layer_key = layer_in
                new_carry, ys = run_layer(
                    layer, drop(ys, layer_key), layer_carry, lengths, options, resets
                )
                return ys, new_carry

            rest_carry = jax.tree.map(lambda a: a[1:], carry)
            ys, rest_finals = jax.lax.scan(depth_step, ys, (params.rest, rest_carry, layer_keys))
            finals = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), finals, rest_finals)
        return finals, from_time_major(ys, time_major, len(batch_shape))

    return Stack(init, initial_carry, apply)


def _check_stack_params(params: Any, num_layers: int, bidirectional: bool) -> None:
    if not isinstance(params, StackParams):
        raise TypeError(
            f"params: expected StackParams from Stack.init, got {type(params).__name__}"
        )
    layers = [params.first] + ([] if params.rest is None else [params.rest])
    for layer in layers:
        if (layer.backward is not None) != bidirectional:
            raise ValueError(
                f"params: expected params of a {'bi' if bidirectional else 'uni'}directional "
                f"stack, got {'bi' if layer.backward is not None else 'uni'}directional params"
            )
    got_layers = 1 + (0 if params.rest is None else len(jax.tree.leaves(params.rest)[0]))
    if got_layers != num_layers:
        raise ValueError(f"params: expected {num_layers} layers, got {got_layers}")

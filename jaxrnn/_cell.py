"""The `Cell` abstraction and the helpers every built-in cell shares.

Shape legend used in every docstring of the package:

* ``T`` — number of time steps;
* ``*batch`` — any number of leading batch dimensions, including none;
* ``I`` — input size, ``H`` — hidden size, ``O`` — output size of a cell
  (``O = H`` unless the cell has an output layer).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, TypeAlias

import jax
import jax.numpy as jnp

Array: TypeAlias = jax.Array
PRNGKey: TypeAlias = jax.Array
Params: TypeAlias = Any
Carry: TypeAlias = Any
Shape: TypeAlias = tuple[int, ...]
Activation: TypeAlias = Callable[[Array], Array]


class Cell(NamedTuple):
    """A recurrent cell as three pure functions.

    Hyper-parameters (hidden size, activation, initialisers) live in the
    closure of the factory that built the cell; arrays live in ``params`` and
    ``carry``. ``step`` has the signature of a :func:`jax.lax.scan` body, so
    ``functools.partial(cell.step, params)`` scans directly.

    Attributes:
      init: ``init(key, input_size, dtype=jnp.float32) -> params``, a typed
        NamedTuple of arrays.
      initial_carry: ``initial_carry(batch_shape=(), dtype=jnp.float32) ->
        carry``, all zeros. The carry is kept in at least float32 (a bfloat16
        cell has a float32 carry).
      step: ``step(params, carry, x) -> (carry, y)`` for ``x`` of shape
        ``[*batch, I]``, ``carry`` with the same ``*batch`` and ``y`` of shape
        ``[*batch, O]``. The returned carry has the structure, shapes and
        dtypes of the carry passed in.
      spec: for the built-in cells, a frozen description of the cell's
        equations (:class:`ElmanSpec`, :class:`LSTMSpec`, :class:`GRUSpec`)
        that lets :mod:`jaxrnn.reference` write out their backward pass; None
        for a user's cell. A cell built with ``Cell(init, initial_carry,
        step)`` has no spec.

    Example:
      >>> import functools, jax, jax.numpy as jnp, jaxrnn
      >>> cell = jaxrnn.gru(8)
      >>> params = cell.init(jax.random.key(0), 3)
      >>> xs = jnp.ones((5, 2, 3))  # [T, B, I]
      >>> carry, ys = jax.lax.scan(
      ...     functools.partial(cell.step, params), cell.initial_carry((2,)), xs)
      >>> ys.shape, carry.shape
      ((5, 2, 8), (2, 8))
    """

    init: Callable[..., Params]
    initial_carry: Callable[..., Carry]
    step: Callable[[Params, Carry, Array], tuple[Carry, Array]]
    spec: Any = None


_ACTIVATIONS: dict[str, Activation] = {
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "identity": lambda x: x,
    "sigmoid": jax.nn.sigmoid,
}


def resolve_activation(activation: str | Activation, name: str = "activation") -> Activation:
    """Return the activation function named by ``activation`` (or the callable itself)."""
    if callable(activation):
        return activation
    if isinstance(activation, str) and activation in _ACTIVATIONS:
        return _ACTIVATIONS[activation]
    raise ValueError(
        f"{name}: expected one of {sorted(_ACTIVATIONS)} or a callable, got {activation!r}"
    )


def activation_derivative(f: Activation, a: Array, fa: Array) -> Array:
    """f'(a) for an element-wise activation f, given a and f(a)."""
    if f is _ACTIVATIONS["tanh"]:
        return 1 - fa**2
    if f is _ACTIVATIONS["sigmoid"]:
        return fa * (1 - fa)
    if f is _ACTIVATIONS["relu"]:
        return (a > 0).astype(a.dtype)
    if f is _ACTIVATIONS["identity"]:
        return jnp.ones_like(a)
    # A user's activation: its element-wise derivative by one forward-mode product.
    return jax.jvp(f, (a,), (jnp.ones_like(a),))[1]


def check_positive_int(value: object, name: str) -> int:
    """Raise unless ``value`` is a positive Python integer."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    return value


def carry_dtype(dtype: Any) -> jnp.dtype:
    """The dtype a carry is stored in: ``dtype`` promoted to at least float32."""
    dtype = jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"dtype: expected a floating dtype, got {dtype}")
    return jnp.promote_types(dtype, jnp.float32)


def linear(x: Array, w: Array, b: Array | None) -> Array:
    """``x @ w.T + b`` for ``x`` of shape ``[N, in]``, ``w`` of shape ``[out, in]``.

    The weights choose the precision: the matmul runs in ``w.dtype`` (bfloat16
    weights give a bfloat16 matmul, whatever the dtype of ``x``) and
    accumulates in at least float32, which is also the dtype of the result.
    """
    acc = jnp.promote_types(w.dtype, jnp.float32)
    # A dot_general contracting both minor dims, not ``x @ w.T``: XLA:CPU then keeps
    # ``w`` in place instead of copying it transposed on every call (a 2x slower step
    # at batch 1).
    y = jax.lax.dot_general(
        x.astype(w.dtype), w, (((1,), (1,)), ((), ())), preferred_element_type=acc
    )
    if b is not None:
        y = y + b.astype(acc)[None, :]
    return y


def scan_in_chunks(
    run: Callable[[Carry, Any], tuple[Carry, Array]],
    carry: Carry,
    inputs: Any,
    size: int,
    reverse: bool,
    num_steps: int,
) -> tuple[Carry, Array]:
    """Checkpointing through time: ``run`` over chunks of ``size`` steps, each rematerialised.

    ``inputs`` are time-major with a multiple of ``size`` steps (padded and
    masked by the caller); ``run(carry, chunk) -> (carry, ys)`` scans one
    chunk. Only each chunk's first carry is kept for the backward pass, which
    recomputes the chunk. Returns the final carry and the first ``num_steps``
    outputs.
    """
    chunks = jax.tree.map(lambda a: a.reshape(-1, size, *a.shape[1:]), inputs)
    final, ys = jax.lax.scan(jax.checkpoint(run, prevent_cse=False), carry, chunks, reverse=reverse)
    return final, ys.reshape(-1, *ys.shape[2:])[:num_steps]


def check_step_input(x: Array, w_ih: Array) -> None:
    """Check that ``x`` is a floating array whose last axis is the input size of ``w_ih``."""
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(f"x: expected an array of shape [*batch, input_size], got {type(x)}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"x: expected a floating dtype, got {x.dtype}")
    if x.ndim < 1 or x.shape[-1] != w_ih.shape[1]:
        raise ValueError(
            f"x: expected shape [*batch, {w_ih.shape[1]}] (params were built for "
            f"input_size={w_ih.shape[1]}; w_ih has shape {tuple(w_ih.shape)}), "
            f"got shape {tuple(x.shape)}"
        )


def check_carry_leaf(leaf: Array, name: str, batch_shape: Shape, size: int) -> None:
    """Check that a carry leaf has shape ``[*batch_shape, size]``."""
    expected = (*batch_shape, size)
    if not hasattr(leaf, "shape") or tuple(leaf.shape) != expected:
        got = tuple(leaf.shape) if hasattr(leaf, "shape") else type(leaf).__name__
        raise ValueError(
            f"{name}: expected shape {expected} (batch shape of x, then the state size), got {got}"
        )


def to_rows(a: Array) -> Array:
    """Flatten all leading axes of ``a``: ``[*batch, F] -> [N, F]``."""
    return a.reshape(-1, a.shape[-1])

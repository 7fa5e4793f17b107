"""Initialisers for the built-in cells, exposed as options of the cell factories.

Every built-in cell takes ``init="pytorch" | "flax" | "keras"``, a preset that
draws its params as that library's own cell does by default, in jaxrnn's
layout (``w_ih`` ``[G*H, I]``, the transpose of a Flax or Keras kernel
``[I, G*H]``; gate blocks stacked on the rows):

========  ===================================  =================================  ============
preset    input weights ``w_ih``               recurrent weights ``w_hh``         biases
========  ===================================  =================================  ============
pytorch   U(±1/√H)                             U(±1/√H)                           U(±1/√H)
flax      lecun_normal (fan_in = I)            orthogonal, per gate block         zeros
          (GRU: ``nnx.GRUCell``'s one          (GRU: over the whole ``[3H, H]``)
          ``[I, 3H]`` kernel, the same law)
keras     glorot_uniform over the whole        orthogonal over the whole          zeros (LSTM:
          kernel, U(±√(6 / (I + G·H))))        ``[G*H, H]``                       forget block 1)
========  ===================================  =================================  ============

Weights outside a gated cell's peer (an LSTM's projection ``w_hr``, an Elman
cell's output layer ``w_hy``) are drawn as the preset's dense layer draws its
kernel: U(±1/√H), lecun_normal (``flax.nnx.Linear``) or glorot_uniform
(``keras.layers.Dense``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal, TypeAlias

import jax
import jax.numpy as jnp

from jaxrnn._cell import Array, PRNGKey, at_least_float32

Initializer: TypeAlias = Callable[[PRNGKey, tuple[int, ...], Any], Array]
"""``init(key, shape, dtype) -> array``, the signature of ``jax.nn.initializers``."""

RecurrentInit: TypeAlias = Literal["uniform", "orthogonal", "identity"] | Initializer

Preset: TypeAlias = Literal["pytorch", "flax", "keras"]
"""The ``init`` option of the built-in cells: whose default initialisation to follow."""

PRESETS: tuple[Preset, ...] = ("pytorch", "flax", "keras")

_RECURRENT_INITS = ("uniform", "orthogonal", "identity")


def uniform(key: PRNGKey, shape: tuple[int, ...], dtype: Any, bound: float) -> Array:
    """Samples from U(-bound, bound), drawn in float32 or wider, then cast to ``dtype``."""
    draw_dtype = at_least_float32(dtype)
    return jax.random.uniform(key, shape, draw_dtype, -bound, bound).astype(dtype)


def pytorch_bound(hidden_size: int) -> float:
    """PyTorch's default bound 1/√H for every weight and bias of its RNN modules."""
    return 1.0 / math.sqrt(hidden_size)


def check_preset(init: object) -> Preset:
    """``init`` itself, or a ValueError naming it and the presets."""
    for preset in PRESETS:
        if isinstance(init, str) and init == preset:
            return preset
    raise ValueError(f"init: expected one of {list(PRESETS)}, got {init!r}")


def check_recurrent_init(recurrent_init: RecurrentInit | None, *, allow_identity: bool) -> None:
    """Raise a ValueError for an unknown recurrent initialiser name (None: the preset's)."""
    if recurrent_init is None or callable(recurrent_init):
        return
    allowed = _RECURRENT_INITS if allow_identity else _RECURRENT_INITS[:2]
    if recurrent_init not in allowed:
        raise ValueError(
            f"recurrent_init: expected one of {list(allowed)} or a callable "
            f"(key, shape, dtype) -> array, got {recurrent_init!r}"
        )


def recurrent_matrix(
    recurrent_init: RecurrentInit,
    key: PRNGKey,
    num_blocks: int,
    rows: int,
    cols: int,
    bound: float,
    dtype: Any,
) -> Array:
    """A ``[num_blocks * rows, cols]`` recurrent matrix, one ``[rows, cols]`` block per gate.

    ``"uniform"`` draws the whole matrix from U(-bound, bound) (PyTorch's
    default); ``"orthogonal"`` makes every block (semi-)orthogonal;
    ``"identity"`` makes every block the identity (Le et al. 2015, IRNN); a
    callable is applied to every block.
    """
    if recurrent_init == "uniform":
        return uniform(key, (num_blocks * rows, cols), dtype, bound)
    if recurrent_init == "identity":
        if rows != cols:
            raise ValueError(
                f"recurrent_init: 'identity' needs a square recurrent block, got {rows}x{cols}"
            )
        return jnp.tile(jnp.eye(rows, dtype=dtype), (num_blocks, 1))
    block_init = orthogonal if recurrent_init == "orthogonal" else recurrent_init
    assert callable(block_init)
    keys = jax.random.split(key, num_blocks)
    blocks = [jnp.asarray(block_init(k, (rows, cols), at_least_float32(dtype))) for k in keys]
    return jnp.concatenate(blocks, axis=0).astype(dtype)


def check_chrono(chrono: int | None) -> None:
    """Raise unless ``chrono`` is None or an integer T_max ≥ 2."""
    if chrono is None:
        return
    if isinstance(chrono, bool) or not isinstance(chrono, int) or chrono < 2:
        raise ValueError(f"chrono: expected None or an integer T_max >= 2, got {chrono!r}")


def chrono_bias(key: PRNGKey, t_max: int, hidden_size: int, dtype: Any) -> Array:
    """Chrono bias b ~ log U[1, T_max - 1] (Tallec & Ollivier 2018), shape ``[H]``."""
    draw_dtype = at_least_float32(dtype)
    u = jax.random.uniform(key, (hidden_size,), draw_dtype, 1.0, float(t_max - 1))
    return jnp.log(u).astype(dtype)


def lecun_normal(key: PRNGKey, shape: tuple[int, int], dtype: Any) -> Array:
    """Flax's default kernel init for a ``[out, in]`` weight: fan_in = ``in``.

    ``jax.nn.initializers.lecun_normal``: a normal truncated to ±2σ, rescaled
    so that the variance is 1/fan_in. Drawn in float32 or wider, then cast.
    """
    draw = jax.nn.initializers.lecun_normal(in_axis=-1, out_axis=-2)
    return jnp.asarray(draw(key, shape, at_least_float32(dtype))).astype(dtype)


def glorot_uniform(key: PRNGKey, shape: tuple[int, int], dtype: Any) -> Array:
    """Keras's default kernel init for a ``[out, in]`` weight (the transpose of Keras's kernel).

    U(±√(6 / (fan_in + fan_out))), variance 2 / (fan_in + fan_out).
    """
    fan_out, fan_in = shape
    return uniform(key, shape, dtype, math.sqrt(6.0 / (fan_in + fan_out)))


def orthogonal(key: PRNGKey, shape: tuple[int, int], dtype: Any) -> Array:
    """A (semi-)orthogonal ``[rows, cols]`` matrix, drawn in float32 or wider, then cast.

    With rows > cols its columns are orthonormal: the transpose of the
    ``[cols, rows]`` kernel with orthonormal rows that Keras's ``Orthogonal``
    and ``jax.nn.initializers.orthogonal`` draw (for the same key, exactly it).
    """
    draw = jax.nn.initializers.orthogonal()
    return jnp.asarray(draw(key, shape, at_least_float32(dtype))).astype(dtype)


def dense_matrix(
    init: Preset, key: PRNGKey, shape: tuple[int, int], bound: float, dtype: Any
) -> Array:
    """A ``[out, in]`` non-recurrent weight as the preset's layers draw it.

    ``"pytorch"``: U(±bound); ``"flax"``: lecun_normal; ``"keras"``:
    glorot_uniform over the whole matrix.
    """
    if init == "flax":
        return lecun_normal(key, shape, dtype)
    if init == "keras":
        return glorot_uniform(key, shape, dtype)
    return uniform(key, shape, dtype, bound)


def recurrent_weights(
    init: Preset,
    recurrent_init: RecurrentInit | None,
    key: PRNGKey,
    num_blocks: int,
    rows: int,
    cols: int,
    bound: float,
    dtype: Any,
    *,
    flax_whole: bool = False,
) -> Array:
    """A ``[num_blocks * rows, cols]`` recurrent matrix: ``recurrent_init``, else the preset's.

    The preset's: ``"pytorch"``, U(±bound); ``"flax"``, orthogonal per gate
    block (over the whole matrix with ``flax_whole``, as ``flax.nnx.GRUCell``'s
    one recurrent kernel); ``"keras"``, orthogonal over the whole matrix.
    """
    if recurrent_init is not None:
        return recurrent_matrix(recurrent_init, key, num_blocks, rows, cols, bound, dtype)
    if init == "pytorch":
        return recurrent_matrix("uniform", key, num_blocks, rows, cols, bound, dtype)
    if init == "keras" or flax_whole:
        return orthogonal(key, (num_blocks * rows, cols), dtype)
    return recurrent_matrix("orthogonal", key, num_blocks, rows, cols, bound, dtype)


def bias_vector(init: Preset, key: PRNGKey, size: int, bound: float, dtype: Any) -> Array:
    """A ``[size]`` bias as the preset draws it: U(±bound) for ``"pytorch"``, else zeros."""
    if init == "pytorch":
        return uniform(key, (size,), dtype, bound)
    return jnp.zeros((size,), dtype)

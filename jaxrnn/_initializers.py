"""Initialisers for the built-in cells, exposed as options of the cell factories."""

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

_RECURRENT_INITS = ("uniform", "orthogonal", "identity")


def uniform(key: PRNGKey, shape: tuple[int, ...], dtype: Any, bound: float) -> Array:
    """Samples from U(-bound, bound), drawn in float32 or wider, then cast to ``dtype``."""
    draw_dtype = at_least_float32(dtype)
    return jax.random.uniform(key, shape, draw_dtype, -bound, bound).astype(dtype)


def pytorch_bound(hidden_size: int) -> float:
    """PyTorch's default bound 1/√H for every weight and bias of its RNN modules."""
    return 1.0 / math.sqrt(hidden_size)


def check_recurrent_init(recurrent_init: RecurrentInit, *, allow_identity: bool) -> None:
    """Raise a ValueError for an unknown recurrent initialiser name."""
    if callable(recurrent_init):
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
    block_init: Initializer
    if recurrent_init == "orthogonal":
        block_init = jax.nn.initializers.orthogonal()
    else:
        assert callable(recurrent_init)
        block_init = recurrent_init
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

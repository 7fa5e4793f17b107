"""Per-step clipping of the gradient that flows back through a cell's carry."""

from __future__ import annotations

from typing import Any, Literal

import jax
import jax.numpy as jnp

from jaxrnn._cell import Array, Carry, Cell, Params, at_least_float32


def _wide(g: Array) -> Any:
    return at_least_float32(g.dtype)


def clip_carry_grad(cell: Cell, bound: float, *, mode: Literal["norm", "value"] = "norm") -> Cell:
    r"""Wrap ``cell`` so that the gradient through its carry is clipped at every step.

    The forward pass is unchanged. In the backward pass, the cotangent
    ∂L/∂carry_{t-1} that step t sends back to step t − 1 is clipped before it
    goes further, so no step's carry gradient exceeds ``bound`` — the per-step
    clipping Graves (2013) used to keep BPTT stable, as opposed to clipping the
    total gradient once (``optax.clip_by_global_norm``).

    * ``mode="norm"``: each sequence's cotangent is rescaled to an L2 norm of
      at most ``bound``, the norm taken over the last axis of every carry leaf
      together (h and c of an LSTM count as one vector).
    * ``mode="value"``: every element is clipped to [−bound, bound].

    The wrapped cell has no ``spec``: :func:`jaxrnn.scan` differentiates it by
    plain autodiff. It keeps ``cell.draw`` (the masks of a
    :func:`jaxrnn.recurrent_dropout` cell).

    Args:
      cell: the cell to wrap.
      bound: the largest norm (or absolute value) a carry gradient may have.
      mode: ``"norm"`` or ``"value"``.

    Returns:
      A :class:`Cell` with the same ``init``, ``initial_carry`` and forward pass.

    Example:
      >>> import jax, jax.numpy as jnp, jaxrnn
      >>> cell = jaxrnn.clip_carry_grad(jaxrnn.elman(8), bound=1.0)
      >>> params = cell.init(jax.random.key(0), 2)
      >>> loss = lambda p: jaxrnn.scan(cell, p, jnp.ones((50, 4, 2)))[1].sum()
      >>> grads = jax.grad(loss)(params)

    References:
      Graves, "Generating sequences with recurrent neural networks", 2013.
    """
    if isinstance(bound, bool) or not isinstance(bound, int | float) or not bound > 0:
        raise ValueError(f"bound: expected a positive number, got {bound!r}")
    if mode not in ("norm", "value"):
        raise ValueError(f"mode: expected 'norm' or 'value', got {mode!r}")

    @jax.custom_vjp
    def clip(carry: Carry) -> Carry:
        return carry

    def clip_fwd(carry: Carry) -> tuple[Carry, None]:
        return carry, None

    def clip_bwd(_: None, cotangent: Carry) -> tuple[Carry]:
        if mode == "value":
            return (jax.tree.map(lambda g: jnp.clip(g, -bound, bound), cotangent),)
        leaves = jax.tree.leaves(cotangent)
        sq = sum(jnp.sum(jnp.square(g.astype(_wide(g))), axis=-1) for g in leaves)
        scale = jnp.minimum(1.0, bound / jnp.maximum(jnp.sqrt(sq), jnp.finfo(jnp.float32).tiny))

        def rescale(g: Array) -> Array:
            return (g * scale[..., None].astype(g.dtype)).astype(g.dtype)

        return (jax.tree.map(rescale, cotangent),)

    clip.defvjp(clip_fwd, clip_bwd)

    def step(params: Params, carry: Carry, x: Array) -> tuple[Carry, Any]:
        return cell.step(params, clip(carry), x)

    return Cell(cell.init, cell.initial_carry, step, draw=cell.draw)

"""Streaming truncated BPTT over one long sequence: Sutskever's TBPTT(k1, k2)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxrnn._cell import Array, Carry, Params, check_positive_int


class TBPTTState(NamedTuple):
    """Where a streaming TBPTT run stands.

    Attributes:
      params: the model's params.
      opt_state: the optax optimizer's state.
      carry: the carry at ``position``, the first step of the next window,
        computed by the forward pass (no gradient flows into it).
      position: int32 scalar, the first step of the next window in the stream.

    Example:
      >>> import jax.numpy as jnp, optax, jaxrnn
      >>> apply = lambda p, c, x: (c, x * p)
      >>> run = jaxrnn.tbptt(apply, lambda ys, t: jnp.sum(ys), optax.sgd(0.1), k1=4)
      >>> state = run.init(jnp.ones(()), jnp.zeros(()))
      >>> state.position
      Array(0, dtype=int32)
    """

    params: Params
    opt_state: optax.OptState
    carry: Carry
    position: Array


class TBPTT(NamedTuple):
    """The functions :func:`tbptt` returns.

    Attributes:
      init: ``init(params, carry) -> TBPTTState`` at position 0.
      update: ``update(state, xs, targets) -> (state, loss)``: one optimizer
        update on the next window of the streams ``xs`` ``[T, *batch, I]`` and
        ``targets`` ``[T, ...]`` (time-major, the whole stream: the window is
        sliced inside, so one compilation serves every window); every leaf
        of ``targets`` has the ``T`` of ``xs`` (else a ValueError names the
        leaf). ``loss`` is the loss of the window's last ``k1`` steps before
        the update.
      num_updates: ``num_updates(num_steps) -> int``, how many windows a
        stream of ``num_steps`` steps holds. Calling ``update`` more often
        re-reads the stream's last window (the slice start is clamped).

    Example:
      >>> import jax.numpy as jnp, optax, jaxrnn
      >>> apply = lambda p, c, x: (c, x * p)
      >>> run = jaxrnn.tbptt(apply, lambda ys, t: jnp.sum(ys), optax.sgd(0.1), k1=4)
      >>> run.num_updates(10)  # windows [0, 4) and [4, 8)
      2
    """

    init: Callable[[Params, Carry], TBPTTState]
    update: Callable[[TBPTTState, Array, Any], tuple[TBPTTState, Array]]
    num_updates: Callable[[int], int]


def tbptt(
    apply: Callable[[Params, Carry, Array], tuple[Carry, Array]],
    loss_fn: Callable[[Array, Any], Array],
    optimizer: optax.GradientTransformation,
    k1: int,
    k2: int | None = None,
) -> TBPTT:
    r"""Train on one long stream by TBPTT(k1, k2), carrying the state across updates.

    Every ``k1`` steps, backpropagate through the last ``k2 ≥ k1`` steps
    (Sutskever 2013; Williams & Peng's BPTT(h; h') with h = k2, h' = k1).
    Update n uses the window of steps ``[n·k1, n·k1 + k2)``:

    * the carry at the window's start comes from the forward pass of the
      previous window (computed with the params of that update; no gradient
      flows into it), so the state runs on across the whole stream the way a
      language model reads a long text;
    * the loss is ``loss_fn`` of the outputs of the window's last ``k1``
      steps (the steps no earlier update has seen), and its gradient flows
      back through all ``k2`` steps of the window;
    * the first ``k2 − k1`` steps of the stream only warm the state up: no
      loss is taken on them.

    ``k2 = k1`` (the default) gives non-overlapping chunks with the carry
    passed on, which is ``jaxrnn.scan(..., truncate=k1)`` applied one chunk per
    update.

    Args:
      apply: ``apply(params, carry, xs) -> (carry, ys)`` over time-major
        ``xs`` — e.g. ``lambda p, c, x: jaxrnn.scan(cell, p, x, carry=c)``, or
        a stack with a readout.
      loss_fn: ``loss_fn(ys, targets) -> scalar`` for the ``k1`` scored steps
        (``ys`` ``[k1, ...]`` and ``targets`` sliced to the same steps).
      optimizer: an optax ``GradientTransformation``.
      k1: steps between updates (and steps scored per update), a positive
        integer (Python, NumPy or concrete JAX).
      k2: steps backpropagated per update, an integer ``k2 ≥ k1``; default ``k1``.

    Returns:
      A :class:`TBPTT` of ``init``, a jitted ``update`` and ``num_updates``.

    Example:
      >>> import jax, jax.numpy as jnp, optax, jaxrnn
      >>> cell = jaxrnn.lstm(16)
      >>> params = cell.init(jax.random.key(0), 1)
      >>> xs = jnp.sin(jnp.arange(1001.0) / 10)[:, None, None]  # one stream, [T, 1, 1]
      >>> apply = lambda p, c, x: jaxrnn.scan(cell, p, x, carry=c)
      >>> loss_fn = lambda ys, target: jnp.mean((ys[..., 0] - target) ** 2)
      >>> run = jaxrnn.tbptt(apply, loss_fn, optax.adam(1e-2), k1=20, k2=50)
      >>> state = run.init(params, cell.initial_carry((1,)))
      >>> for _ in range(run.num_updates(1000)):  # predict the next value
      ...     state, loss = run.update(state, xs[:-1], xs[1:, :, 0])
      >>> int(state.position)
      960

    References:
      Williams & Peng, "An efficient gradient-based algorithm for on-line
      training of recurrent network trajectories", 1990. Sutskever, "Training
      recurrent neural networks", PhD thesis, 2013, §4.
    """
    k1 = check_positive_int(k1, "k1")  # an int, also when given a NumPy or JAX integer
    k2 = k1 if k2 is None else check_positive_int(k2, "k2")
    if k2 < k1:
        raise ValueError(f"k2: expected at least k1 = {k1}, got {k2}")
    warmup = k2 - k1

    def init(params: Params, carry: Carry) -> TBPTTState:
        return TBPTTState(params, optimizer.init(params), carry, jnp.zeros((), jnp.int32))

    def num_updates(num_steps: int) -> int:
        return max(0, (num_steps - k2) // k1 + 1)

    def window(stream: Any, start: Array) -> Any:
        return jax.tree.map(lambda a: jax.lax.dynamic_slice_in_dim(a, start, k2, axis=0), stream)

    def window_loss(params: Params, carry: Carry, xs: Array, targets: Any) -> Any:
        # The window in two pieces, so that the carry at step k1 (the start of
        # the next window) comes out of the same forward pass.
        carry_next, ys_head = apply(params, carry, xs[:k1])
        _, ys_tail = apply(params, carry_next, xs[k1:]) if warmup else (None, ys_head[:0])
        ys = jnp.concatenate([ys_head, ys_tail], axis=0)[warmup:]
        scored = jax.tree.map(lambda a: a[warmup:], targets)
        return loss_fn(ys, scored), jax.lax.stop_gradient(carry_next)

    @jax.jit
    def update(state: TBPTTState, xs: Array, targets: Any) -> tuple[TBPTTState, Array]:
        if xs.shape[0] < k2:
            raise ValueError(
                f"xs: expected a stream of at least k2 = {k2} steps, got {xs.shape[0]}"
            )
        _check_targets(targets, xs.shape[0])
        grad_fn = jax.value_and_grad(window_loss, has_aux=True)
        (loss, carry), grads = grad_fn(
            state.params, state.carry, window(xs, state.position), window(targets, state.position)
        )
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return TBPTTState(params, opt_state, carry, state.position + k1), loss

    return TBPTT(init, update, num_updates)


def _check_targets(targets: Any, num_steps: int) -> None:
    """Raise unless every leaf of ``targets`` has a leading (time) axis of ``num_steps``.

    ``update`` slices the window out of each leaf with ``dynamic_slice``, which
    clamps its start: a shorter leaf would silently give misaligned targets.
    """
    for path, leaf in jax.tree_util.tree_flatten_with_path(targets)[0]:
        shape = jnp.shape(leaf)
        if not shape or shape[0] != num_steps:
            got = f"{shape[0]} steps" if shape else "a scalar"
            raise ValueError(
                f"targets{jax.tree_util.keystr(path)}: expected a stream of "
                f"{num_steps} steps (the length of xs) on the leading axis, got {got} "
                f"(shape {shape})"
            )

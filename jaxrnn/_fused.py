"""The fused BPTT fast path: one sequence-level custom VJP over a cell's own rules.

The structure cuDNN uses. Forward: the input projection of every step is one
matmul before the loop; the loop does one recurrent matmul per step and saves
what the backward pass needs. Backward: a reverse loop with one recurrent
matmul per step, then every weight gradient as one large matmul over all
T·N rows. The per-step rules belong to each cell's module
(:class:`jaxrnn._cell.FusedRules`, from ``cell.spec.fused_rules()``); this
module knows no cell. :func:`jaxrnn.reference.bptt` writes out the same
recursions independently.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxrnn._cell import Array, Carry, Cell, FusedRules, Params, Spec, described_spec
from jaxrnn._checks import ScanOptions
from jaxrnn._sequential import scan_in_chunks, where_valid


def rules_for(cell: Cell, params: Params, xs: Array, carry: Carry) -> FusedRules | None:
    """The fused rules that compute exactly ``cell.step`` here, or None.

    None unless the cell's spec describes its own step (a replaced or wrapped
    step is run by autodiff through that step), the spec has rules that
    cover these params, and params, inputs and carry share one float32 or
    float64 dtype.
    """
    spec = described_spec(cell)
    rules = None if spec is None else spec.fused_rules()
    if rules is None or not rules.applies(params):
        return None
    dtypes = {a.dtype for a in jax.tree.leaves((params, xs, carry))}
    if len(dtypes) != 1 or dtypes.pop() not in (jnp.float32, jnp.float64):
        return None
    return rules


def takes(
    cell: Cell,
    params: Params,
    xs: Array,
    carry: Carry,
    options: ScanOptions,
    num_feature_axes: int,
) -> bool:
    """Whether the sequential method runs on the fused path: exactly ``cell.step``, fused.

    The default ``backward``, no ``truncate``, one feature axis, at least one
    step, and fused rules for these params (:func:`rules_for`).
    """
    return (
        options.backward == "fused"
        and options.truncate is None
        and num_feature_axes == 1
        and xs.shape[0] > 0
        and rules_for(cell, params, xs, carry) is not None
    )


def fused_scan(
    cell: Cell,
    params: Params,
    xs: Array,
    carry: Carry,
    lengths: Array | None,
    reverse: bool,
    unroll: int | bool,
    checkpoint: int | None = None,
    fresh: Array | None = None,
) -> tuple[Carry, Array]:
    """:func:`jaxrnn.scan` through the fused custom VJP (checked, time-major, padding zeroed).

    The caller has checked :func:`rules_for`. With ``checkpoint=k`` the steps
    run in chunks of k under :func:`jax.checkpoint`: only each chunk's first
    carry is kept, and the backward pass recomputes the chunk's fused forward
    before its fused backward. ``fresh`` (:func:`jaxrnn._sequential.fresh_steps`):
    the steps that start from ``carry``, the initial carry.
    """
    run = chunk_runner(cell, params, lengths, reverse, unroll, init=carry, fresh=fresh)
    inputs = (jnp.arange(xs.shape[0], dtype=jnp.int32), xs)
    if checkpoint is None:
        return run(carry, inputs)
    return scan_in_chunks(run, carry, inputs, checkpoint, reverse)


def chunk_runner(
    cell: Cell,
    params: Params,
    lengths: Array | None,
    reverse: bool,
    unroll: int | bool,
    *,
    init: Carry = None,
    fresh: Array | None = None,
) -> Callable[[Carry, tuple[Array, Array]], tuple[Carry, Array]]:
    """``run(carry, (t, xs)) -> (carry, ys)`` over some steps, through one fused custom VJP.

    ``t`` holds the steps' indices in the whole sequence (they decide the
    mask and the resets), ``xs`` their time-major inputs ``[k, *batch, I]``;
    the caller has checked :func:`rules_for` and zeroed the padding.
    ``fresh`` ``[T, *batch]``: the steps of the whole sequence whose carry
    before them is ``init`` (the custom VJP sends their carry cotangent to
    ``init`` and none to the step before).
    """
    spec = described_spec(cell)
    assert spec is not None
    rules = _rules(spec)
    core_params = params if rules.core is None else rules.core(params)
    flat_lengths = None if lengths is None else lengths.reshape(-1)
    init_rows = None
    if fresh is not None:
        init_rows = jax.tree.map(lambda a: a.reshape(-1, a.shape[-1]), init)

    def run(carry: Carry, inputs: tuple[Array, Array]) -> tuple[Carry, Array]:
        t, xs = inputs
        num_steps, batch_shape = xs.shape[0], xs.shape[1:-1]
        rows = xs.reshape(num_steps, -1, xs.shape[-1])
        carry_rows = jax.tree.map(lambda a: a.reshape(-1, a.shape[-1]), carry)
        valid = None
        if flat_lengths is not None:
            valid = t.astype(flat_lengths.dtype)[:, None] < flat_lengths[None, :]
        fresh_rows = None if fresh is None else fresh[t].reshape(num_steps, -1)
        final, ys = _core(
            spec, reverse, unroll, core_params, rows, carry_rows, valid, init_rows, fresh_rows
        )
        if rules.readout is not None:
            ys = rules.readout(params, ys)
            if valid is not None:
                ys = jnp.where(valid[..., None], ys, 0)
        final = jax.tree.map(lambda a, c: a.reshape(c.shape), final, carry)
        return final, ys.reshape(num_steps, *batch_shape, ys.shape[-1])

    return run


def _where(mask: Array | None, new: Any, old: Any) -> Any:
    return new if mask is None else where_valid(mask, new, old)


def _rules(spec: Spec) -> FusedRules:
    rules = spec.fused_rules()
    assert rules is not None
    return rules


def _forward(
    spec: Spec,
    reverse: bool,
    unroll: Any,
    params: Any,
    xs: Array,
    carry: Any,
    valid: Any,
    init: Any,
    fresh: Any,
) -> Any:
    rules = _rules(spec)
    prep = rules.prepare(params)

    def body(carry: Any, inputs: Any) -> Any:
        xp, v, f = inputs
        if f is not None:  # a segment's first step starts from the initial carry
            carry = where_valid(f, init, carry)
        new, y, saved = rules.forward(prep, carry, xp)
        return _where(v, new, carry), (_where(v, y, jnp.zeros_like(y)), saved)

    final, (ys, saved) = jax.lax.scan(
        body, carry, (rules.project(params, xs), valid, fresh), reverse=reverse, unroll=unroll
    )
    return final, ys, saved


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _core(
    spec: Spec,
    reverse: bool,
    unroll: Any,
    params: Any,
    xs: Array,
    carry: Any,
    valid: Any,
    init: Any,
    fresh: Any,
) -> Any:
    final, ys, _ = _forward(spec, reverse, unroll, params, xs, carry, valid, init, fresh)
    return final, ys


def _core_fwd(
    spec: Spec,
    reverse: bool,
    unroll: Any,
    params: Any,
    xs: Array,
    carry: Any,
    valid: Any,
    init: Any,
    fresh: Any,
) -> Any:
    final, ys, saved = _forward(spec, reverse, unroll, params, xs, carry, valid, init, fresh)
    return (final, ys), (params, xs, valid, fresh, saved)


def _core_bwd(spec: Spec, reverse: bool, unroll: Any, residuals: Any, cotangents: Any) -> Any:
    params, xs, valid, fresh, saved = residuals
    dfinal, dys = cotangents
    rules = _rules(spec)
    prep = rules.prepare(params)

    def body(state: Any, inputs: Any) -> Any:
        dcarry, dinit = state
        saved_t, dy, v, f = inputs
        dcarry_in, dxp, drec, *others = rules.backward(prep, saved_t, dcarry, dy)
        grads = (dxp, drec, others[0] if others else {})
        masked = _where(v, grads, jax.tree.map(jnp.zeros_like, grads))
        dcarry_in = _where(v, dcarry_in, dcarry)
        if f is not None:
            # A fresh step read the initial carry: its carry cotangent goes there, none before.
            zeros = jax.tree.map(jnp.zeros_like, dcarry_in)
            dinit = jax.tree.map(jnp.add, dinit, where_valid(f, dcarry_in, zeros))
            dcarry_in = where_valid(f, zeros, dcarry_in)
        return (dcarry_in, dinit), masked

    dinit0 = None if fresh is None else jax.tree.map(jnp.zeros_like, dfinal)
    (dcarry0, dinit), (dxp, drec, dothers) = jax.lax.scan(
        body, (dfinal, dinit0), (saved, dys, valid, fresh), reverse=not reverse
    )
    if drec is None:
        drec = dxp
    h_in = saved[0]
    # Every weight gradient is one matmul over all T·N rows.
    db_ih, db_hh = dxp.sum(axis=(0, 1)), drec.sum(axis=(0, 1))
    biases = {"b_ih": db_ih, "b_hh": db_hh}
    dparams = params._replace(
        w_ih=jnp.einsum("tng,tni->gi", dxp, xs),
        w_hh=jnp.einsum("tng,tnh->gh", drec, h_in),
        **{k: d for k, d in biases.items() if getattr(params, k, None) is not None},
        **{k: d.sum(axis=(0, 1)) for k, d in dothers.items()},
    )
    dxs = jnp.einsum("tng,gi->tni", dxp, params.w_ih)
    return dparams, dxs, dcarry0, None, dinit, None


_core.defvjp(_core_fwd, _core_bwd)

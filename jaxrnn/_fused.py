"""The fused BPTT fast path: one sequence-level custom VJP over a cell's own rules.

The structure cuDNN uses. Forward: the input projection of every step is one
matmul before the loop; the loop does one recurrent matmul per step and saves
what the backward pass needs. Backward: a reverse loop with one recurrent
matmul per step, then every weight gradient as one large matmul over all
T·N rows. The per-step rules belong to each cell's module
(:class:`jaxrnn._cell.FusedRules`, from ``cell.spec.fused_rules()``); this
module knows no cell. :func:`jaxrnn.reference.bptt` writes out the same
recursions independently.

Memory: where a cell's rules name a ``slab`` residual (the LSTM's gates), the
input slab, that residual and the backward's input-slab cotangent share one
``[T, N, G·H]`` buffer (:func:`_scan_over_slab`). On a 2-core AMD EPYC this
made the LSTM training step 1.06–1.20× faster from B=32 on (T=100, B=64,
I=64, H=128: 31 MB of temporary memory instead of 51 MB) and left B=1 as it
was; the Elman cell and the layer-normalised LSTM do not take it (their
B=1 steps became slower).

Precision (:func:`rules_for`): the products take their operands in the
params' dtype and accumulate in at least float32, where the element-wise
work, the saved residuals and the backward pass's carry cotangent stay; the
carry is stored in its own dtype after every step, as ``cell.step`` stores
it. So bfloat16 params run bfloat16 matmuls, and every weight gradient is
summed in float32 over all T·N rows (across checkpointed chunks too) and
rounded to bfloat16 once. The residuals are kept in float32, measured
against bfloat16 residuals on a 2-core CPU: those gave a fifth to a third
more gradient error (LSTM, GRU at T=50) and a 1.1–2.4× slower bfloat16
training step (conversions in both loops) for 13% less temporary memory
(LSTM at T=100, B=32, H=128; 0% for the GRU).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxrnn._cell import (
    Array,
    Carry,
    Cell,
    FusedRules,
    Params,
    Spec,
    at_least_float32,
    cast,
    described_spec,
)
from jaxrnn._checks import ScanOptions
from jaxrnn._sequential import scan_in_chunks, where_valid

# The dtypes the fused path takes: XLA multiplies each of them on every backend.
_DTYPES = frozenset(map(jnp.dtype, (jnp.bfloat16, jnp.float16, jnp.float32, jnp.float64)))


def rules_for(cell: Cell, params: Params, xs: Array, carry: Carry) -> FusedRules | None:
    """The fused rules that compute exactly ``cell.step`` here, or None.

    None unless the cell's spec describes its own step (a replaced or wrapped
    step is run by autodiff through that step), the spec has rules that
    cover these params, the params share one dtype, and that dtype, the
    inputs' and each carry leaf's are bfloat16, float16, float32 or float64.

    Mixed dtypes are computed as ``cell.step`` computes them: the params'
    dtype is the matmuls' (inputs and carry are cast to it for each
    product), the accumulation and the element-wise work are in at least
    float32, each carry leaf keeps its dtype from step to step, and the
    outputs have the dtype of ``x`` and ``w_ih`` promoted. So bfloat16
    params with a float32 carry (what ``initial_carry`` gives them) compute
    in bfloat16 with float32 accumulation and keep a float32 carry, and
    float32 params with bfloat16 inputs compute in float32.
    """
    spec = described_spec(cell)
    rules = None if spec is None else spec.fused_rules()
    if rules is None or not rules.applies(params):
        return None
    param_dtypes = {jnp.dtype(a.dtype) for a in jax.tree.leaves(params)}
    others = {jnp.dtype(a.dtype) for a in jax.tree.leaves((xs, carry))}
    if len(param_dtypes) != 1 or not param_dtypes | others <= _DTYPES:
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
    dtype = jnp.dtype(params.w_ih.dtype)  # the params' one dtype (rules_for), the products'
    # The params enter the custom VJP in the accumulation dtype (exactly), so that their
    # cotangent is summed there over all steps, across checkpointed chunks too, and
    # rounded to the params' dtype once, by this cast's transpose.
    params_acc = cast(params, at_least_float32(dtype))
    core_params = params_acc if rules.core is None else rules.core(params_acc)
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
            spec,
            reverse,
            unroll,
            dtype,
            core_params,
            rows,
            carry_rows,
            valid,
            init_rows,
            fresh_rows,
        )
        if rules.readout is not None:
            ys = rules.readout(cast(params_acc, dtype), ys).astype(ys.dtype)
            if valid is not None:
                ys = jnp.where(valid[..., None], ys, 0)
        final = jax.tree.map(lambda a, c: a.reshape(c.shape), final, carry)
        return final, ys.reshape(num_steps, *batch_shape, ys.shape[-1])

    return run


def _where(mask: Array | None, new: Any, old: Any) -> Any:
    return new if mask is None else where_valid(mask, new, old)


def _cast_like(tree: Any, like: Any) -> Any:
    return jax.tree.map(lambda a, b: a.astype(b.dtype), tree, like)


def _rules(spec: Spec) -> FusedRules:
    rules = spec.fused_rules()
    assert rules is not None
    return rules


def _forward(
    spec: Spec,
    reverse: bool,
    unroll: Any,
    dtype: Any,
    params: Any,
    xs: Array,
    carry: Any,
    valid: Any,
    init: Any,
    fresh: Any,
    in_place: bool = False,
) -> Any:
    """The forward loop: ``(final, ys, saved)``.

    ``in_place`` (for the backward pass, with ``rules.slab``): the slab
    residual is written over the input slab, one buffer for both.
    """
    rules = _rules(spec)
    params = cast(params, dtype)  # back to the params' own dtype, exactly
    prep = rules.prepare(params)
    acc, out = at_least_float32(dtype), jnp.result_type(xs, params.w_ih)
    slab = rules.slab if in_place else None

    def step(carry: Any, xp: Any, v: Any, f: Any) -> Any:
        if f is not None:  # a segment's first step starts from the initial carry
            carry = where_valid(f, _cast_like(init, carry), carry)
        # The rules compute in the accumulation dtype; the carry keeps its own, as in cell.step.
        new, y, saved = rules.forward(prep, cast(carry, acc), xp)
        new, y = _cast_like(new, carry), y.astype(out)
        return _where(v, new, carry), _where(v, y, jnp.zeros_like(y)), saved

    xp = rules.project(params, xs)
    if slab is None:

        def body(carry: Any, inputs: Any) -> Any:
            carry, y, saved = step(carry, *inputs)
            return carry, (y, saved)

        final, (ys, saved) = jax.lax.scan(
            body, carry, (xp, valid, fresh), reverse=reverse, unroll=unroll
        )
        return final, ys, saved

    def slab_body(carry: Any, xp_t: Any, inputs: Any) -> Any:
        carry, y, saved = step(carry, xp_t, *inputs)
        return carry, saved[slab], (y, _without(saved, slab))

    final, residual, (ys, saved) = _scan_over_slab(
        slab_body, carry, xp, (valid, fresh), reverse, unroll
    )
    return final, ys, _with(saved, slab, residual)


def _scan_over_slab(
    body: Callable[[Any, Any, Any], tuple[Any, Any, Any]],
    carry: Any,
    slab: Any,
    xs: Any,
    reverse: bool,
    unroll: Any = 1,
) -> tuple[Any, Any, Any]:
    """``lax.scan`` whose steps each replace their slice of ``slab`` ``[T, ...]``, in place.

    ``body(carry, slab_t, x_t) -> (carry, new_slab_t, y_t)``; returns
    ``(carry, new_slab, ys)``. One buffer serves as the step's input and
    its output, so the loop neither zero-fills nor writes a second
    ``[T, ...]`` array (and a step's temporary memory stays smaller:
    XLA:CPU allocates it afresh on every call, page by page, once it
    passes glibc's 32 MB reuse ceiling). Each step's slice is written at
    the start of the next step, before that step's read: read and written
    in the same step, the buffer is copied whole on every step by
    XLA:CPU.
    """
    num_steps = jax.tree.leaves(slab)[0].shape[0]
    first = num_steps - 1 if reverse else 0

    def read(buf: Any, t: Any) -> Any:
        return jax.tree.map(lambda a: jax.lax.dynamic_index_in_dim(a, t, keepdims=False), buf)

    def write(buf: Any, new: Any, t: Any) -> Any:
        return jax.tree.map(lambda a, n: jax.lax.dynamic_update_index_in_dim(a, n, t, 0), buf, new)

    def loop(state: Any, inputs: Any) -> Any:
        carry, buf, pending = state
        t, x = inputs
        before = jnp.clip(t + 1 if reverse else t - 1, 0, num_steps - 1)
        buf = write(buf, pending, before)  # the step before's slice, then this step's read
        carry, new, y = body(carry, read(buf, t), x)
        return (carry, buf, new), y

    t0 = jnp.asarray(first, jnp.int32)
    state = (carry, slab, read(slab, t0))  # the first write puts back what is there
    steps = jnp.arange(num_steps, dtype=jnp.int32)
    (carry, buf, pending), ys = jax.lax.scan(
        loop, state, (steps, xs), reverse=reverse, unroll=unroll
    )
    return carry, write(buf, pending, num_steps - 1 - first), ys


def _without(saved: tuple[Any, ...], k: int) -> tuple[Any, ...]:
    return (*saved[:k], None, *saved[k + 1 :])


def _with(saved: tuple[Any, ...], k: int, item: Any) -> tuple[Any, ...]:
    return (*saved[:k], item, *saved[k + 1 :])


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2, 3))
def _core(
    spec: Spec,
    reverse: bool,
    unroll: Any,
    dtype: Any,
    params: Any,
    xs: Array,
    carry: Any,
    valid: Any,
    init: Any,
    fresh: Any,
) -> Any:
    """The fused scan over rows: ``params`` in the accumulation dtype, products in ``dtype``."""
    final, ys, _ = _forward(spec, reverse, unroll, dtype, params, xs, carry, valid, init, fresh)
    return final, ys


def _core_fwd(
    spec: Spec,
    reverse: bool,
    unroll: Any,
    dtype: Any,
    params: Any,
    xs: Array,
    carry: Any,
    valid: Any,
    init: Any,
    fresh: Any,
) -> Any:
    final, ys, saved = _forward(
        spec, reverse, unroll, dtype, params, xs, carry, valid, init, fresh, in_place=True
    )
    return (final, ys), (params, xs, valid, fresh, saved)


def _core_bwd(
    spec: Spec, reverse: bool, unroll: Any, dtype: Any, residuals: Any, cotangents: Any
) -> Any:
    params_acc, xs, valid, fresh, saved = residuals
    dfinal, dys = cotangents
    rules = _rules(spec)
    params = cast(params_acc, dtype)
    prep = rules.prepare(params)
    # The carry cotangent stays in the accumulation dtype from step to step (autodiff rounds
    # it to a bfloat16 carry's dtype after every step): an LSTM's cell state passes its
    # cotangent back unrounded. Products take their operands in the params' dtype, so the
    # part that goes back through W_hh is rounded there, as in autodiff.
    acc = at_least_float32(dtype)

    def step(state: Any, saved_t: Any, dy: Any, v: Any, f: Any) -> Any:
        dcarry, dinit = state
        dcarry_in, dxp, drec, *others = rules.backward(prep, saved_t, dcarry, dy.astype(acc))
        grads = (dxp, drec, others[0] if others else {})
        masked = _where(v, grads, jax.tree.map(jnp.zeros_like, grads))
        dcarry_in = _where(v, dcarry_in, dcarry)
        if f is not None:
            # A fresh step read the initial carry: its carry cotangent goes there, none before.
            zeros = jax.tree.map(jnp.zeros_like, dcarry_in)
            dinit = jax.tree.map(jnp.add, dinit, where_valid(f, dcarry_in, zeros))
            dcarry_in = where_valid(f, zeros, dcarry_in)
        return (dcarry_in, dinit), masked

    dcarry = cast(dfinal, acc)
    dinit0 = None if fresh is None else jax.tree.map(jnp.zeros_like, dcarry)
    slab = rules.slab
    if slab is None:

        def body(state: Any, inputs: Any) -> Any:
            return step(state, *inputs)

        (dcarry0, dinit), (dxp, drec, dothers) = jax.lax.scan(
            body, (dcarry, dinit0), (saved, dys, valid, fresh), reverse=not reverse
        )
    else:
        # The backward reads each step's slab residual and writes dxp over it (one buffer).
        def slab_body(state: Any, residual_t: Any, inputs: Any) -> Any:
            saved_t, *rest = inputs
            state, (dxp_t, drec_t, others_t) = step(state, _with(saved_t, slab, residual_t), *rest)
            return state, dxp_t, (drec_t, others_t)

        (dcarry0, dinit), dxp, (drec, dothers) = _scan_over_slab(
            slab_body,
            (dcarry, dinit0),
            saved[slab],
            (_without(saved, slab), dys, valid, fresh),
            not reverse,
        )
    if drec is None:
        drec = dxp
    h_in = saved[0]

    def rows_product(spec_: str, a: Array, b: Array) -> Array:
        """A product over all T·N rows: operands in the params' dtype, accumulated in ``acc``."""
        return jnp.einsum(spec_, a.astype(dtype), b.astype(dtype), preferred_element_type=acc)

    # Every weight gradient is one matmul over all T·N rows, summed in the accumulation dtype;
    # an input slab of several gate blocks (the GRU's) gives one matmul per block.
    blocks = jax.tree.leaves(dxp)
    db_ih = jnp.concatenate([d.sum(axis=(0, 1)) for d in blocks])
    db_hh = drec.sum(axis=(0, 1))
    biases = {"b_ih": db_ih, "b_hh": db_hh}
    dparams = params._replace(
        w_ih=jnp.concatenate([rows_product("tng,tni->gi", d, xs) for d in blocks]),
        w_hh=rows_product("tng,tnh->gh", drec, h_in),
        **{k: d for k, d in biases.items() if getattr(params, k, None) is not None},
        **{k: d.sum(axis=(0, 1)) for k, d in dothers.items()},
    )
    dparams = _cast_like(dparams, params_acc)  # rounded to the params' dtype by the caller
    w_blocks = jnp.split(params.w_ih, list(itertools.accumulate(d.shape[-1] for d in blocks[:-1])))
    dxs = functools.reduce(
        jnp.add,
        (
            jnp.einsum("tng,gi->tni", d.astype(dtype), w, preferred_element_type=acc)
            for d, w in zip(blocks, w_blocks, strict=True)
        ),
    )
    dinit = None if dinit is None else _cast_like(dinit, dfinal)
    return dparams, dxs.astype(xs.dtype), _cast_like(dcarry0, dfinal), None, dinit, None


_core.defvjp(_core_fwd, _core_bwd)

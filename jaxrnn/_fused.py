"""The fused BPTT fast path for the built-in cells: one sequence-level custom VJP.

The structure cuDNN uses. Forward: the input projection of every step is one
matmul before the loop; the loop does one recurrent matmul per step and saves
what the backward pass needs. Backward: a reverse loop with one recurrent
matmul per step, then every weight gradient as one large matmul over all
T·N rows. :func:`jaxrnn.reference.bptt` writes out the same recursions.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxrnn._cell import Array, Carry, Cell, activation_derivative, scan_in_chunks
from jaxrnn._elman import ElmanSpec
from jaxrnn._gru import GRUParams, GRUSpec
from jaxrnn._lstm import LSTMCarry, LSTMSpec


class _Rules(NamedTuple):
    """One cell's fused forward and backward step.

    ``project(params, xs)``: the input slab of every step (one matmul, no bias; the
    GRU's: one slab per gate).
    ``prepare(params)``: what the steps read, made once outside the time loop:
    the recurrent matrix transposed to ``[H, G·H]`` (so that the per-step
    product needs no transposition) and the bias rows, added inside the loop's
    elementwise pass rather than in a separate pass over the ``[T, N, G·H]`` slab.
    ``forward(prep, carry, xp_t) -> (carry, y, saved)``: ``saved[0]`` is h_{t-1}.
    ``backward(prep, saved, dcarry, dy) -> (dcarry_in, dxp, drec)``: the
    gradients of the input slab and of the recurrent slab ``h_{t-1} W_hh^T + b_hh``;
    ``drec`` is None where the two are the same array (Elman, LSTM).
    """

    project: Callable[..., Any]
    prepare: Callable[..., Any]
    forward: Callable[..., tuple[Any, Array, tuple[Array, ...]]]
    backward: Callable[..., tuple[Any, Array, Array]]


class _Prepared(NamedTuple):
    w_hh: Array  # [G·H, H], for the backward product dz @ W_hh
    w_hh_t: Any  # [H, G·H] for the forward product h @ W_hh^T; the GRU's: one [H, H] per gate
    bias: Any  # [1, G·H] row added to every step's pre-activations, or 0; the GRU's: per gate
    extra: Any = None  # a cell's own additions (the GRU's recurrent bias b_hn)


def _bias_row(*biases: Array | None) -> Array | int:
    present = [b for b in biases if b is not None]
    return sum(b[None, :] for b in present) if present else 0


def _project(p: Any, xs: Array) -> Array:
    return jnp.einsum("tni,gi->tng", xs, p.w_ih)


def _prepare(p: Any) -> _Prepared:
    """The LSTM's and Elman's: both biases in one row."""
    return _Prepared(p.w_hh, p.w_hh.T, _bias_row(p.b_ih, p.b_hh))


def _lstm_forward(prep: _Prepared, carry: LSTMCarry, xp: Array) -> Any:
    h, c = carry
    hidden = c.shape[-1]
    # One tanh over the whole [i, f, g, o] slab: σ(z) = (1 + tanh(z/2))/2 on the i, f, o
    # blocks, tanh on the g block, so the activated gates come out of one elementwise
    # pass (tanh is cheaper than the logistic function on XLA:CPU).
    scale, offset = _g_block(hidden, 1.0, 0.5, c.dtype), _g_block(hidden, 0.0, 0.5, c.dtype)
    gates = scale * jnp.tanh(scale * (xp + h @ prep.w_hh_t + prep.bias)) + offset
    i, f, g, o = (gates[:, k * hidden : (k + 1) * hidden] for k in range(4))
    c_new = f * c + i * g
    tanh_c = jnp.tanh(c_new)
    h_new = o * tanh_c
    return LSTMCarry(h_new, c_new), h_new, (h, c, gates, tanh_c)


def _lstm_backward(prep: _Prepared, saved: Any, dcarry: LSTMCarry, dy: Array) -> Any:
    _, c, gates, tanh_c = saved
    hidden = c.shape[-1]
    i, f, g, o = (gates[:, k * hidden : (k + 1) * hidden] for k in range(4))
    dh = dcarry.h + dy
    dc = dcarry.c + dh * o * (1 - tanh_c**2)
    dgates = jnp.concatenate([dc * g, dc * c, dc * i, dh * tanh_c], axis=-1)
    # σ' = a(1 − a) on the sigmoid blocks, tanh' = (1 − a)(1 + a) on the g block.
    dz = dgates * (1 - gates) * (gates + _g_block(hidden, 1.0, 0.0, c.dtype))
    return LSTMCarry(dz @ prep.w_hh, dc * f), dz, None


def _g_block(hidden: int, inside: float, outside: float, dtype: Any) -> Array:
    """A [1, 4H] row: ``inside`` on the g (cell candidate) block, ``outside`` elsewhere."""
    row = jnp.full((1, 4 * hidden), outside, dtype)
    return row.at[:, 2 * hidden : 3 * hidden].set(inside)


def _gru_project(p: GRUParams, xs: Array) -> tuple[Array, Array, Array]:
    # One [T, N, H] slab per gate: a loop body that slices one [N, 3H] slab makes
    # XLA:CPU fuse the gates into a single slow loop (2.5x slower inference at H=64).
    r, z, n = (jnp.einsum("tni,gi->tng", xs, w) for w in _blocks(p.w_ih, p.w_hh.shape[1]))
    return r, z, n


def _gru_prepare(p: GRUParams) -> _Prepared:
    hidden = p.w_hh.shape[1]
    b_ih, b_hh = _bias_blocks(p.b_ih, hidden), _bias_blocks(p.b_hh, hidden)
    # b_hh of the r and z gates joins b_ih; the n gate's stays inside r ⊙ (W_hn h + b_hn).
    bias = (b_ih[0] + b_hh[0], b_ih[1] + b_hh[1], b_ih[2])
    return _Prepared(p.w_hh, tuple(w.T for w in _blocks(p.w_hh, hidden)), bias, b_hh[2])


def _blocks(a: Array, hidden: int) -> tuple[Array, Array, Array]:
    """The three gate blocks (r, z, n) of a stacked ``[3H, ...]`` weight or ``[3H]`` bias."""
    return a[:hidden], a[hidden : 2 * hidden], a[2 * hidden :]


def _bias_blocks(b: Array | None, hidden: int) -> tuple[Any, Any, Any]:
    """A GRU bias as three ``[1, H]`` rows, or three zeros."""
    if b is None:
        return 0, 0, 0
    r, z, n = _blocks(b, hidden)
    return r[None, :], z[None, :], n[None, :]


def _gru_forward(prep: _Prepared, h: Array, xp: tuple[Array, Array, Array]) -> Any:
    (x_r, x_z, x_n), (w_r, w_z, w_n), (b_r, b_z, b_n) = xp, prep.w_hh_t, prep.bias
    r = jax.nn.sigmoid(x_r + b_r + h @ w_r)
    z = jax.nn.sigmoid(x_z + b_z + h @ w_z)
    gh_n = h @ w_n + prep.extra
    n = jnp.tanh(x_n + b_n + r * gh_n)
    h_new = n + z * (h - n)
    return h_new, h_new, (h, r, z, n, gh_n)


def _gru_backward(prep: _Prepared, saved: Any, dh_out: Array, dy: Array) -> Any:
    h, r, z, n, gh_n = saved
    dh = dh_out + dy
    dn = dh * (1 - z) * (1 - n**2)
    dz = dh * (h - n) * z * (1 - z)
    dr = dn * gh_n * r * (1 - r)
    drec = jnp.concatenate([dr, dz, r * dn], axis=-1)
    return dh * z + drec @ prep.w_hh, jnp.concatenate([dr, dz, dn], axis=-1), drec


def _elman_rules(spec: ElmanSpec) -> _Rules:
    act = spec.activation

    def forward(prep: _Prepared, h: Array, xp: Array) -> Any:
        a = xp + h @ prep.w_hh_t + prep.bias
        h_new = act(a)
        return h_new, h_new, (h, a, h_new)

    def backward(prep: _Prepared, saved: Any, dh_out: Array, dy: Array) -> Any:
        _, a, h_new = saved
        da = (dh_out + dy) * activation_derivative(act, a, h_new)
        return da @ prep.w_hh, da, None

    return _Rules(_project, _prepare, forward, backward)


_LSTM = _Rules(_project, _prepare, _lstm_forward, _lstm_backward)
_GRU = _Rules(_gru_project, _gru_prepare, _gru_forward, _gru_backward)


def supports(cell: Cell, params: Any, xs: Array, carry: Carry) -> bool:
    """Whether the fused path computes this cell: a built-in cell in float32 or float64."""
    if isinstance(cell.spec, LSTMSpec):
        if params.w_hr is not None:
            return False
    elif not isinstance(cell.spec, ElmanSpec | GRUSpec):
        return False
    dtypes = {a.dtype for a in jax.tree.leaves((params, xs, carry))}
    return len(dtypes) == 1 and dtypes.pop() in (jnp.float32, jnp.float64)


def fused_scan(
    cell: Cell,
    params: Any,
    xs: Array,
    carry: Carry,
    lengths: Array | None,
    reverse: bool,
    unroll: int | bool,
    checkpoint: int | None = None,
) -> tuple[Carry, Array]:
    """:func:`jaxrnn.scan` of a built-in cell through the fused custom VJP (time-major xs).

    With ``checkpoint=k`` the steps run in chunks of k under
    :func:`jax.checkpoint`: only each chunk's first carry is kept, and the
    backward pass recomputes the chunk's fused forward before its fused
    backward.
    """
    num_steps, batch_shape = xs.shape[0], xs.shape[1:-1]
    rows = xs.reshape(num_steps, -1, xs.shape[-1])
    carry_rows = jax.tree.map(lambda a: a.reshape(-1, a.shape[-1]), carry)
    valid = None
    if lengths is not None or (checkpoint is not None and num_steps % checkpoint):
        steps = jnp.arange(num_steps)[:, None]
        limit = jnp.full((1, rows.shape[1]), num_steps) if lengths is None else lengths
        valid = steps < jnp.reshape(limit, (1, -1))
    spec = cell.spec
    core_params = params
    if isinstance(spec, ElmanSpec):
        core_params = params._replace(w_hy=None, b_y=None)
    if checkpoint is None:
        final, hs = _core(spec, reverse, unroll, core_params, rows, carry_rows, valid)
    else:
        final, hs = _chunked(
            spec, reverse, unroll, checkpoint, core_params, rows, carry_rows, valid
        )
    final = jax.tree.map(lambda a, c: a.reshape(c.shape), final, carry)
    ys = hs
    if isinstance(spec, ElmanSpec) and spec.output_activation is not None:
        ys = spec.output_activation(
            jnp.einsum("tnh,oh->tno", hs, params.w_hy)
            + (0 if params.b_y is None else params.b_y[None, None, :])
        )
        if valid is not None:
            ys = jnp.where(valid[..., None], ys, 0)
    return final, ys.reshape(num_steps, *batch_shape, ys.shape[-1])


def _chunked(
    spec: Any,
    reverse: bool,
    unroll: Any,
    size: int,
    params: Any,
    rows: Array,
    carry: Any,
    valid: Array | None,
) -> Any:
    """The fused scan in chunks of ``size`` steps, each rematerialised in the backward pass."""
    num_steps = rows.shape[0]
    pad = -num_steps % size
    if pad:  # whole chunks; the padded steps are masked out (valid is set when padding)
        assert valid is not None
        rows = jnp.concatenate([rows, jnp.zeros((pad, *rows.shape[1:]), rows.dtype)])
        valid = jnp.concatenate([valid, jnp.zeros((pad, *valid.shape[1:]), bool)])

    def run_chunk(carry: Any, chunk: Any) -> Any:
        rows_c, valid_c = chunk
        return _core(spec, reverse, unroll, params, rows_c, carry, valid_c)

    return scan_in_chunks(run_chunk, carry, (rows, valid), size, reverse, num_steps)


def _rules(spec: Any) -> _Rules:
    if isinstance(spec, LSTMSpec):
        return _LSTM
    if isinstance(spec, GRUSpec):
        return _GRU
    return _elman_rules(spec)


def _where(mask: Array | None, new: Any, old: Any) -> Any:
    if mask is None:
        return new
    return jax.tree.map(lambda a, b: jnp.where(mask[:, None], a, b), new, old)


def _forward(
    spec: Any, reverse: bool, unroll: Any, params: Any, xs: Array, carry: Any, valid: Any
) -> Any:
    rules = _rules(spec)
    prep = rules.prepare(params)

    def body(carry: Any, inputs: Any) -> Any:
        xp, v = inputs
        new, y, saved = rules.forward(prep, carry, xp)
        return _where(v, new, carry), (_where(v, y, jnp.zeros_like(y)), saved)

    final, (ys, saved) = jax.lax.scan(
        body, carry, (rules.project(params, xs), valid), reverse=reverse, unroll=unroll
    )
    return final, ys, saved


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _core(
    spec: Any, reverse: bool, unroll: Any, params: Any, xs: Array, carry: Any, valid: Any
) -> Any:
    final, ys, _ = _forward(spec, reverse, unroll, params, xs, carry, valid)
    return final, ys


def _core_fwd(
    spec: Any, reverse: bool, unroll: Any, params: Any, xs: Array, carry: Any, valid: Any
) -> Any:
    final, ys, saved = _forward(spec, reverse, unroll, params, xs, carry, valid)
    return (final, ys), (params, xs, valid, saved)


def _core_bwd(spec: Any, reverse: bool, unroll: Any, residuals: Any, cotangents: Any) -> Any:
    params, xs, valid, saved = residuals
    dfinal, dys = cotangents
    rules = _rules(spec)
    prep = rules.prepare(params)

    def body(dcarry: Any, inputs: Any) -> Any:
        saved_t, dy, v = inputs
        dcarry_in, dxp, drec = rules.backward(prep, saved_t, dcarry, dy)
        masked = _where(v, (dxp, drec), jax.tree.map(jnp.zeros_like, (dxp, drec)))
        return _where(v, dcarry_in, dcarry), masked

    dcarry0, (dxp, drec) = jax.lax.scan(body, dfinal, (saved, dys, valid), reverse=not reverse)
    if drec is None:
        drec = dxp
    h_in = saved[0]
    # Every weight gradient is one matmul over all T·N rows.
    db_ih, db_hh = dxp.sum(axis=(0, 1)), drec.sum(axis=(0, 1))
    dparams = params._replace(
        w_ih=jnp.einsum("tng,tni->gi", dxp, xs),
        w_hh=jnp.einsum("tng,tnh->gh", drec, h_in),
        b_ih=None if params.b_ih is None else db_ih,
        b_hh=None if params.b_hh is None else db_hh,
    )
    dxs = jnp.einsum("tng,gi->tni", dxp, params.w_ih)
    return dparams, dxs, dcarry0, None


_core.defvjp(_core_fwd, _core_bwd)

r"""Backpropagation through time written out: the textbook recursion, step by step.

This module is the one to read. It runs a built-in cell with a plain Python
loop, keeps every intermediate value, and walks back from the last step to
the first with hand-written derivatives — no ``jax.grad`` anywhere. It is the
oracle the fast paths are tested against, never a fast path itself.

For a loss L that reads the outputs ``y_t`` of every step, with upstream
gradients ``dy_t = ∂L/∂y_t``, the gradient that reaches the carry after step
t is

.. math::

   \frac{∂L}{∂h_t} = \frac{∂L}{∂y_t}\frac{∂y_t}{∂h_t}
                    + \frac{∂L}{∂h_{t+1}}\frac{∂h_{t+1}}{∂h_t},
   \qquad t = T, T-1, \dots, 1,

with ``∂L/∂h_{T+1} = 0``. Each parameter's gradient is the sum over steps of
its local gradient at that step. The second term is where the
temporal-dependency problem lives: ``∂L/∂h_t`` contains the product of the
T − t one-step Jacobians ``∂h_{s+1}/∂h_s``.

Example:
  >>> import jax, jax.numpy as jnp, jaxrnn
  >>> cell = jaxrnn.elman(4, output_size=2)
  >>> params = cell.init(jax.random.key(0), input_size=3, dtype=jnp.float64)
  >>> xs = jax.random.normal(jax.random.key(1), (6, 5, 3), jnp.float64)  # [T, B, I]
  >>> dys = jnp.ones((6, 5, 2), jnp.float64)                             # ∂L/∂y_t
  >>> dparams, dxs, dcarry0 = jaxrnn.reference.bptt(cell, params, xs, dys)
  >>> _, vjp = jax.vjp(lambda p, x: jaxrnn.scan(cell, p, x)[1], params, xs)
  >>> want_dparams, want_dxs = vjp(dys)
  >>> bool(jnp.allclose(dparams.w_hh, want_dparams.w_hh, rtol=1e-12, atol=1e-12))
  True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Float

from jaxrnn._cell import Array, Carry, Cell, Params, activation_derivative, described_spec
from jaxrnn._checks import check_carry, check_params, check_xs, default_dtype
from jaxrnn._elman import ElmanParams, ElmanSpec
from jaxrnn._gru import GRUParams, GRUSpec
from jaxrnn._lstm import LSTMCarry, LSTMParams, LSTMSpec

__all__ = ["bptt", "forward"]


def forward(
    cell: Cell, params: Params, xs: Float[Array, "T *batch I"], carry: Carry | None = None
) -> tuple[Carry, Float[Array, "T *batch O"]]:
    """Run ``cell`` over ``xs`` with a plain Python loop: the definition of :func:`jaxrnn.scan`.

    Args:
      cell: any :class:`jaxrnn.Cell`.
      params: the cell's params.
      xs: ``[T, *batch, I]`` inputs, time-major.
      carry: the initial carry (zeros when None).

    Returns:
      ``(final_carry, ys)`` with ``ys`` of shape ``[T, *batch, O]``.

    Example:
      >>> import jax, jax.numpy as jnp, jaxrnn
      >>> cell = jaxrnn.gru(4)
      >>> params = cell.init(jax.random.key(0), 3)
      >>> carry, ys = jaxrnn.reference.forward(cell, params, jnp.ones((5, 2, 3)))
      >>> ys.shape
      (5, 2, 4)
    """
    xs = check_xs(xs)
    carry = check_carry(cell, carry, xs.shape[1:-1], default_dtype(params, xs))
    ys = []
    for t in range(xs.shape[0]):
        carry, y = cell.step(params, carry, xs[t])
        ys.append(y)
    return carry, jnp.stack(ys)


def bptt(
    cell: Cell,
    params: Params,
    xs: Float[Array, "T *batch I"],
    dys: Float[Array, "T *batch O"],
    carry: Carry | None = None,
) -> tuple[Params, Float[Array, "T *batch I"], Carry]:
    """Backpropagation through time by the textbook recursion, for the built-in cells.

    Computes the vector-Jacobian product of ``ys = jaxrnn.scan(cell, params,
    xs, carry=carry)[1]`` with the upstream gradients ``dys``: the gradients
    of ``L = Σ_t ⟨dys_t, y_t⟩`` with respect to the params, the inputs and the
    initial carry. The forward pass stores every step's intermediate values;
    the backward pass walks t = T … 1 with each cell's derivatives written by
    hand (see ``_elman_backward``, ``_lstm_backward`` and ``_gru_backward``).

    Args:
      cell: a cell built by :func:`jaxrnn.elman` (with or without output layer),
        :func:`jaxrnn.lstm` (with or without projection) or :func:`jaxrnn.gru`,
        with its own step (a ValueError for a replaced or wrapped step).
      params: the cell's params.
      xs: ``[T, *batch, I]`` inputs, time-major.
      dys: ``[T, *batch, O]`` upstream gradients ∂L/∂y_t.
      carry: the initial carry (zeros when None).

    Returns:
      ``(dparams, dxs, dcarry0)``: ∂L/∂params (structured like ``params``),
      ∂L/∂xs and ∂L/∂carry_0.

    Example:
      >>> import jax, jax.numpy as jnp, jaxrnn
      >>> cell = jaxrnn.lstm(4)
      >>> params = cell.init(jax.random.key(0), 3)
      >>> xs = jnp.ones((5, 2, 3))
      >>> dparams, dxs, dcarry0 = jaxrnn.reference.bptt(cell, params, xs, jnp.ones((5, 2, 4)))
      >>> dparams.w_hh.shape, dxs.shape, dcarry0.c.shape
      ((16, 4), (5, 2, 3), (2, 4))
    """
    backward: dict[type, Callable[..., Any]] = {
        ElmanSpec: _elman_backward,
        LSTMSpec: _lstm_backward,
        GRUSpec: _gru_backward,
    }
    if type(cell.spec) not in backward:
        raise ValueError(
            "cell: the reference BPTT is written out for the cells built by jaxrnn.elman, "
            f"jaxrnn.lstm and jaxrnn.gru; got a cell with spec {cell.spec!r}"
        )
    if described_spec(cell) is None:
        raise ValueError(
            f"cell: its step is not the step of the {type(cell.spec).__name__} it carries (a "
            "step replaced with cell._replace(step=...) or wrapped), and the reference BPTT "
            "writes out only the built-in step; differentiate such a cell with jax.vjp of "
            "jaxrnn.scan"
        )
    xs = check_xs(xs)
    check_params(cell, params)
    batch_shape = xs.shape[1:-1]
    carry = check_carry(cell, carry, batch_shape, default_dtype(params, xs))
    _, ys = jax.eval_shape(lambda: forward(cell, params, xs, carry))
    if tuple(jnp.shape(dys)) != tuple(ys.shape):
        raise ValueError(f"dys: expected shape {tuple(ys.shape)}, got {tuple(jnp.shape(dys))}")
    # Work on [T, N, F] rows: the batch axes flattened into one.
    rows = xs.reshape(xs.shape[0], -1, xs.shape[-1])
    d_rows = jnp.reshape(dys, (dys.shape[0], rows.shape[1], -1))
    carry_rows = jax.tree.map(lambda a: a.reshape(-1, a.shape[-1]), carry)
    dparams, dxs, dcarry = backward[type(cell.spec)](cell.spec, params, rows, d_rows, carry_rows)
    dcarry = jax.tree.map(lambda d, c: d.reshape(c.shape).astype(c.dtype), dcarry, carry)
    return dparams, dxs.reshape(xs.shape), dcarry


def _row(bias: Array | None) -> Array | int:
    """A bias as a ``[1, F]`` row that adds to ``[N, F]`` rows, or 0 when absent."""
    return 0 if bias is None else bias[None, :]


def _elman_backward(
    spec: ElmanSpec, p: ElmanParams, xs: Array, dys: Array, h0: Array
) -> tuple[ElmanParams, Array, Array]:
    r"""Elman BPTT.

    Forward, for t = 1 … T:

    .. math::
       a_t = W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh}, \quad h_t = f(a_t), \quad
       o_t = W_{hy} h_t + b_y, \quad y_t = g(o_t)

    Backward, for t = T … 1, with δh_{T+1} = 0:

    .. math::
       δo_t = dy_t ⊙ g'(o_t), \quad
       δh_t = W_{hy}^⊤ δo_t + W_{hh}^⊤ δa_{t+1}, \quad
       δa_t = δh_t ⊙ f'(a_t),

    and ∂L/∂W_hh = Σ_t δa_t h_{t-1}^⊤, ∂L/∂W_ih = Σ_t δa_t x_t^⊤,
    ∂L/∂W_hy = Σ_t δo_t h_t^⊤, ∂L/∂x_t = W_ih^⊤ δa_t, ∂L/∂h_0 = W_hh^⊤ δa_1.
    Without an output layer y_t = h_t and δh_t = dy_t + W_hh^⊤ δa_{t+1}.
    """
    f, g = spec.activation, spec.output_activation
    w_hy = jnp.zeros((0, p.w_hh.shape[0]), p.w_hh.dtype) if p.w_hy is None else p.w_hy
    b_y = _row(p.b_y)
    num_steps = xs.shape[0]
    h_prev, pre, hs, outs = [h0], [], [], []
    for t in range(num_steps):
        a = xs[t] @ p.w_ih.T + h_prev[-1] @ p.w_hh.T
        a = a + _row(p.b_ih) + _row(p.b_hh)
        h = f(a)
        pre.append(a)
        hs.append(h)
        h_prev.append(h)
        if g is not None:
            o = h @ w_hy.T + b_y
            outs.append((o, g(o)))

    dw_ih, dw_hh = jnp.zeros_like(p.w_ih), jnp.zeros_like(p.w_hh)
    db = jnp.zeros(p.w_hh.shape[0], p.w_hh.dtype)
    dw_hy, db_y = jnp.zeros_like(w_hy), jnp.zeros(w_hy.shape[0], w_hy.dtype)
    dxs = []
    dh_next = jnp.zeros_like(h0)  # W_hh^T δa_{t+1}, the gradient arriving from step t+1
    for t in reversed(range(num_steps)):
        if g is None:
            dh = dys[t] + dh_next
        else:
            o, y = outs[t]
            do = dys[t] * activation_derivative(g, o, y)
            dw_hy = dw_hy + do.T @ hs[t]
            db_y = db_y + do.sum(axis=0)
            dh = do @ w_hy + dh_next
        da = dh * activation_derivative(f, pre[t], hs[t])
        dw_ih = dw_ih + da.T @ xs[t]
        dw_hh = dw_hh + da.T @ h_prev[t]
        db = db + da.sum(axis=0)
        dxs.append(da @ p.w_ih)
        dh_next = da @ p.w_hh
    dparams = ElmanParams(
        w_ih=dw_ih,
        w_hh=dw_hh,
        b_ih=None if p.b_ih is None else db,
        b_hh=None if p.b_hh is None else db,
        w_hy=None if p.w_hy is None else dw_hy,
        b_y=None if p.b_y is None else db_y,
    )
    return dparams, jnp.stack(dxs[::-1]), dh_next


def _lstm_backward(
    spec: LSTMSpec, p: LSTMParams, xs: Array, dys: Array, carry0: LSTMCarry
) -> tuple[LSTMParams, Array, LSTMCarry]:
    r"""LSTM BPTT.

    σ and tanh below stand for the cell's ``gate_fn`` and ``activation_fn``
    (σ' and tanh' their derivatives). Forward, for t = 1 … T, with gates in
    the order i, f, g, o:

    .. math::
       z_t &= W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh}, \quad
       i = σ(z^i), f = σ(z^f), g = \tanh(z^g), o = σ(z^o) \\
       c_t &= f ⊙ c_{t-1} + i ⊙ g, \quad m_t = o ⊙ \tanh(c_t), \quad
       h_t = W_{hr} m_t\ (\text{or } m_t), \quad y_t = h_t

    Backward, for t = T … 1, with δh_{T+1} = δc_{T+1} = 0:

    .. math::
       δh_t &= dy_t + W_{hh}^⊤ δz_{t+1}, \quad δm_t = W_{hr}^⊤ δh_t, \\
       δc_t &= f_{t+1} ⊙ δc_{t+1} + δm_t ⊙ o ⊙ (1 - \tanh^2 c_t), \\
       δz^i &= δc_t ⊙ g ⊙ i(1-i), \quad δz^f = δc_t ⊙ c_{t-1} ⊙ f(1-f), \\
       δz^g &= δc_t ⊙ i ⊙ (1-g^2), \quad δz^o = δm_t ⊙ \tanh(c_t) ⊙ o(1-o),

    and ∂L/∂W_hh = Σ_t δz_t h_{t-1}^⊤, ∂L/∂W_ih = Σ_t δz_t x_t^⊤,
    ∂L/∂W_hr = Σ_t δh_t m_t^⊤, ∂L/∂x_t = W_ih^⊤ δz_t. The cell state's own
    path, δc_{t-1} = f ⊙ δc_t, is the "constant error carousel": with f ≈ 1
    the gradient flows back undiminished.
    """
    sig, act = spec.gate_fn, spec.activation_fn  # σ and tanh unless the cell was given others
    num_steps = xs.shape[0]
    hidden = p.w_ih.shape[0] // 4
    h_prev, c_prev, saved = [carry0.h], [carry0.c], []
    for t in range(num_steps):
        z = xs[t] @ p.w_ih.T + h_prev[-1] @ p.w_hh.T
        z = z + _row(p.b_ih) + _row(p.b_hh)
        i, f = sig(z[:, :hidden]), sig(z[:, hidden : 2 * hidden])
        g, o = act(z[:, 2 * hidden : 3 * hidden]), sig(z[:, 3 * hidden :])
        c = f * c_prev[-1] + i * g
        m = o * act(c)
        h = m if p.w_hr is None else m @ jnp.asarray(p.w_hr).T
        saved.append((z, i, f, g, o, c, m))
        h_prev.append(h)
        c_prev.append(c)

    dw_ih, dw_hh = jnp.zeros_like(p.w_ih), jnp.zeros_like(p.w_hh)
    db = jnp.zeros(4 * hidden, p.w_ih.dtype)
    w_hr = p.w_hr
    dw_hr = None if w_hr is None else jnp.zeros_like(w_hr)
    dxs = []
    dh_next, dc = jnp.zeros_like(carry0.h), jnp.zeros_like(carry0.c)
    for t in reversed(range(num_steps)):
        z, i, f, g, o, c, m = saved[t]
        z_i, z_f, z_g, z_o = (z[:, k * hidden : (k + 1) * hidden] for k in range(4))
        dh = dys[t] + dh_next
        if w_hr is None or dw_hr is None:
            dm = dh
        else:
            dw_hr = dw_hr + dh.T @ m
            dm = dh @ w_hr
        tanh_c = act(c)
        dc = dc + dm * o * activation_derivative(act, c, tanh_c)
        dz = jnp.concatenate(
            [
                dc * g * activation_derivative(sig, z_i, i),
                dc * c_prev[t] * activation_derivative(sig, z_f, f),
                dc * i * activation_derivative(act, z_g, g),
                dm * tanh_c * activation_derivative(sig, z_o, o),
            ],
            axis=-1,
        )
        dw_ih = dw_ih + dz.T @ xs[t]
        dw_hh = dw_hh + dz.T @ h_prev[t]
        db = db + dz.sum(axis=0)
        dxs.append(dz @ p.w_ih)
        dh_next = dz @ p.w_hh
        dc = dc * f  # the constant error carousel: δc_{t-1} = f_t ⊙ δc_t
    dparams = LSTMParams(
        w_ih=dw_ih,
        w_hh=dw_hh,
        b_ih=None if p.b_ih is None else db,
        b_hh=None if p.b_hh is None else db,
        w_hr=dw_hr,
    )
    return dparams, jnp.stack(dxs[::-1]), LSTMCarry(dh_next, dc)


def _gru_backward(
    spec: GRUSpec, p: GRUParams, xs: Array, dys: Array, h0: Array
) -> tuple[GRUParams, Array, Array]:
    r"""GRU BPTT (PyTorch's convention: the reset gate multiplies W_hn h + b_hn).

    σ and tanh below stand for the cell's ``gate_fn`` and ``activation_fn``.
    Forward, for t = 1 … T:

    .. math::
       r &= σ(W_{ir} x_t + b_{ir} + W_{hr} h_{t-1} + b_{hr}), \quad
       z = σ(W_{iz} x_t + b_{iz} + W_{hz} h_{t-1} + b_{hz}), \\
       n &= \tanh(W_{in} x_t + b_{in} + r ⊙ (W_{hn} h_{t-1} + b_{hn})), \quad
       h_t = (1 - z) ⊙ n + z ⊙ h_{t-1}

    Backward, for t = T … 1, with δh_t = dy_t + (gradient from step t+1):

    .. math::
       δn^{pre} &= δh_t ⊙ (1 - z) ⊙ (1 - n^2), \quad
       δz^{pre} = δh_t ⊙ (h_{t-1} - n) ⊙ z(1-z), \\
       δr^{pre} &= δn^{pre} ⊙ (W_{hn} h_{t-1} + b_{hn}) ⊙ r(1-r), \\
       δ(\text{input slab}) &= [δr^{pre}; δz^{pre}; δn^{pre}], \quad
       δ(\text{recurrent slab}) = [δr^{pre}; δz^{pre}; r ⊙ δn^{pre}], \\
       \frac{∂L}{∂h_{t-1}} &= δh_t ⊙ z + W_{hh}^⊤ δ(\text{recurrent slab}).
    """
    sig, act = spec.gate_fn, spec.activation_fn  # σ and tanh unless the cell was given others
    num_steps = xs.shape[0]
    hidden = p.w_hh.shape[1]
    h_prev, saved = [h0], []
    for t in range(num_steps):
        gi = xs[t] @ p.w_ih.T + _row(p.b_ih)
        gh = h_prev[-1] @ p.w_hh.T + _row(p.b_hh)
        pre = gi[:, : 2 * hidden] + gh[:, : 2 * hidden]
        r, z = sig(pre[:, :hidden]), sig(pre[:, hidden:])
        n_pre = gi[:, 2 * hidden :] + r * gh[:, 2 * hidden :]
        n = act(n_pre)
        saved.append((pre, n_pre, r, z, n, gh[:, 2 * hidden :]))
        h_prev.append((1 - z) * n + z * h_prev[-1])

    dw_ih, dw_hh = jnp.zeros_like(p.w_ih), jnp.zeros_like(p.w_hh)
    db_ih = jnp.zeros(3 * hidden, p.w_ih.dtype)
    db_hh = jnp.zeros(3 * hidden, p.w_hh.dtype)
    dxs = []
    dh_next = jnp.zeros_like(h0)
    for t in reversed(range(num_steps)):
        pre, n_pre, r, z, n, hn = saved[t]
        dh = dys[t] + dh_next
        dn_pre = dh * (1 - z) * activation_derivative(act, n_pre, n)
        dz_pre = dh * (h_prev[t] - n) * activation_derivative(sig, pre[:, hidden:], z)
        dr_pre = dn_pre * hn * activation_derivative(sig, pre[:, :hidden], r)
        dgi = jnp.concatenate([dr_pre, dz_pre, dn_pre], axis=-1)
        dgh = jnp.concatenate([dr_pre, dz_pre, r * dn_pre], axis=-1)
        dw_ih = dw_ih + dgi.T @ xs[t]
        dw_hh = dw_hh + dgh.T @ h_prev[t]
        db_ih = db_ih + dgi.sum(axis=0)
        db_hh = db_hh + dgh.sum(axis=0)
        dxs.append(dgi @ p.w_ih)
        dh_next = dh * z + dgh @ p.w_hh
    dparams = GRUParams(
        w_ih=dw_ih,
        w_hh=dw_hh,
        b_ih=None if p.b_ih is None else db_ih,
        b_hh=None if p.b_hh is None else db_hh,
    )
    return dparams, jnp.stack(dxs[::-1]), dh_next

"""The layer-normalised LSTM (Ba, Kiros & Hinton 2016): its step and its fused BPTT rules."""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Float

from jaxrnn import _initializers as inits
from jaxrnn._cell import (
    Array,
    Cell,
    FusedRules,
    Prepared,
    PRNGKey,
    Shape,
    Spec,
    as_float,
    at_least_float32,
    carry_dtype,
    check_carry_leaf,
    check_param_dtype,
    check_positive_int,
    check_step_input,
    dot,
    linear,
    project_input,
    to_rows,
)
from jaxrnn._lstm import LSTMCarry, LSTMGates, _g_block


@dataclasses.dataclass(frozen=True)
class LayerNormLSTMSpec(Spec):
    """The spec of a cell built by :func:`layernorm_lstm`: its ε and its fused BPTT rules.

    Attributes:
      epsilon: the ε added to every variance of the layer normalisations.

    Example:
      >>> import jaxrnn
      >>> jaxrnn.layernorm_lstm(4).spec
      LayerNormLSTMSpec(epsilon=1e-05)
    """

    epsilon: float

    def fused_rules(self) -> FusedRules:
        """The fused forward and backward step (see :class:`jaxrnn._cell.FusedRules`)."""
        return _fused_rules(self.epsilon)

    def carry_readout(self) -> Callable[[Any, LSTMCarry], Array]:
        """``y_t = h_t``."""
        return _read_h


class LayerNormLSTMParams(NamedTuple):
    """Parameters of :func:`layernorm_lstm`; gate blocks stacked in the order i, f, g, o.

    Attributes:
      w_ih: ``[4H, I]`` input matrices ``[W_ii; W_if; W_ig; W_io]``.
      w_hh: ``[4H, H]`` recurrent matrices, same order.
      b: ``[4H]`` gate bias, added after both normalisations.
      gamma_ih: ``[4H]`` gain of the normalised input slab LN(W_ih x).
      gamma_hh: ``[4H]`` gain of the normalised recurrent slab LN(W_hh h).
      gamma_c: ``[H]`` gain of the normalised cell state LN(c).
      beta_c: ``[H]`` bias of the normalised cell state.

    Example:
      >>> import jax, jaxrnn
      >>> params = jaxrnn.layernorm_lstm(4).init(jax.random.key(0), input_size=3)
      >>> params.w_ih.shape, params.gamma_ih.shape, params.gamma_c.shape
      ((16, 3), (16,), (4,))
    """

    w_ih: Float[Array, "4*H I"]
    w_hh: Float[Array, "4*H H"]
    b: Float[Array, " 4*H"]
    gamma_ih: Float[Array, " 4*H"]
    gamma_hh: Float[Array, " 4*H"]
    gamma_c: Float[Array, " H"]
    beta_c: Float[Array, " H"]


def layernorm_lstm(
    hidden_size: int,
    *,
    init: inits.Preset = "pytorch",
    forget_bias: float | None = None,
    recurrent_init: inits.RecurrentInit | None = None,
    epsilon: float = 1e-5,
) -> Cell:
    r"""The LSTM with layer normalisation of Ba, Kiros & Hinton (2016).

    Each of the two gate slabs is normalised over its 4H features before they
    are added, and the cell state is normalised before its ``tanh``:

    .. math::

       [i; f; g; o] &= \mathrm{LN}(W_{ih} x_t; γ_{ih}) + \mathrm{LN}(W_{hh} h_{t-1}; γ_{hh}) + b \\
       c_t &= \sigma(f) \odot c_{t-1} + \sigma(i) \odot \tanh(g) \\
       h_t &= \sigma(o) \odot \tanh(\mathrm{LN}(c_t; γ_c, β_c)),

    with :math:`\mathrm{LN}(a; γ, β) = γ \odot (a - μ) / \sqrt{σ^2 + ε} + β`,
    μ and σ² the mean and variance of ``a`` over its features. The paper's
    biases β of the two gate normalisations only add to ``b`` (their sum is
    all the cell sees, and their gradients equal ``b``'s), so they are one
    parameter here: the same functions with 8H fewer parameters.

    The carry is :class:`LSTMCarry` ``(h, c)``, the output ``y_t = h_t``;
    :func:`jaxrnn.gates` returns its :class:`LSTMGates` ``(i, f, g, o)``.
    :func:`jaxrnn.scan` runs it on the fused BPTT path (one custom VJP over
    the sequence, layer-norm backward written out) in bfloat16, float16,
    float32 and float64; bfloat16 params multiply in bfloat16 and keep the
    normalisations, gates and carry in float32, as the step does.

    Args:
      hidden_size: H, the size of ``h`` and of the cell state ``c``.
      init: whose LSTM initialisation ``w_ih``, ``w_hh`` and ``b`` follow, as
        in :func:`jaxrnn.lstm`: ``"pytorch"`` (default; U(±1/√H) weights),
        ``"flax"`` (lecun_normal ``w_ih``, orthogonal ``w_hh`` blocks) or
        ``"keras"`` (glorot_uniform ``w_ih`` and orthogonal ``w_hh``, each
        over the whole matrix; forget block of ``b`` 1). ``b`` starts at 0
        but for ``forget_bias`` with every preset; gains start at 1 and
        ``beta_c`` at 0 with every preset.
      forget_bias: the initial value of the forget block of ``b`` (the other
        blocks start at 0; Gers et al. 2000); None (default): the preset's,
        1 with ``init="keras"`` and 0 otherwise.
      recurrent_init: ``"uniform"`` (U(±1/√H), PyTorch's LSTM default),
        ``"orthogonal"`` (each gate block orthogonal) or a callable
        ``(key, shape, dtype)`` per block; None (default): the preset's.
      epsilon: ε of every normalisation, a positive number.

    Returns:
      A :class:`Cell` whose params are :class:`LayerNormLSTMParams`.

    Example:
      >>> import jax, jax.numpy as jnp, jaxrnn
      >>> cell = jaxrnn.layernorm_lstm(8, forget_bias=1.0)
      >>> params = cell.init(jax.random.key(0), input_size=3)
      >>> carry, ys = jaxrnn.scan(cell, params, jnp.ones((5, 2, 3)))  # [T, B, I]
      >>> ys.shape, carry.c.shape
      ((5, 2, 8), (2, 8))
      >>> cell.spec.fused_rules() is not None  # scan runs it on the fused BPTT path
      True

    References:
      Ba, Kiros & Hinton, "Layer normalization", arXiv:1607.06450, 2016
      (the layer-normalised LSTM of its experiments).
      Hochreiter & Schmidhuber, "Long short-term memory", 1997.
    """
    check_positive_int(hidden_size, "hidden_size")
    preset = inits.check_preset(init)
    inits.check_recurrent_init(recurrent_init, allow_identity=False)
    if forget_bias is None:
        forget_bias = 1.0 if preset == "keras" else 0.0
    forget = as_float(forget_bias)
    if forget is None or not math.isfinite(forget):
        raise ValueError(f"forget_bias: expected a finite number, got {forget_bias!r}")
    eps = as_float(epsilon)
    if eps is None or not 0 < eps < math.inf:
        raise ValueError(f"epsilon: expected a positive number, got {epsilon!r}")
    hsize = hidden_size
    bound = inits.pytorch_bound(hidden_size)

    def init_params(key: PRNGKey, input_size: int, dtype: Any = jnp.float32) -> LayerNormLSTMParams:
        check_positive_int(input_size, "input_size")
        check_param_dtype(dtype)
        k_ih, k_hh = jax.random.split(key)
        ones = jnp.ones((4 * hsize,), dtype)
        return LayerNormLSTMParams(
            w_ih=inits.dense_matrix(preset, k_ih, (4 * hsize, input_size), bound, dtype),
            w_hh=inits.recurrent_weights(
                preset, recurrent_init, k_hh, 4, hsize, hsize, bound, dtype
            ),
            b=jnp.zeros((4 * hsize,), dtype).at[hsize : 2 * hsize].set(forget),
            gamma_ih=ones,
            gamma_hh=ones,
            gamma_c=jnp.ones((hsize,), dtype),
            beta_c=jnp.zeros((hsize,), dtype),
        )

    def initial_carry(batch_shape: Shape = (), dtype: Any = jnp.float32) -> LSTMCarry:
        dt = carry_dtype(dtype)
        return LSTMCarry(
            h=jnp.zeros((*batch_shape, hsize), dt), c=jnp.zeros((*batch_shape, hsize), dt)
        )

    def step(
        params: LayerNormLSTMParams, carry: LSTMCarry, x: Float[Array, "*batch I"]
    ) -> tuple[LSTMCarry, Float[Array, "*batch H"]]:
        check_step_input(x, params.w_ih)
        if not isinstance(carry, LSTMCarry):
            raise TypeError(f"carry: expected an LSTMCarry(h, c), got {type(carry).__name__}")
        batch_shape = x.shape[:-1]
        hidden = params.w_hh.shape[1]
        check_carry_leaf(carry.h, "carry.h", batch_shape, hidden)
        check_carry_leaf(carry.c, "carry.c", batch_shape, hidden)
        i, f, g, o = _gate_rows(params, to_rows(carry.h), to_rows(x), eps)
        c = f * to_rows(carry.c).astype(i.dtype) + i * g
        c_hat = _normalize(c, eps)[0]
        gamma_c, beta_c = (v.astype(c.dtype)[None, :] for v in (params.gamma_c, params.beta_c))
        h = o * jnp.tanh(c_hat * gamma_c + beta_c)
        new_carry = LSTMCarry(
            h=h.astype(carry.h.dtype).reshape(carry.h.shape),
            c=c.astype(carry.c.dtype).reshape(carry.c.shape),
        )
        y = h.astype(jnp.result_type(x, params.w_ih)).reshape(*batch_shape, hidden)
        return new_carry, y

    def gates(params: LayerNormLSTMParams, carry: LSTMCarry, x: Array) -> LSTMGates:
        rows = _gate_rows(params, to_rows(carry.h), to_rows(x), eps)
        return LSTMGates(*(a.reshape(*x.shape[:-1], a.shape[-1]) for a in rows))

    return Cell(init_params, initial_carry, step, LayerNormLSTMSpec(eps, step=step, gates=gates))


def _gate_rows(params: LayerNormLSTMParams, h: Array, x: Array, eps: float) -> LSTMGates:
    """The activated gates ``[N, H]`` of a step from rows ``h`` ``[N, H]`` and ``x`` ``[N, I]``.

    The step and :func:`jaxrnn.gates` both compute the gates here. The
    matmuls accumulate in at least float32, where the normalisations and
    gates then run.
    """
    a_x = linear(x, params.w_ih, None)
    a_h = linear(h, params.w_hh, None)
    acc, hidden = a_x.dtype, params.w_hh.shape[1]

    def row(v: Array) -> Array:
        return v.astype(acc)[None, :]

    z = (
        _normalize(a_x, eps)[0] * row(params.gamma_ih)
        + _normalize(a_h, eps)[0] * row(params.gamma_hh)
        + row(params.b)
    )
    act = jax.nn.sigmoid(z)
    return LSTMGates(
        input=act[:, :hidden],
        forget=act[:, hidden : 2 * hidden],
        candidate=jnp.tanh(z[:, 2 * hidden : 3 * hidden]),
        output=act[:, 3 * hidden :],
    )


def _read_h(params: Any, carry: LSTMCarry) -> Array:
    return carry.h


def _normalize(a: Array, eps: float) -> tuple[Array, Array]:
    """``((a - μ) / √(σ² + ε), 1 / √(σ² + ε))`` over the last axis of ``[N, F]`` rows."""
    centred = a - _mean(a)
    inv_std = jax.lax.rsqrt(_mean(centred * centred) + eps)
    return centred * inv_std, inv_std


def _mean(a: Array) -> Array:
    """The mean ``[N, 1]`` of ``[N, F]`` rows, as a product with a ``[F, 1]`` vector.

    Inside a time loop XLA:CPU runs this matrix-vector product several times
    faster than a reduction (``a.mean(-1)``): with three normalisations per
    step, the difference is most of the cell's cost over the LSTM's.
    """
    return a @ jnp.full((a.shape[-1], 1), 1 / a.shape[-1], a.dtype)


def _normalize_backward(d_hat: Array, a_hat: Array, inv_std: Array) -> Array:
    r"""∂L/∂a from δ = ∂L/∂â for â = (a − μ)/√(σ² + ε).

    .. math:: ∂L/∂a = (δ - \bar δ - â\,\overline{δ â}) / √(σ² + ε),

    bars the means over the features.
    """
    return inv_std * (d_hat - _mean(d_hat) - a_hat * _mean(d_hat * a_hat))


def _prepare(p: LayerNormLSTMParams) -> Prepared:
    acc = at_least_float32(p.w_hh.dtype)  # the normalisations run in the accumulation dtype
    rows = tuple(v.astype(acc)[None, :] for v in (p.gamma_ih, p.gamma_hh, p.b, p.gamma_c, p.beta_c))
    return Prepared(p.w_hh, p.w_hh.T, 0, rows)


@functools.cache
def _fused_rules(eps: float) -> FusedRules:
    """The fused rules of a layer-normalised LSTM with ε = ``eps``.

    The input slab is the raw ``x W_ih^T``, the recurrent slab the raw
    ``h W_hh^T``: the backward step returns the gradients of both before
    their normalisation (so the fused path forms ``∂L/∂W_ih``, ``∂L/∂W_hh``
    and ``∂L/∂x`` as for the LSTM), and each row's share of the gradients
    of ``b`` and the gains and bias of the normalisations.
    """

    def forward(prep: Prepared, carry: LSTMCarry, xp: Array) -> Any:
        h, c = carry
        hidden = c.shape[-1]
        gamma_ih, gamma_hh, b, gamma_c, beta_c = prep.extra
        x_hat, x_inv = _normalize(xp, eps)
        h_hat, h_inv = _normalize(dot(h, prep.w_hh_t), eps)
        # One tanh over the [i, f, g, o] slab, σ(z) = (1 + tanh(z/2))/2 on i, f, o (as _lstm).
        scale, offset = _g_block(hidden, 1.0, 0.5, c.dtype), _g_block(hidden, 0.0, 0.5, c.dtype)
        z = x_hat * gamma_ih + h_hat * gamma_hh + b
        gates = scale * jnp.tanh(scale * z) + offset
        i, f, g, o = (gates[:, k * hidden : (k + 1) * hidden] for k in range(4))
        c_new = f * c + i * g
        c_hat, c_inv = _normalize(c_new, eps)
        tanh_c = jnp.tanh(c_hat * gamma_c + beta_c)
        h_new = o * tanh_c
        saved = (h, c, gates, x_hat, x_inv, h_hat, h_inv, c_hat, c_inv, tanh_c)
        return LSTMCarry(h_new, c_new), h_new, saved

    def backward(prep: Prepared, saved: Any, dcarry: LSTMCarry, dy: Array) -> Any:
        _, c, gates, x_hat, x_inv, h_hat, h_inv, c_hat, c_inv, tanh_c = saved
        gamma_ih, gamma_hh, _, gamma_c, _ = prep.extra
        hidden = c.shape[-1]
        i, f, g, o = (gates[:, k * hidden : (k + 1) * hidden] for k in range(4))
        dh = dcarry.h + dy
        dn = dh * o * (1 - tanh_c**2)  # ∂L/∂(γ_c ĉ + β_c)
        dc = dcarry.c + _normalize_backward(dn * gamma_c, c_hat, c_inv)
        dgates = jnp.concatenate([dc * g, dc * c, dc * i, dh * tanh_c], axis=-1)
        # σ' = a(1 − a) on the sigmoid blocks, tanh' = (1 − a)(1 + a) on the g block.
        dz = dgates * (1 - gates) * (gates + _g_block(hidden, 1.0, 0.0, c.dtype))
        dxp = _normalize_backward(dz * gamma_ih, x_hat, x_inv)
        drec = _normalize_backward(dz * gamma_hh, h_hat, h_inv)
        others = {
            "b": dz,
            "gamma_ih": dz * x_hat,
            "gamma_hh": dz * h_hat,
            "gamma_c": dn * c_hat,
            "beta_c": dn,
        }
        return LSTMCarry(dot(drec, prep.w_hh), dc * f), dxp, drec, others

    return FusedRules(_always, project_input, _prepare, forward, backward)


def _always(params: Any) -> bool:
    return True

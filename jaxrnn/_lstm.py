"""The LSTM cell in PyTorch's convention (gate order i, f, g, o; optional projection)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Float

from jaxrnn import _initializers as inits
from jaxrnn._cell import (
    Activation,
    Array,
    Cell,
    FusedRules,
    Prepared,
    PRNGKey,
    Shape,
    Spec,
    carry_dtype,
    check_callable,
    check_carry_leaf,
    check_param_dtype,
    check_positive_int,
    check_step_input,
    default_activations,
    dot,
    linear,
    prepare_stacked,
    project_input,
    to_rows,
)


@dataclasses.dataclass(frozen=True)
class LSTMSpec(Spec):
    """The spec of a cell built by :func:`lstm`: its activations and fused BPTT rules.

    Attributes:
      gate_fn: the activation of the gates i, f, o (σ by default).
      activation_fn: the activation of the candidate g and of c_t (tanh by default).

    Example:
      >>> import jax, jax.numpy as jnp, jaxrnn
      >>> jaxrnn.lstm(4).spec
      LSTMSpec()
      >>> jaxrnn.lstm(4).spec.fused_rules() is not None
      True
      >>> jaxrnn.lstm(4, activation_fn=jax.nn.soft_sign).spec.fused_rules() is None  # autodiff
      True
    """

    gate_fn: Activation = dataclasses.field(default=jax.nn.sigmoid, repr=False)
    activation_fn: Activation = dataclasses.field(default=jnp.tanh, repr=False)

    def fused_rules(self) -> FusedRules | None:
        """The fused forward and backward step (see :class:`jaxrnn._cell.FusedRules`).

        None unless the activations are σ and tanh, which the rules are written for.
        """
        return _FUSED if default_activations(self.gate_fn, self.activation_fn) else None

    def carry_readout(self) -> Callable[[Any, LSTMCarry], Array]:
        """``y_t = h_t``."""
        return _read_h

    def cudnn_mismatch(self) -> str | None:
        """None for σ gates and tanh, the activations of cuDNN's LSTM; else why not."""
        if default_activations(self.gate_fn, self.activation_fn):
            return None
        return (
            f"cuDNN's LSTM uses jax.nn.sigmoid gates and jnp.tanh; this jaxrnn.lstm has "
            f"gate_fn={self.gate_fn!r}, activation_fn={self.activation_fn!r}"
        )


class LSTMParams(NamedTuple):
    """Parameters of :func:`lstm`; the four gate blocks are stacked in the order i, f, g, o.

    Attributes:
      w_ih: ``[4H, I]`` input matrices ``[W_ii; W_if; W_ig; W_io]``.
      w_hh: ``[4H, P]`` recurrent matrices (P = H without a projection).
      b_ih: ``[4H]`` input biases, or None for a cell without biases.
      b_hh: ``[4H]`` recurrent biases, or None.
      w_hr: ``[P, H]`` projection of the hidden state (PyTorch's ``proj_size``), or None.

    Example:
      >>> import jax, jaxrnn
      >>> params = jaxrnn.lstm(4, proj_size=2).init(jax.random.key(0), input_size=3)
      >>> params.w_ih.shape, params.w_hh.shape, params.w_hr.shape
      ((16, 3), (16, 2), (2, 4))
    """

    w_ih: Float[Array, "4*H I"]
    w_hh: Float[Array, "4*H P"]
    b_ih: Float[Array, " 4*H"] | None
    b_hh: Float[Array, " 4*H"] | None
    w_hr: Float[Array, "P H"] | None = None


class LSTMCarry(NamedTuple):
    """The LSTM state: ``h`` of shape ``[*batch, P]``, cell state ``c`` of shape ``[*batch, H]``.

    Example:
      >>> import jaxrnn
      >>> carry = jaxrnn.lstm(4).initial_carry((2,))
      >>> carry.h.shape, carry.c.shape
      ((2, 4), (2, 4))
    """

    h: Float[Array, "*batch P"]
    c: Float[Array, "*batch H"]


def lstm(
    hidden_size: int,
    *,
    init: inits.Preset = "pytorch",
    forget_bias: float | None = None,
    chrono: int | None = None,
    recurrent_init: inits.RecurrentInit | None = None,
    proj_size: int | None = None,
    use_bias: bool = True,
    gate_fn: Activation = jax.nn.sigmoid,
    activation_fn: Activation = jnp.tanh,
) -> Cell:
    r"""The long short-term memory cell (PyTorch's ``nn.LSTM`` step).

    .. math::

       [i; f; g; o] &= W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh} \\
       c_t &= \sigma(f) \odot c_{t-1} + \sigma(i) \odot \tanh(g) \\
       h_t &= \sigma(o) \odot \tanh(c_t) \quad (\text{then } h_t \leftarrow W_{hr} h_t
              \text{ with a projection})

    with σ = ``gate_fn`` and tanh = ``activation_fn`` (flax's ``LSTMCell``
    names). The carry is :class:`LSTMCarry` ``(h, c)``; the output is
    ``y_t = h_t``. :func:`jaxrnn.scan` runs the cell on the fused BPTT path
    with the default activations and by autodiff through the step with any
    others.

    Args:
      hidden_size: H, the size of the cell state c.
      init: whose default initialisation the params follow.
        ``"pytorch"`` (default): U(±1/√H) everywhere (``nn.LSTM``).
        ``"flax"`` (``flax.nnx.LSTMCell``, ``flax.linen.LSTMCell``): each
        gate's ``w_ih`` block lecun_normal (variance 1/I), each ``w_hh``
        block orthogonal, biases 0. ``"keras"`` (``keras.layers.LSTM``):
        ``w_ih`` glorot_uniform over the whole ``[4H, I]`` matrix
        (U(±√(6/(I + 4H)))), ``w_hh`` orthogonal over the whole ``[4H, P]``
        matrix (``w_hh.T @ w_hh = I``), biases 0 but the forget block of
        ``b_ih``, 1 (``unit_forget_bias``). The peers have one bias: it is
        ``b_ih`` here, ``b_hh`` is 0. A projection ``w_hr`` is drawn as the
        preset's dense layer: U(±1/√H), lecun_normal, glorot_uniform. The
        options below override the part of the preset they name.
      forget_bias: when given, the forget-gate biases start at this value
        (``b_ih`` = forget_bias, ``b_hh`` = 0 on the forget block; Gers et al.
        2000, Jozefowicz et al. 2015); the other gates keep the preset's init.
        None (default): the preset's (1 with ``init="keras"``).
      chrono: T_max for chrono initialisation (Tallec & Ollivier 2018):
        b_f ~ log U[1, T_max − 1], b_i = −b_f, recurrent biases of both gates
        0; the g and o gates keep the preset's biases.
      recurrent_init: ``"uniform"`` (U(±1/√H), PyTorch's default),
        ``"orthogonal"`` (each gate block orthogonal) or a callable
        ``(key, shape, dtype)`` per block; None (default): the preset's.
      proj_size: P, PyTorch's ``proj_size``: h is projected to P features.
      use_bias: whether the cell has biases (PyTorch's ``bias``).
      gate_fn: the element-wise activation of the gates i, f and o
        (default ``jax.nn.sigmoid``).
      activation_fn: the element-wise activation of the candidate g and of
        the cell state in h_t (default ``jnp.tanh``).

    Returns:
      A :class:`Cell` whose params are :class:`LSTMParams`.

    Example:
      >>> import jax, jax.numpy as jnp, jaxrnn
      >>> cell = jaxrnn.lstm(32, forget_bias=1.0)
      >>> params = cell.init(jax.random.key(0), input_size=4)
      >>> params.b_ih[32:64].min(), params.b_ih[32:64].max()
      (Array(1., dtype=float32), Array(1., dtype=float32))
      >>> carry, y = cell.step(params, cell.initial_carry((8,)), jnp.ones((8, 4)))
      >>> carry.h.shape, carry.c.shape, y.shape
      ((8, 32), (8, 32), (8, 32))
      >>> keras = jaxrnn.lstm(32, init="keras").init(jax.random.key(0), input_size=4)
      >>> float(keras.b_ih[32:64].min()), float(jnp.abs(keras.b_hh).max())  # unit forget bias
      (1.0, 0.0)
      >>> bool(jnp.allclose(keras.w_hh.T @ keras.w_hh, jnp.eye(32), atol=1e-5))  # orthogonal
      True

    References:
      Hochreiter & Schmidhuber, "Long short-term memory", 1997.
      Tallec & Ollivier, "Can recurrent neural networks warp time?", ICLR 2018.
    """
    check_positive_int(hidden_size, "hidden_size")
    preset = inits.check_preset(init)
    check_callable(gate_fn, "gate_fn")
    check_callable(activation_fn, "activation_fn")
    inits.check_recurrent_init(recurrent_init, allow_identity=False)
    inits.check_chrono(chrono)
    if forget_bias is not None and chrono is not None:
        raise ValueError("forget_bias, chrono: give at most one of the two bias initialisations")
    if not use_bias and (forget_bias is not None or chrono is not None):
        raise ValueError("use_bias: forget_bias and chrono need use_bias=True")
    if proj_size is not None:
        check_positive_int(proj_size, "proj_size")
        if proj_size >= hidden_size:
            raise ValueError(
                f"proj_size: expected a value below hidden_size={hidden_size}, got {proj_size}"
            )
    hsize = hidden_size
    out_size = hidden_size if proj_size is None else proj_size
    bound = inits.pytorch_bound(hidden_size)
    if forget_bias is None and chrono is None and preset == "keras":
        forget_bias = 1.0  # Keras's unit_forget_bias=True

    def init_params(key: PRNGKey, input_size: int, dtype: Any = jnp.float32) -> LSTMParams:
        check_positive_int(input_size, "input_size")
        check_param_dtype(dtype)
        k_ih, k_hh, k_bi, k_bh, k_hr, k_chrono = jax.random.split(key, 6)
        params = LSTMParams(
            w_ih=inits.dense_matrix(preset, k_ih, (4 * hsize, input_size), bound, dtype),
            w_hh=inits.recurrent_weights(
                preset, recurrent_init, k_hh, 4, hsize, out_size, bound, dtype
            ),
            b_ih=inits.bias_vector(preset, k_bi, 4 * hsize, bound, dtype) if use_bias else None,
            b_hh=inits.bias_vector(preset, k_bh, 4 * hsize, bound, dtype) if use_bias else None,
            w_hr=(
                None
                if proj_size is None
                else inits.dense_matrix(preset, k_hr, (proj_size, hsize), bound, dtype)
            ),
        )
        if params.b_ih is None or params.b_hh is None:
            return params
        b_ih, b_hh = params.b_ih, params.b_hh
        if forget_bias is not None:
            b_ih = b_ih.at[hsize : 2 * hsize].set(forget_bias)
            b_hh = b_hh.at[hsize : 2 * hsize].set(0)
        if chrono is not None:
            b_f = inits.chrono_bias(k_chrono, chrono, hsize, dtype)
            b_ih = b_ih.at[hsize : 2 * hsize].set(b_f).at[:hsize].set(-b_f)
            b_hh = b_hh.at[: 2 * hsize].set(0)
        return params._replace(b_ih=b_ih, b_hh=b_hh)

    def initial_carry(batch_shape: Shape = (), dtype: Any = jnp.float32) -> LSTMCarry:
        dt = carry_dtype(dtype)
        return LSTMCarry(
            h=jnp.zeros((*batch_shape, out_size), dt), c=jnp.zeros((*batch_shape, hsize), dt)
        )

    def step(
        params: LSTMParams, carry: LSTMCarry, x: Float[Array, "*batch I"]
    ) -> tuple[LSTMCarry, Float[Array, "*batch O"]]:
        check_step_input(x, params.w_ih)
        if not isinstance(carry, LSTMCarry):
            raise TypeError(f"carry: expected an LSTMCarry(h, c), got {type(carry).__name__}")
        batch_shape = x.shape[:-1]
        hidden = params.w_ih.shape[0] // 4
        check_carry_leaf(carry.h, "carry.h", batch_shape, params.w_hh.shape[1])
        check_carry_leaf(carry.c, "carry.c", batch_shape, hidden)
        i, f, g, o = _gate_rows(params, to_rows(carry.h), to_rows(x), gate_fn, activation_fn)
        c = f * to_rows(carry.c).astype(i.dtype) + i * g
        h = o * activation_fn(c)
        if params.w_hr is not None:
            h = linear(h, params.w_hr, None)
        new_carry = LSTMCarry(
            h=h.astype(carry.h.dtype).reshape(carry.h.shape),
            c=c.astype(carry.c.dtype).reshape(carry.c.shape),
        )
        y = h.astype(jnp.result_type(x, params.w_ih)).reshape(*batch_shape, h.shape[-1])
        return new_carry, y

    def gates(params: LSTMParams, carry: LSTMCarry, x: Array) -> LSTMGates:
        rows = _gate_rows(params, to_rows(carry.h), to_rows(x), gate_fn, activation_fn)
        return LSTMGates(*(a.reshape(*x.shape[:-1], a.shape[-1]) for a in rows))

    spec = LSTMSpec(gate_fn, activation_fn, step=step, gates=gates)
    return Cell(init_params, initial_carry, step, spec)


class LSTMGates(NamedTuple):
    """The gate activations of one LSTM step, each ``[..., H]`` (what :func:`jaxrnn.gates` returns).

    With them the step is ``c_t = forget ⊙ c_{t-1} + input ⊙ candidate`` and
    ``h_t = output ⊙ tanh(c_t)``. σ and tanh stand for the cell's ``gate_fn``
    and ``activation_fn``, whatever they are.

    Attributes:
      input: i = σ(·), how much of the candidate enters the cell state.
      forget: f = σ(·), how much of the cell state is kept.
      candidate: g = tanh(·), the cell-state candidate.
      output: o = σ(·), how much of tanh(c_t) is shown as h_t.

    Example:
      >>> import jax, jax.numpy as jnp, jaxrnn
      >>> cell = jaxrnn.lstm(4)
      >>> params = cell.init(jax.random.key(0), input_size=3)
      >>> gates = jaxrnn.gates(cell, params, jnp.ones((5, 2, 3)))  # [T, B, I]
      >>> gates._fields, gates.forget.shape
      (('input', 'forget', 'candidate', 'output'), (5, 2, 4))
    """

    input: Array
    forget: Array
    candidate: Array
    output: Array


def _gate_rows(
    params: LSTMParams,
    h: Array,
    x: Array,
    gate_fn: Activation = jax.nn.sigmoid,
    activation_fn: Activation = jnp.tanh,
) -> LSTMGates:
    """The activated gates ``[N, H]`` of a step from rows ``h`` ``[N, P]`` and ``x`` ``[N, I]``.

    The step and :func:`jaxrnn.gates` both compute the gates here, so that
    what the introspection shows is what the step used.
    """
    z = linear(x, params.w_ih, params.b_ih) + linear(h, params.w_hh, params.b_hh)
    hidden = z.shape[-1] // 4
    # One gate activation over the whole gate slab, then slices: cheaper than four
    # separate nonlinearities on the split gates.
    act = gate_fn(z)
    return LSTMGates(
        input=act[:, :hidden],
        forget=act[:, hidden : 2 * hidden],
        candidate=activation_fn(z[:, 2 * hidden : 3 * hidden]),
        output=act[:, 3 * hidden :],
    )


def _read_h(params: Any, carry: LSTMCarry) -> Array:
    return carry.h


def _fused_forward(prep: Prepared, carry: LSTMCarry, xp: Array) -> Any:
    h, c = carry
    hidden = c.shape[-1]
    # One tanh over the whole [i, f, g, o] slab: σ(z) = (1 + tanh(z/2))/2 on the i, f, o
    # blocks, tanh on the g block, so the activated gates come out of one elementwise
    # pass (tanh is cheaper than the logistic function on XLA:CPU).
    scale, offset = _g_block(hidden, 1.0, 0.5, c.dtype), _g_block(hidden, 0.0, 0.5, c.dtype)
    gates = scale * jnp.tanh(scale * (xp + dot(h, prep.w_hh_t) + prep.bias)) + offset
    i, f, g, o = (gates[:, k * hidden : (k + 1) * hidden] for k in range(4))
    c_new = f * c + i * g
    tanh_c = jnp.tanh(c_new)
    h_new = o * tanh_c
    return LSTMCarry(h_new, c_new), h_new, (h, c, gates, tanh_c)


def _fused_backward(prep: Prepared, saved: Any, dcarry: LSTMCarry, dy: Array) -> Any:
    _, c, gates, tanh_c = saved
    hidden = c.shape[-1]
    i, f, g, o = (gates[:, k * hidden : (k + 1) * hidden] for k in range(4))
    dh = dcarry.h + dy
    dc = dcarry.c + dh * o * (1 - tanh_c**2)
    dgates = jnp.concatenate([dc * g, dc * c, dc * i, dh * tanh_c], axis=-1)
    # σ' = a(1 − a) on the sigmoid blocks, tanh' = (1 − a)(1 + a) on the g block.
    dz = dgates * (1 - gates) * (gates + _g_block(hidden, 1.0, 0.0, c.dtype))
    return LSTMCarry(dot(dz, prep.w_hh), dc * f), dz, None


def _g_block(hidden: int, inside: float, outside: float, dtype: Any) -> Array:
    """A [1, 4H] row: ``inside`` on the g (cell candidate) block, ``outside`` elsewhere."""
    row = jnp.full((1, 4 * hidden), outside, dtype)
    return row.at[:, 2 * hidden : 3 * hidden].set(inside)


def _no_projection(params: LSTMParams) -> bool:
    return params.w_hr is None


_FUSED = FusedRules(
    _no_projection, project_input, prepare_stacked, _fused_forward, _fused_backward, slab=2
)

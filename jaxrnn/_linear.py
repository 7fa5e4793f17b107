"""Cells whose recurrence is linear in the carry: minGRU, minLSTM and the LRU.

Each writes its step as ``h_t = a_t ⊙ h_{t-1} + b_t`` with ``a_t`` and
``b_t`` functions of ``x_t`` only, and exposes that form in its
:class:`LinearSpec`, so that ``jaxrnn.scan(..., method="associative")`` can run
all the steps at once with :func:`jax.lax.associative_scan`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Float

from jaxrnn import _initializers as inits
from jaxrnn._cell import (
    Array,
    Carry,
    Cell,
    LinearCoefficients,
    LinearSpec,
    Params,
    PRNGKey,
    Shape,
    at_least_float32,
    carry_dtype,
    check_carry_leaf,
    check_param_dtype,
    check_positive_int,
    check_step_input,
    linear,
    to_rows,
)


def _affine(x: Array, w: Array, b: Array | None) -> Array:
    """``x @ w.T + b`` for ``x`` of shape ``[..., in]``, computed in at least float32."""
    return linear(to_rows(x), w, b).reshape(*x.shape[:-1], w.shape[0])


def _along_last(v: Array, like: Array) -> Array:
    """``v`` ``[F]`` reshaped to broadcast against ``like`` ``[..., F]`` without rank promotion."""
    return v.reshape((1,) * (like.ndim - 1) + (-1,))


def _identity(h: Array) -> Array:
    return h


def _linear_cell(
    spec: LinearSpec,
    init: Callable[..., Params],
    initial_carry: Callable[..., Carry],
    state_size: Callable[[Params], int],
) -> Cell:
    """A :class:`Cell` whose step is ``spec``'s recurrence applied to one time step."""

    def step(
        params: Any, carry: Array, x: Float[Array, "*batch I"]
    ) -> tuple[Float[Array, "*batch _"], Float[Array, "*batch O"]]:
        check_step_input(x, params.w_ih)
        check_carry_leaf(carry, "carry", x.shape[:-1], state_size(params))
        a, b = spec.coefficients(params, x)
        h = a * spec.to_state(carry) + b
        y = spec.readout(params, h, x)
        out_dtype = jnp.result_type(x, params.w_ih)
        return spec.to_carry(h).astype(carry.dtype), y.astype(out_dtype)

    def gates(params: Any, carry: Array, x: Array) -> LinearCoefficients:
        # A linear cell's "gates" are its coefficients: functions of x_t alone.
        return LinearCoefficients(*spec.coefficients(params, x))

    return Cell(init, initial_carry, step, dataclasses.replace(spec, step=step, gates=gates))


def _check_bias(use_bias: object) -> None:
    if not isinstance(use_bias, bool):
        raise TypeError(f"use_bias: expected a bool, got {use_bias!r}")


class MinGRUParams(NamedTuple):
    """Parameters of :func:`mingru`; the two blocks are stacked in the order z, h̃.

    Attributes:
      w_ih: ``[2H, I]`` input matrices ``[W_z; W_h]``.
      b_ih: ``[2H]`` biases ``[b_z; b_h]``, or None for a cell without biases.

    Example:
      >>> import jax, jaxrnn
      >>> params = jaxrnn.mingru(4).init(jax.random.key(0), input_size=3)
      >>> params.w_ih.shape, params.b_ih.shape
      ((8, 3), (8,))
    """

    w_ih: Array
    b_ih: Array | None


def _input_layer(
    key: PRNGKey, rows: int, input_size: int, dtype: Any, use_bias: bool
) -> tuple[Array, Array | None]:
    """``(w_ih [rows, I], b_ih [rows] or None)``, PyTorch's U(±1/√I) initialisation."""
    check_positive_int(input_size, "input_size")
    check_param_dtype(dtype)
    k_w, k_b = jax.random.split(key)
    bound = inits.pytorch_bound(input_size)
    w = inits.uniform(k_w, (rows, input_size), dtype, bound)
    return w, inits.uniform(k_b, (rows,), dtype, bound) if use_bias else None


def mingru(hidden_size: int, *, use_bias: bool = True) -> Cell:
    r"""The minGRU cell (Feng et al. 2024): a GRU whose gates see only the input, linear in h.

    .. math::

       z_t = \sigma(W_z x_t + b_z), \qquad \tilde h_t = W_h x_t + b_h, \qquad
       h_t = (1 - z_t) \odot h_{t-1} + z_t \odot \tilde h_t,

    that is ``a_t = 1 - z_t`` and ``b_t = z_t ⊙ h̃_t`` in the form of
    :class:`LinearSpec`. The carry is ``h`` of shape ``[*batch, H]``; the
    output is ``y_t = h_t``. Weights and biases are drawn from U(±1/√I)
    (PyTorch's ``nn.Linear``).

    Args:
      hidden_size: H.
      use_bias: whether the cell has the biases ``b_z`` and ``b_h``.

    Returns:
      A :class:`Cell` whose params are :class:`MinGRUParams` and whose spec is a
      :class:`LinearSpec`.

    Example:
      >>> import jax, jax.numpy as jnp, jaxrnn
      >>> cell = jaxrnn.mingru(8)
      >>> params = cell.init(jax.random.key(0), input_size=3)
      >>> xs = jnp.ones((100, 2, 3))
      >>> _, ys = jaxrnn.scan(cell, params, xs)
      >>> _, ys_assoc = jaxrnn.scan(cell, params, xs, method="associative")
      >>> ys.shape, bool(jnp.allclose(ys, ys_assoc, atol=1e-6))
      ((100, 2, 8), True)

    References:
      Feng, Tung, Ahmed, Bengio & Hajimirsadeghi, "Were RNNs all we needed?", 2024.
    """
    check_positive_int(hidden_size, "hidden_size")
    _check_bias(use_bias)
    hsize = hidden_size

    def init(key: PRNGKey, input_size: int, dtype: Any = jnp.float32) -> MinGRUParams:
        return MinGRUParams(*_input_layer(key, 2 * hsize, input_size, dtype, use_bias))

    def initial_carry(batch_shape: Shape = (), dtype: Any = jnp.float32) -> Array:
        return jnp.zeros((*batch_shape, hsize), carry_dtype(dtype))

    def coefficients(params: MinGRUParams, xs: Array) -> tuple[Array, Array]:
        g = _affine(xs, params.w_ih, params.b_ih)
        hidden = params.w_ih.shape[0] // 2
        z = jax.nn.sigmoid(g[..., :hidden])
        return 1 - z, z * g[..., hidden:]

    def readout(params: MinGRUParams, h: Array, xs: Array) -> Array:
        return h

    spec = LinearSpec(coefficients, readout, _identity, _identity)
    return _linear_cell(spec, init, initial_carry, lambda p: p.w_ih.shape[0] // 2)


class MinLSTMParams(NamedTuple):
    """Parameters of :func:`minlstm`; the three blocks are stacked in the order f, i, h̃.

    Attributes:
      w_ih: ``[3H, I]`` input matrices ``[W_f; W_i; W_h]``.
      b_ih: ``[3H]`` biases ``[b_f; b_i; b_h]``, or None for a cell without biases.

    Example:
      >>> import jax, jaxrnn
      >>> params = jaxrnn.minlstm(4).init(jax.random.key(0), input_size=3)
      >>> params.w_ih.shape, params.b_ih.shape
      ((12, 3), (12,))
    """

    w_ih: Array
    b_ih: Array | None


def minlstm(hidden_size: int, *, use_bias: bool = True) -> Cell:
    r"""The minLSTM cell (Feng et al. 2024): an LSTM whose gates see only x, normalised to sum to 1.

    .. math::

       f_t = \sigma(W_f x_t + b_f), \quad i_t = \sigma(W_i x_t + b_i), \quad
       \tilde h_t = W_h x_t + b_h, \\
       h_t = \frac{f_t}{f_t + i_t} \odot h_{t-1} + \frac{i_t}{f_t + i_t} \odot \tilde h_t,

    that is ``a_t = f'_t``, ``b_t = i'_t ⊙ h̃_t`` in the form of
    :class:`LinearSpec`. The carry is ``h`` of shape ``[*batch, H]`` (minLSTM
    has no cell state); the output is ``y_t = h_t``. Weights and biases are
    drawn from U(±1/√I).

    Args:
      hidden_size: H.
      use_bias: whether the cell has the biases ``b_f``, ``b_i`` and ``b_h``.

    Returns:
      A :class:`Cell` whose params are :class:`MinLSTMParams` and whose spec is
      a :class:`LinearSpec`.

    Example:
      >>> import jax, jax.numpy as jnp, jaxrnn
      >>> cell = jaxrnn.minlstm(8)
      >>> params = cell.init(jax.random.key(0), input_size=3)
      >>> h, y = cell.step(params, cell.initial_carry((2,)), jnp.ones((2, 3)))
      >>> h.shape, bool((y == h).all())
      ((2, 8), True)

    References:
      Feng, Tung, Ahmed, Bengio & Hajimirsadeghi, "Were RNNs all we needed?", 2024.
    """
    check_positive_int(hidden_size, "hidden_size")
    _check_bias(use_bias)
    hsize = hidden_size

    def init(key: PRNGKey, input_size: int, dtype: Any = jnp.float32) -> MinLSTMParams:
        return MinLSTMParams(*_input_layer(key, 3 * hsize, input_size, dtype, use_bias))

    def initial_carry(batch_shape: Shape = (), dtype: Any = jnp.float32) -> Array:
        return jnp.zeros((*batch_shape, hsize), carry_dtype(dtype))

    def coefficients(params: MinLSTMParams, xs: Array) -> tuple[Array, Array]:
        g = _affine(xs, params.w_ih, params.b_ih)
        hidden = params.w_ih.shape[0] // 3
        f = jax.nn.sigmoid(g[..., :hidden])
        i = jax.nn.sigmoid(g[..., hidden : 2 * hidden])
        total = f + i
        return f / total, i / total * g[..., 2 * hidden :]

    def readout(params: MinLSTMParams, h: Array, xs: Array) -> Array:
        return h

    spec = LinearSpec(coefficients, readout, _identity, _identity)
    return _linear_cell(spec, init, initial_carry, lambda p: p.w_ih.shape[0] // 3)


class LRUParams(NamedTuple):
    """Parameters of :func:`lru` (all real; the complex quantities are built from them).

    Attributes:
      nu_log: ``[H]``, with |λ| = exp(−exp(ν_log)).
      theta_log: ``[H]``, with arg λ = exp(θ_log).
      gamma_log: ``[H]``, the input normalisation γ = exp(γ_log).
      w_ih: ``[H, I]`` real part of the input matrix B.
      w_ih_im: ``[H, I]`` imaginary part of B.
      w_out: ``[I, H]`` real part of the output matrix C.
      w_out_im: ``[I, H]`` imaginary part of C.
      d: ``[I]`` the skip connection D.

    Example:
      >>> import jax, jaxrnn
      >>> params = jaxrnn.lru(4).init(jax.random.key(0), input_size=3)
      >>> params.nu_log.shape, params.w_ih.shape, params.w_out.shape, params.d.shape
      ((4,), (4, 3), (3, 4), (3,))
    """

    nu_log: Array
    theta_log: Array
    gamma_log: Array
    w_ih: Array
    w_ih_im: Array
    w_out: Array
    w_out_im: Array
    d: Array


def lru_eigenvalues(params: LRUParams) -> tuple[Array, Array]:
    """Real and imaginary parts of the diagonal Λ of :func:`lru` params, in at least float32."""
    dtype = at_least_float32(params.nu_log.dtype)
    modulus = jnp.exp(-jnp.exp(params.nu_log.astype(dtype)))
    phase = jnp.exp(params.theta_log.astype(dtype))
    return modulus * jnp.cos(phase), modulus * jnp.sin(phase)


def lru(
    hidden_size: int,
    *,
    r_min: float = 0.0,
    r_max: float = 1.0,
    max_phase: float = 2 * math.pi,
) -> Cell:
    r"""The linear recurrent unit (Orvieto et al. 2023): a complex diagonal linear recurrence.

    .. math::

       \Lambda = \exp(-\exp(\nu) + i \exp(\theta)), \qquad
       h_t = \Lambda \odot h_{t-1} + \gamma \odot (B x_t), \qquad
       y_t = \operatorname{Re}(C h_t) + D \odot x_t,

    with h complex of size H, ``B = w_ih + i·w_ih_im`` (``[H, I]``),
    ``C = w_out + i·w_out_im`` (``[I, H]``) and the normalisation
    γ = exp(γ_log), a parameter initialised to ``sqrt(1 − |Λ|²)``. The output
    has the input's size (O = I), as in the paper's residual blocks.

    Initialisation (the paper's ring init): |λ| uniform on the ring
    r_min ≤ |λ| ≤ r_max (uniform in area: |λ|² ~ U[r_min², r_max²]), arg λ ~
    U[0, max_phase]; B with entries N(0, 1/(2I)) for both parts, C with N(0,
    1/H), D with N(0, 1).

    The carry is real: ``[*batch, 2H]``, the real parts of h followed by its
    imaginary parts, so that it has the float32/float64 dtype of every jaxrnn
    carry and works with every transform (diagnostics, ``method="deer"``,
    forward mode) unchanged. ``method="associative"`` runs the recurrence on
    the complex h (complex64 or complex128) and converts at the ends.

    Args:
      hidden_size: H, the number of complex state units.
      r_min: smallest |λ| at initialisation, in [0, 1).
      r_max: largest |λ| at initialisation, in (r_min, 1].
      max_phase: largest arg λ at initialisation, > 0.

    Returns:
      A :class:`Cell` whose params are :class:`LRUParams` and whose spec is a
      :class:`LinearSpec` (state: the complex h).

    Example:
      >>> import jax, jax.numpy as jnp, jaxrnn
      >>> cell = jaxrnn.lru(16, r_min=0.9, r_max=0.999, max_phase=0.314)
      >>> params = cell.init(jax.random.key(0), input_size=3)
      >>> carry, ys = jaxrnn.scan(cell, params, jnp.ones((50, 2, 3)), method="associative")
      >>> carry.shape, ys.shape  # carry: [Re h, Im h]; output: the input size
      ((2, 32), (50, 2, 3))

    References:
      Orvieto, Smith, Gu, Fernando, Gulcehre, Pascanu & De, "Resurrecting
      recurrent neural networks for long sequences", ICML 2023.
    """
    check_positive_int(hidden_size, "hidden_size")
    for name, value in (("r_min", r_min), ("r_max", r_max), ("max_phase", max_phase)):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"{name}: expected a number, got {value!r}")
    if not 0 <= r_min < r_max <= 1:
        raise ValueError(
            f"r_min, r_max: expected 0 <= r_min < r_max <= 1, got r_min={r_min}, r_max={r_max}"
        )
    if not max_phase > 0:
        raise ValueError(f"max_phase: expected a positive number, got {max_phase}")
    hsize = hidden_size

    def init(key: PRNGKey, input_size: int, dtype: Any = jnp.float32) -> LRUParams:
        check_positive_int(input_size, "input_size")
        check_param_dtype(dtype)
        k_nu, k_theta, k_b, k_bi, k_c, k_ci, k_d = jax.random.split(key, 7)
        draw = at_least_float32(dtype)
        # u in (0, 1): log(0) would give an infinite ν_log or θ_log.
        tiny = float(jnp.finfo(draw).tiny)
        u1 = jax.random.uniform(k_nu, (hsize,), draw, tiny, 1.0)
        u2 = jax.random.uniform(k_theta, (hsize,), draw, tiny, 1.0)
        radius_sq = u1 * (r_max**2 - r_min**2) + r_min**2
        nu_log = jnp.log(-0.5 * jnp.log(radius_sq))
        theta_log = jnp.log(max_phase * u2)
        gamma_log = jnp.log(jnp.sqrt(1 - radius_sq))

        def normal(k: PRNGKey, shape: Shape, std: float) -> Array:
            return (std * jax.random.normal(k, shape, draw)).astype(dtype)

        b_std, c_std = 1 / math.sqrt(2 * input_size), 1 / math.sqrt(hsize)
        return LRUParams(
            nu_log=nu_log.astype(dtype),
            theta_log=theta_log.astype(dtype),
            gamma_log=gamma_log.astype(dtype),
            w_ih=normal(k_b, (hsize, input_size), b_std),
            w_ih_im=normal(k_bi, (hsize, input_size), b_std),
            w_out=normal(k_c, (input_size, hsize), c_std),
            w_out_im=normal(k_ci, (input_size, hsize), c_std),
            d=normal(k_d, (input_size,), 1.0),
        )

    def initial_carry(batch_shape: Shape = (), dtype: Any = jnp.float32) -> Array:
        return jnp.zeros((*batch_shape, 2 * hsize), carry_dtype(dtype))

    def coefficients(params: LRUParams, xs: Array) -> tuple[Array, Array]:
        lam_re, lam_im = lru_eigenvalues(params)
        bx_re, bx_im = _affine(xs, params.w_ih, None), _affine(xs, params.w_ih_im, None)
        gamma = _along_last(jnp.exp(params.gamma_log.astype(bx_re.dtype)), bx_re)
        bx = jax.lax.complex(gamma * bx_re, gamma * bx_im)
        lam = jax.lax.complex(lam_re, lam_im).astype(bx.dtype)
        a = jnp.broadcast_to(_along_last(lam, bx), bx.shape)
        return a, bx

    def readout(params: LRUParams, h: Array, xs: Array) -> Array:
        y = _affine(jnp.real(h), params.w_out, None) - _affine(jnp.imag(h), params.w_out_im, None)
        return y + _along_last(params.d.astype(y.dtype), y) * xs.astype(y.dtype)

    def to_state(carry: Array) -> Array:
        half = carry.shape[-1] // 2
        return jax.lax.complex(carry[..., :half], carry[..., half:])

    def to_carry(h: Array) -> Array:
        return jnp.concatenate([jnp.real(h), jnp.imag(h)], axis=-1)

    spec = LinearSpec(coefficients, readout, to_state, to_carry)
    return _linear_cell(spec, init, initial_carry, lambda p: 2 * p.nu_log.shape[0])

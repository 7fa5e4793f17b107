"""The Elman RNN, with the textbook output layer as an option."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp

from jaxrnn import _initializers as inits
from jaxrnn._cell import (
    Activation,
    Array,
    Cell,
    PRNGKey,
    Shape,
    carry_dtype,
    check_carry_leaf,
    check_positive_int,
    check_step_input,
    linear,
    resolve_activation,
    to_rows,
)


@dataclasses.dataclass(frozen=True)
class ElmanSpec:
    """The equations of an :func:`elman` cell: its activations f and g (None: no output layer).

    Example:
      >>> import jax, jaxrnn
      >>> jaxrnn.elman(4, activation="relu").spec.activation is jax.nn.relu
      True
    """

    activation: Activation
    output_activation: Activation | None


class ElmanParams(NamedTuple):
    """Parameters of :func:`elman`.

    Attributes:
      w_ih: ``[H, I]`` input-to-hidden matrix W_xh.
      w_hh: ``[H, H]`` hidden-to-hidden matrix W_hh.
      b_ih: ``[H]`` input bias, or None for a cell without biases.
      b_hh: ``[H]`` recurrent bias (PyTorch keeps two; b_h = b_ih + b_hh), or None.
      w_hy: ``[O, H]`` output matrix W_hy, or None without an output layer.
      b_y: ``[O]`` output bias, or None.

    Example:
      >>> import jax, jaxrnn
      >>> params = jaxrnn.elman(4, output_size=2).init(jax.random.key(0), input_size=3)
      >>> params.w_ih.shape, params.w_hh.shape, params.w_hy.shape
      ((4, 3), (4, 4), (2, 4))
    """

    w_ih: Array
    w_hh: Array
    b_ih: Array | None
    b_hh: Array | None
    w_hy: Array | None = None
    b_y: Array | None = None


def elman(
    hidden_size: int,
    *,
    activation: str | Activation = "tanh",
    output_size: int | None = None,
    output_activation: str | Activation | None = None,
    recurrent_init: inits.RecurrentInit = "uniform",
    bias_init: Literal["uniform", "zeros"] | None = None,
    use_bias: bool = True,
) -> Cell:
    r"""The Elman RNN (PyTorch's ``nn.RNN``), optionally with an output layer.

    .. math::

       h_t = f(W_{xh} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh}), \qquad
       y_t = g(W_{hy} h_t + b_y)\ \text{with an output layer, else}\ y_t = h_t.

    The carry is the array ``h`` of shape ``[*batch, H]``.

    Args:
      hidden_size: H, the size of h.
      activation: f: ``"tanh"``, ``"relu"``, ``"identity"``, ``"sigmoid"`` or a callable.
      output_size: O; when given, the cell has the output layer ``(w_hy, b_y)``.
      output_activation: g, as ``activation``; default identity. Only with ``output_size``.
      recurrent_init: ``"uniform"`` (PyTorch's U(±1/√H)), ``"orthogonal"``,
        ``"identity"`` (IRNN, Le et al. 2015) or a callable ``(key, shape, dtype)``.
      bias_init: ``"uniform"`` (U(±1/√H), PyTorch's default) or ``"zeros"``; by
        default ``"zeros"`` with ``recurrent_init="identity"``, as IRNN
        prescribes, and ``"uniform"`` otherwise.
      use_bias: whether the cell has biases (PyTorch's ``bias``).

    Returns:
      A :class:`Cell` whose params are :class:`ElmanParams`.

    Example:
      >>> import jax, jax.numpy as jnp, jaxrnn
      >>> cell = jaxrnn.elman(16, output_size=1, output_activation="sigmoid")
      >>> params = cell.init(jax.random.key(0), input_size=2)
      >>> h, y = cell.step(params, cell.initial_carry((4,)), jnp.ones((4, 2)))
      >>> h.shape, y.shape
      ((4, 16), (4, 1))

    References:
      Elman, "Finding structure in time", Cognitive Science 1990.
      Le, Jaitly & Hinton, "A simple way to initialize recurrent networks of
      rectified linear units", 2015.
    """
    check_positive_int(hidden_size, "hidden_size")
    act = resolve_activation(activation)
    out_act: Activation | None = None
    if output_size is not None:
        check_positive_int(output_size, "output_size")
        out_act = resolve_activation(
            "identity" if output_activation is None else output_activation, "output_activation"
        )
    elif output_activation is not None:
        raise ValueError("output_activation: only allowed together with output_size")
    inits.check_recurrent_init(recurrent_init, allow_identity=True)
    if bias_init is None:
        bias_init = "zeros" if recurrent_init == "identity" else "uniform"
    if bias_init not in ("uniform", "zeros"):
        raise ValueError(f"bias_init: expected 'uniform' or 'zeros', got {bias_init!r}")
    bound = inits.pytorch_bound(hidden_size)

    def init(key: PRNGKey, input_size: int, dtype: Any = jnp.float32) -> ElmanParams:
        check_positive_int(input_size, "input_size")
        k_ih, k_hh, k_bi, k_bh, k_hy, k_by = jax.random.split(key, 6)

        def bias(k: PRNGKey, size: int) -> Array | None:
            if not use_bias:
                return None
            if bias_init == "zeros":
                return jnp.zeros((size,), dtype)
            return inits.uniform(k, (size,), dtype, bound)

        params = ElmanParams(
            w_ih=inits.uniform(k_ih, (hidden_size, input_size), dtype, bound),
            w_hh=inits.recurrent_matrix(
                recurrent_init, k_hh, 1, hidden_size, hidden_size, bound, dtype
            ),
            b_ih=bias(k_bi, hidden_size),
            b_hh=bias(k_bh, hidden_size),
        )
        if output_size is None:
            return params
        return params._replace(
            w_hy=inits.uniform(k_hy, (output_size, hidden_size), dtype, bound),
            b_y=bias(k_by, output_size),
        )

    def initial_carry(batch_shape: Shape = (), dtype: Any = jnp.float32) -> Array:
        return jnp.zeros((*batch_shape, hidden_size), carry_dtype(dtype))

    def step(params: ElmanParams, carry: Array, x: Array) -> tuple[Array, Array]:
        check_step_input(x, params.w_ih)
        if (params.w_hy is None) != (out_act is None):
            want = "with" if out_act is not None else "without"
            raise ValueError(f"params: expected the params of an Elman cell {want} output layer")
        batch_shape = x.shape[:-1]
        check_carry_leaf(carry, "carry", batch_shape, params.w_hh.shape[1])
        pre = linear(to_rows(x), params.w_ih, params.b_ih) + linear(
            to_rows(carry), params.w_hh, params.b_hh
        )
        h = act(pre)
        out_dtype = jnp.result_type(x, params.w_ih)
        y = h
        if out_act is not None and params.w_hy is not None:
            y = out_act(linear(h, params.w_hy, params.b_y))
        new_carry = h.astype(carry.dtype).reshape(carry.shape)
        return new_carry, y.astype(out_dtype).reshape(*batch_shape, y.shape[-1])

    return Cell(init, initial_carry, step, ElmanSpec(act, out_act))

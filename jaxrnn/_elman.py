"""The Elman RNN, with the textbook output layer as an option."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

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
    activation_derivative,
    at_least_float32,
    carry_dtype,
    check_carry_leaf,
    check_param_dtype,
    check_positive_int,
    check_step_input,
    dot,
    linear,
    prepare_stacked,
    project_input,
    resolve_activation,
    to_rows,
)


@dataclasses.dataclass(frozen=True)
class ElmanSpec(Spec):
    """The equations of an :func:`elman` cell: its activations f and g (None: no output layer).

    Its fused BPTT rules run the recurrence in one custom VJP and the output
    layer, when there is one, after it.

    Example:
      >>> import jax, jaxrnn
      >>> jaxrnn.elman(4, activation="relu").spec.activation is jax.nn.relu
      True
    """

    activation: Activation
    output_activation: Activation | None

    def fused_rules(self) -> FusedRules:
        """The Elman RNN's fused forward and backward step."""
        return _fused_rules(self.activation, self.output_activation)

    def carry_readout(self) -> Callable[[ElmanParams, Array], Array]:
        """``y_t = h_t``, or ``g(W_hy h_t + b_y)`` with an output layer."""
        out = self.output_activation
        if out is None:
            return _read_carry

        def read(params: ElmanParams, carry: Array) -> Array:
            if params.w_hy is None:
                raise ValueError("params: expected the params of an Elman cell with output layer")
            z = linear(to_rows(carry), params.w_hy, params.b_y)
            return out(z).reshape(*carry.shape[:-1], z.shape[-1])

        return read


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

    w_ih: Float[Array, "H I"]
    w_hh: Float[Array, "H H"]
    b_ih: Float[Array, " H"] | None
    b_hh: Float[Array, " H"] | None
    w_hy: Float[Array, "O H"] | None = None
    b_y: Float[Array, " O"] | None = None


def elman(
    hidden_size: int,
    *,
    activation: str | Activation = "tanh",
    output_size: int | None = None,
    output_activation: str | Activation | None = None,
    init: inits.Preset = "pytorch",
    recurrent_init: inits.RecurrentInit | None = None,
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
      init: whose default initialisation the params follow.
        ``"pytorch"`` (default): U(±1/√H) everywhere (``nn.RNN``).
        ``"flax"`` (``flax.nnx.SimpleCell``): ``w_ih`` lecun_normal
        (variance 1/I), ``w_hh`` orthogonal, biases 0. ``"keras"``
        (``keras.layers.SimpleRNN``): ``w_ih`` glorot_uniform
        (U(±√(6/(I + H)))), ``w_hh`` orthogonal, biases 0. The peers have
        one bias: it is ``b_ih`` here, ``b_hh`` is 0. The output layer
        ``w_hy`` is drawn as the preset's dense layer: U(±1/√H),
        lecun_normal (``flax.nnx.Linear``), glorot_uniform
        (``keras.layers.Dense``); ``b_y`` as the biases. The options below
        override the part of the preset they name.
      recurrent_init: ``"uniform"`` (PyTorch's U(±1/√H)), ``"orthogonal"``,
        ``"identity"`` (IRNN, Le et al. 2015) or a callable ``(key, shape, dtype)``;
        None (default): the preset's.
      bias_init: ``"uniform"`` (U(±1/√H), PyTorch's default) or ``"zeros"``
        (all biases, ``b_y`` too); None (default): ``"zeros"`` with
        ``recurrent_init="identity"``, as IRNN prescribes, else the
        preset's (``"uniform"`` for ``"pytorch"``, ``"zeros"`` otherwise).
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
      >>> flax = jaxrnn.elman(16, init="flax").init(jax.random.key(0), input_size=2)
      >>> bool(jnp.allclose(flax.w_hh.T @ flax.w_hh, jnp.eye(16), atol=1e-5))
      True

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
    preset = inits.check_preset(init)
    inits.check_recurrent_init(recurrent_init, allow_identity=True)
    if bias_init is None:
        pytorch_uniform = preset == "pytorch" and recurrent_init != "identity"
        bias_init = "uniform" if pytorch_uniform else "zeros"
    if bias_init not in ("uniform", "zeros"):
        raise ValueError(f"bias_init: expected 'uniform' or 'zeros', got {bias_init!r}")
    bound = inits.pytorch_bound(hidden_size)

    def init_params(key: PRNGKey, input_size: int, dtype: Any = jnp.float32) -> ElmanParams:
        check_positive_int(input_size, "input_size")
        check_param_dtype(dtype)
        k_ih, k_hh, k_bi, k_bh, k_hy, k_by = jax.random.split(key, 6)

        def bias(k: PRNGKey, size: int) -> Array | None:
            if not use_bias:
                return None
            if bias_init == "zeros":
                return jnp.zeros((size,), dtype)
            return inits.uniform(k, (size,), dtype, bound)

        params = ElmanParams(
            w_ih=inits.dense_matrix(preset, k_ih, (hidden_size, input_size), bound, dtype),
            w_hh=inits.recurrent_weights(
                preset, recurrent_init, k_hh, 1, hidden_size, hidden_size, bound, dtype
            ),
            b_ih=bias(k_bi, hidden_size),
            b_hh=bias(k_bh, hidden_size),
        )
        if output_size is None:
            return params
        return params._replace(
            w_hy=inits.dense_matrix(preset, k_hy, (output_size, hidden_size), bound, dtype),
            b_y=bias(k_by, output_size),
        )

    def initial_carry(batch_shape: Shape = (), dtype: Any = jnp.float32) -> Array:
        return jnp.zeros((*batch_shape, hidden_size), carry_dtype(dtype))

    def step(
        params: ElmanParams, carry: Array, x: Float[Array, "*batch I"]
    ) -> tuple[Float[Array, "*batch H"], Float[Array, "*batch O"]]:
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

    return Cell(init_params, initial_carry, step, ElmanSpec(act, out_act, step=step))


def _read_carry(params: Any, carry: Array) -> Array:
    return carry


@functools.cache
def _fused_rules(act: Activation, out_act: Activation | None) -> FusedRules:
    """The fused rules of an Elman cell with activation f and output activation g (or None)."""

    def forward(prep: Prepared, h: Array, xp: Array) -> Any:
        a = xp + dot(h, prep.w_hh_t) + prep.bias
        h_new = act(a)
        return h_new, h_new, (h, a, h_new)

    def backward(prep: Prepared, saved: Any, dh_out: Array, dy: Array) -> Any:
        _, a, h_new = saved
        da = (dh_out + dy) * activation_derivative(act, a, h_new)
        return dot(da, prep.w_hh), da, None

    def readout(params: ElmanParams, hs: Array) -> Array:
        assert out_act is not None and params.w_hy is not None
        # As the step's linear: operands in the params' dtype, accumulated in at least float32.
        w_hy, acc = params.w_hy, at_least_float32(params.w_hy.dtype)
        z = jnp.einsum("tnh,oh->tno", hs.astype(w_hy.dtype), w_hy, preferred_element_type=acc)
        return out_act(z + (0 if params.b_y is None else params.b_y.astype(acc)[None, None, :]))

    def core(params: ElmanParams) -> ElmanParams:
        return params._replace(w_hy=None, b_y=None)

    return FusedRules(
        _has_matching_head(out_act),
        project_input,
        prepare_stacked,
        forward,
        backward,
        None if out_act is None else readout,
        core,
    )


def _has_matching_head(out_act: Activation | None) -> Callable[[ElmanParams], bool]:
    def applies(params: ElmanParams) -> bool:
        return (params.w_hy is None) == (out_act is None)

    return applies

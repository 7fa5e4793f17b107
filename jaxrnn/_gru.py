"""The GRU cell in PyTorch's and cuDNN's convention (reset gate after the recurrent matmul)."""

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
    at_least_float32,
    carry_dtype,
    check_callable,
    check_carry_leaf,
    check_param_dtype,
    check_positive_int,
    check_step_input,
    default_activations,
    dot,
    linear,
    to_rows,
)


@dataclasses.dataclass(frozen=True)
class GRUSpec(Spec):
    """The spec of a cell built by :func:`gru`: its activations and fused BPTT rules.

    Attributes:
      gate_fn: the activation of the gates r and z (σ by default).
      activation_fn: the activation of the candidate n (tanh by default).

    Example:
      >>> import jax, jaxrnn
      >>> jaxrnn.gru(4).spec
      GRUSpec()
      >>> jaxrnn.gru(4, gate_fn=jax.nn.hard_sigmoid).spec.fused_rules() is None  # autodiff
      True
    """

    gate_fn: Activation = dataclasses.field(default=jax.nn.sigmoid, repr=False)
    activation_fn: Activation = dataclasses.field(default=jnp.tanh, repr=False)

    def fused_rules(self) -> FusedRules | None:
        """The fused forward and backward step (see :class:`jaxrnn._cell.FusedRules`).

        None unless the activations are σ and tanh, which the rules are written for.
        """
        return _FUSED if default_activations(self.gate_fn, self.activation_fn) else None

    def carry_readout(self) -> Callable[[Any, Array], Array]:
        """``y_t = h_t``, the carry itself."""
        return _read_carry


class GRUParams(NamedTuple):
    """Parameters of :func:`gru`; the three gate blocks are stacked in the order r, z, n.

    Attributes:
      w_ih: ``[3H, I]`` input matrices ``[W_ir; W_iz; W_in]``.
      w_hh: ``[3H, H]`` recurrent matrices ``[W_hr; W_hz; W_hn]``.
      b_ih: ``[3H]`` input biases, or None for a cell without biases.
      b_hh: ``[3H]`` recurrent biases, or None.

    Example:
      >>> import jax, jaxrnn
      >>> params = jaxrnn.gru(4).init(jax.random.key(0), input_size=3)
      >>> params.w_ih.shape, params.b_hh.shape
      ((12, 3), (12,))
    """

    w_ih: Float[Array, "3*H I"]
    w_hh: Float[Array, "3*H H"]
    b_ih: Float[Array, " 3*H"] | None
    b_hh: Float[Array, " 3*H"] | None


def gru(
    hidden_size: int,
    *,
    init: inits.Preset = "pytorch",
    chrono: int | None = None,
    recurrent_init: inits.RecurrentInit | None = None,
    use_bias: bool = True,
    gate_fn: Activation = jax.nn.sigmoid,
    activation_fn: Activation = jnp.tanh,
) -> Cell:
    r"""The gated recurrent unit (PyTorch's ``nn.GRU`` step).

    .. math::

       r_t &= \sigma(W_{ir} x_t + b_{ir} + W_{hr} h_{t-1} + b_{hr}) \\
       z_t &= \sigma(W_{iz} x_t + b_{iz} + W_{hz} h_{t-1} + b_{hz}) \\
       n_t &= \tanh(W_{in} x_t + b_{in} + r_t \odot (W_{hn} h_{t-1} + b_{hn})) \\
       h_t &= (1 - z_t) \odot n_t + z_t \odot h_{t-1}

    The reset gate multiplies the recurrent matmul's result (PyTorch and
    cuDNN), not h before it (Cho et al. 2014). σ is ``gate_fn`` and tanh
    ``activation_fn`` (flax's ``GRUCell`` names): :func:`jaxrnn.scan` runs
    the cell on the fused BPTT path with the defaults and by autodiff
    through the step with any others. The carry is the array ``h``; the
    output is ``y_t = h_t``.

    Args:
      hidden_size: H.
      init: whose default initialisation the params follow.
        ``"pytorch"`` (default): U(±1/√H) everywhere (``nn.GRU``).
        ``"flax"`` (``flax.nnx.GRUCell``): ``w_ih`` lecun_normal (variance
        1/I), ``w_hh`` orthogonal over the whole ``[3H, H]`` matrix
        (``w_hh.T @ w_hh = I``: the cell's one ``[H, 3H]`` recurrent
        kernel), biases 0. ``"keras"`` (``keras.layers.GRU``, whose
        ``reset_after=True`` is this cell's equations): ``w_ih``
        glorot_uniform over the whole ``[3H, I]`` matrix (U(±√(6/(I + 3H)))),
        ``w_hh`` orthogonal over the whole matrix, biases 0. Keras orders
        the gates z, r, h, not r, z, n; with whole-matrix draws of
        exchangeable rows the law is the same in either order. The options
        below override the part of the preset they name.
      chrono: T_max for chrono initialisation (Tallec & Ollivier 2018) of the
        update gate, which keeps h: b_iz ~ log U[1, T_max − 1], b_hz = 0; the
        other gates keep the preset's biases.
      recurrent_init: ``"uniform"`` (U(±1/√H), PyTorch's default),
        ``"orthogonal"`` (each gate block orthogonal) or a callable
        ``(key, shape, dtype)`` per block; None (default): the preset's.
      use_bias: whether the cell has biases (PyTorch's ``bias``).
      gate_fn: the element-wise activation of the gates r and z (default
        ``jax.nn.sigmoid``).
      activation_fn: the element-wise activation of the candidate n (default
        ``jnp.tanh``).

    Returns:
      A :class:`Cell` whose params are :class:`GRUParams`.

    Example:
      >>> import jax, jax.numpy as jnp, jaxrnn
      >>> cell = jaxrnn.gru(8, chrono=100)
      >>> params = cell.init(jax.random.key(0), input_size=3)
      >>> h, y = cell.step(params, cell.initial_carry(), jnp.ones(3))  # no batch axis
      >>> h.shape, bool((y == h).all())
      ((8,), True)
      >>> flax = jaxrnn.gru(8, init="flax").init(jax.random.key(0), input_size=3)
      >>> bool(jnp.allclose(flax.w_hh.T @ flax.w_hh, jnp.eye(8), atol=1e-5)), float(flax.b_hh.max())
      (True, 0.0)

    References:
      Cho et al., "Learning phrase representations using RNN encoder-decoder", 2014.
    """
    check_positive_int(hidden_size, "hidden_size")
    preset = inits.check_preset(init)
    check_callable(gate_fn, "gate_fn")
    check_callable(activation_fn, "activation_fn")
    inits.check_recurrent_init(recurrent_init, allow_identity=False)
    inits.check_chrono(chrono)
    if not use_bias and chrono is not None:
        raise ValueError("use_bias: chrono needs use_bias=True")
    hsize = hidden_size
    bound = inits.pytorch_bound(hidden_size)

    def init_params(key: PRNGKey, input_size: int, dtype: Any = jnp.float32) -> GRUParams:
        check_positive_int(input_size, "input_size")
        check_param_dtype(dtype)
        k_ih, k_hh, k_bi, k_bh, k_chrono = jax.random.split(key, 5)
        params = GRUParams(
            w_ih=inits.dense_matrix(preset, k_ih, (3 * hsize, input_size), bound, dtype),
            w_hh=inits.recurrent_weights(
                preset, recurrent_init, k_hh, 3, hsize, hsize, bound, dtype, flax_whole=True
            ),
            b_ih=inits.bias_vector(preset, k_bi, 3 * hsize, bound, dtype) if use_bias else None,
            b_hh=inits.bias_vector(preset, k_bh, 3 * hsize, bound, dtype) if use_bias else None,
        )
        if chrono is None or params.b_ih is None or params.b_hh is None:
            return params
        b_z = inits.chrono_bias(k_chrono, chrono, hsize, dtype)
        return params._replace(
            b_ih=params.b_ih.at[hsize : 2 * hsize].set(b_z),
            b_hh=params.b_hh.at[hsize : 2 * hsize].set(0),
        )

    def initial_carry(batch_shape: Shape = (), dtype: Any = jnp.float32) -> Array:
        return jnp.zeros((*batch_shape, hsize), carry_dtype(dtype))

    def step(
        params: GRUParams, carry: Array, x: Float[Array, "*batch I"]
    ) -> tuple[Float[Array, "*batch H"], Float[Array, "*batch H"]]:
        check_step_input(x, params.w_ih)
        batch_shape = x.shape[:-1]
        hidden = params.w_hh.shape[1]
        check_carry_leaf(carry, "carry", batch_shape, hidden)
        h = to_rows(carry)
        _, z, n = _gate_rows(params, h, to_rows(x), gate_fn, activation_fn)
        h_new = n + z * (h.astype(n.dtype) - n)
        y = h_new.astype(jnp.result_type(x, params.w_ih)).reshape(*batch_shape, hidden)
        return h_new.astype(carry.dtype).reshape(carry.shape), y

    def gates(params: GRUParams, carry: Array, x: Array) -> GRUGates:
        rows = _gate_rows(params, to_rows(carry), to_rows(x), gate_fn, activation_fn)
        return GRUGates(*(a.reshape(*x.shape[:-1], a.shape[-1]) for a in rows))

    spec = GRUSpec(gate_fn, activation_fn, step=step, gates=gates)
    return Cell(init_params, initial_carry, step, spec)


class GRUGates(NamedTuple):
    """The gate activations of one GRU step, each ``[..., H]`` (what :func:`jaxrnn.gates` returns).

    With them the step is ``h_t = (1 − update) ⊙ candidate + update ⊙ h_{t-1}``.
    σ and tanh below stand for the cell's ``gate_fn`` and ``activation_fn``.

    Attributes:
      reset: r = σ(·), how much of the recurrent term ``W_hn h_{t-1} + b_hn``
        enters the candidate.
      update: z = σ(·), how much of h_{t-1} is kept.
      candidate: n = tanh(·), the new state candidate.

    Example:
      >>> import jax, jax.numpy as jnp, jaxrnn
      >>> cell = jaxrnn.gru(4)
      >>> params = cell.init(jax.random.key(0), input_size=3)
      >>> gates = jaxrnn.gates(cell, params, jnp.ones((5, 2, 3)))  # [T, B, I]
      >>> gates._fields, gates.update.shape
      (('reset', 'update', 'candidate'), (5, 2, 4))
    """

    reset: Array
    update: Array
    candidate: Array


def _gate_rows(
    params: GRUParams,
    h: Array,
    x: Array,
    gate_fn: Activation = jax.nn.sigmoid,
    activation_fn: Activation = jnp.tanh,
) -> GRUGates:
    """The activated gates ``[N, H]`` of a step from rows ``h`` ``[N, H]`` and ``x`` ``[N, I]``.

    The step and :func:`jaxrnn.gates` both compute the gates here, so that
    what the introspection shows is what the step used.
    """
    hidden = params.w_hh.shape[1]
    gi = linear(x, params.w_ih, params.b_ih)
    gh = linear(h, params.w_hh, params.b_hh)
    rz = gate_fn(gi[:, : 2 * hidden] + gh[:, : 2 * hidden])
    r, z = rz[:, :hidden], rz[:, hidden:]
    n = activation_fn(gi[:, 2 * hidden :] + r * gh[:, 2 * hidden :])
    return GRUGates(reset=r, update=z, candidate=n)


def _read_carry(params: Any, carry: Array) -> Array:
    return carry


def _project(p: GRUParams, xs: Array) -> tuple[Array, Array, Array]:
    # One [T, N, H] slab per gate: a loop body that slices one [N, 3H] slab makes
    # XLA:CPU fuse the gates into a single slow loop (2.5x slower inference at H=64).
    # In the params' dtype, accumulated in at least float32 (jaxrnn._cell.dot).
    acc, xs = at_least_float32(p.w_ih.dtype), xs.astype(p.w_ih.dtype)
    r, z, n = (
        jnp.einsum("tni,gi->tng", xs, w, preferred_element_type=acc)
        for w in _blocks(p.w_ih, p.w_hh.shape[1])
    )
    return r, z, n


def _prepare(p: GRUParams) -> Prepared:
    hidden, acc = p.w_hh.shape[1], at_least_float32(p.w_hh.dtype)
    b_ih, b_hh = _bias_blocks(p.b_ih, hidden, acc), _bias_blocks(p.b_hh, hidden, acc)
    # b_hh of the r and z gates joins b_ih; the n gate's stays inside r ⊙ (W_hn h + b_hn).
    bias = (b_ih[0] + b_hh[0], b_ih[1] + b_hh[1], b_ih[2])
    return Prepared(p.w_hh, tuple(w.T for w in _blocks(p.w_hh, hidden)), bias, b_hh[2])


def _blocks(a: Array, hidden: int) -> tuple[Array, Array, Array]:
    """The three gate blocks (r, z, n) of a stacked ``[3H, ...]`` weight or ``[3H]`` bias."""
    return a[:hidden], a[hidden : 2 * hidden], a[2 * hidden :]


def _bias_blocks(b: Array | None, hidden: int, dtype: Any) -> tuple[Any, Any, Any]:
    """A GRU bias as three ``[1, H]`` rows in ``dtype``, or three zeros."""
    if b is None:
        return 0, 0, 0
    r, z, n = _blocks(b.astype(dtype), hidden)
    return r[None, :], z[None, :], n[None, :]


def _fused_forward(prep: Prepared, h: Array, xp: tuple[Array, Array, Array]) -> Any:
    (x_r, x_z, x_n), (w_r, w_z, w_n), (b_r, b_z, b_n) = xp, prep.w_hh_t, prep.bias
    r = jax.nn.sigmoid(x_r + b_r + dot(h, w_r))
    z = jax.nn.sigmoid(x_z + b_z + dot(h, w_z))
    gh_n = dot(h, w_n) + prep.extra
    n = jnp.tanh(x_n + b_n + r * gh_n)
    h_new = n + z * (h - n)
    return h_new, h_new, (h, (r, z, n), gh_n)


def _fused_backward(prep: Prepared, saved: Any, dh_out: Array, dy: Array) -> Any:
    h, (r, z, n), gh_n = saved
    dh = dh_out + dy
    dn = dh * (1 - z) * (1 - n**2)
    dz = dh * (h - n) * z * (1 - z)
    dr = dn * gh_n * r * (1 - r)
    drec = jnp.concatenate([dr, dz, r * dn], axis=-1)
    return dh * z + dot(drec, prep.w_hh), (dr, dz, dn), drec


def _always(params: Any) -> bool:
    return True


_FUSED = FusedRules(_always, _project, _prepare, _fused_forward, _fused_backward, slab=1)

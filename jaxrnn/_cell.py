"""The `Cell` abstraction and the helpers every built-in cell shares.

Shape legend used in every docstring and array annotation of the package:

* ``T`` — number of time steps;
* ``*batch`` — any number of leading batch dimensions, including none
  (``B`` where there must be exactly one);
* ``I`` — input size, ``H`` — hidden size, ``O`` — output size of a cell
  (``O = H`` unless the cell has an output layer).

The public signatures carry these names as jaxtyping annotations, e.g.
``xs: Float[Array, "T *batch I"]``. They are checked at runtime under pytest
only (``tests/conftest.py``); in use they cost nothing.
"""

from __future__ import annotations

import dataclasses
import math
import operator
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol, TypeAlias

import jax
import jax.numpy as jnp
import numpy as np

Array: TypeAlias = jax.Array
PRNGKey: TypeAlias = jax.Array
Params: TypeAlias = Any
Carry: TypeAlias = Any
Shape: TypeAlias = tuple[int, ...]
Activation: TypeAlias = Callable[[Array], Array]


class InitFn(Protocol):
    """``init(key, input_size, dtype=jnp.float32) -> params``: a pytree of floating arrays.

    Example:
      >>> import jax, jaxrnn
      >>> init: jaxrnn.InitFn = jaxrnn.gru(4).init
      >>> init(jax.random.key(0), 3).w_ih.shape
      (12, 3)
    """

    def __call__(self, key: PRNGKey, input_size: int, dtype: Any = ..., /) -> Params: ...


class InitialCarryFn(Protocol):
    """``initial_carry(batch_shape=(), dtype=jnp.float32) -> carry``: the all-zero carry.

    Example:
      >>> import jaxrnn
      >>> initial_carry: jaxrnn.InitialCarryFn = jaxrnn.lstm(4).initial_carry
      >>> initial_carry((2,)).c.shape
      (2, 4)
    """

    def __call__(self, batch_shape: Shape = ..., dtype: Any = ..., /) -> Carry: ...


class StepFn(Protocol):
    """``step(params, carry, x) -> (carry, y)``: one time step, a :func:`jax.lax.scan` body.

    Example:
      >>> import jax, jax.numpy as jnp, jaxrnn
      >>> cell = jaxrnn.elman(4)
      >>> step: jaxrnn.StepFn = cell.step
      >>> h, y = step(cell.init(jax.random.key(0), 3), cell.initial_carry((2,)), jnp.ones((2, 3)))
      >>> y.shape
      (2, 4)
    """

    def __call__(self, params: Params, carry: Carry, x: Array, /) -> tuple[Carry, Array]: ...


class Cell(NamedTuple):
    """A recurrent cell as three pure functions.

    Hyper-parameters (hidden size, activation, initialisers) live in the
    closure of the factory that built the cell; arrays live in ``params`` and
    ``carry``. ``step`` has the signature of a :func:`jax.lax.scan` body, so
    ``functools.partial(cell.step, params)`` scans directly.

    Attributes:
      init: ``init(key, input_size, dtype=jnp.float32) -> params``, a typed
        NamedTuple of arrays.
      initial_carry: ``initial_carry(batch_shape=(), dtype=jnp.float32) ->
        carry``, all zeros. The carry is kept in at least float32 (a bfloat16
        cell has a float32 carry).
      step: ``step(params, carry, x) -> (carry, y)`` for ``x`` of shape
        ``[*batch, I]``, ``carry`` with the same ``*batch`` and ``y`` of shape
        ``[*batch, O]``. The returned carry has the structure, shapes and
        dtypes of the carry passed in.
      spec: for the built-in cells, a :class:`Spec` (:class:`ElmanSpec`,
        :class:`LSTMSpec`, :class:`GRUSpec`, :class:`LayerNormLSTMSpec`,
        :class:`LinearSpec`): the cell's
        equations in the forms the fast paths use (the fused BPTT rules, the
        linear recurrence of the associative scan). A spec describes one step
        function, ``spec.step``; when ``cell.step`` is another function (a
        step replaced by ``cell._replace(step=...)``, or a wrapper), the fast
        paths step aside and the cell runs through its own ``step``. None
        for a user's cell.
      draw: for a cell with randomness drawn once per sequence (the masks of
        :func:`jaxrnn.recurrent_dropout`), ``draw(key, carry) -> carry``: the
        carry with that randomness drawn from ``key``, for training; the carry
        ``initial_carry`` returns has none (evaluation). It works on carries
        with any leading axes (a stack's ``[num_layers, num_directions]``).
        :func:`jaxrnn.stack`, :func:`jaxrnn.training.readout` and
        :mod:`jaxrnn.nnx` call it when given a dropout key. None for a
        deterministic cell.

    Example:
      >>> import functools, jax, jax.numpy as jnp, jaxrnn
      >>> cell = jaxrnn.gru(8)
      >>> params = cell.init(jax.random.key(0), 3)
      >>> xs = jnp.ones((5, 2, 3))  # [T, B, I]
      >>> carry, ys = jax.lax.scan(
      ...     functools.partial(cell.step, params), cell.initial_carry((2,)), xs)
      >>> ys.shape, carry.shape
      ((5, 2, 8), (2, 8))
    """

    init: InitFn
    initial_carry: InitialCarryFn
    step: StepFn
    spec: Spec | None = None
    draw: Callable[[PRNGKey, Carry], Carry] | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Spec:
    """What the fast paths know about a built-in cell's step, owned by the cell's module.

    Attributes:
      step: the step function whose equations the spec describes. A fast path
        runs only for a cell whose ``step`` is this very function (see
        :func:`described_spec`).
      gates: ``gates(params, carry, x) -> NamedTuple`` of arrays ``[*batch,
        H]``: the gate activations the step computes from ``carry`` and ``x``
        (an LSTM's :class:`LSTMGates`, a GRU's :class:`GRUGates`, a linear
        cell's :class:`LinearCoefficients`), computed by the very code the step
        runs; None for a cell without gates. Read by :func:`jaxrnn.gates`.

    Example:
      >>> import jaxrnn
      >>> cell = jaxrnn.lstm(4)
      >>> cell.spec.step is cell.step  # the fused path runs this cell
      True
      >>> wrapped = cell._replace(step=lambda p, c, x: cell.step(p, c, 2 * x))
      >>> wrapped.spec.step is wrapped.step  # it runs the wrapped step by autodiff
      False
    """

    step: StepFn | None = dataclasses.field(default=None, repr=False, compare=False)
    gates: Callable[[Params, Carry, Array], Any] | None = dataclasses.field(
        default=None, repr=False, compare=False
    )

    def fused_rules(self) -> FusedRules | None:
        """The rules of the fused BPTT path, or None for a cell it does not cover."""
        return None

    def carry_readout(self) -> Callable[[Params, Carry], Array] | None:
        """``readout(params, carry) -> y``: the output read from the carry after a step, or None."""
        return None

    def cudnn_mismatch(self) -> str | None:
        """Why cuDNN's LSTM (``kernel="cudnn"``) does not compute this cell's step, or None.

        Only :class:`LSTMSpec` with σ gates and tanh answers None:
        ``jax.experimental.rnn`` has cuDNN's LSTM and no other cell.
        """
        return (
            f"kernel='cudnn' runs jaxrnn.lstm cells only (jax.experimental.rnn has cuDNN's "
            f"LSTM and no other cell); got a cell with {type(self).__name__}"
        )

    def input_size(self, params: Params) -> int:
        """The input size ``params`` were built for (the built-in cells' ``w_ih`` is ``[·, I]``)."""
        return int(params.w_ih.shape[-1])


@dataclasses.dataclass(frozen=True)
class LinearSpec(Spec):
    r"""The spec of a cell linear in its state: :math:`h_t = a_t \odot h_{t-1} + b_t`.

    The state ``h`` is the carry seen as one array (complex for :func:`lru`);
    ``a_t`` and ``b_t`` depend on the input ``x_t`` only, so they are computed
    for every step at once and the recurrence runs as an associative scan.
    A user's cell with such a spec gets ``method="associative"`` too: build
    the spec with ``step=`` the cell's step, which must compute the same
    recurrence (a spec without ``step``, or with another step than the
    cell's, describes no cell, and ``method="associative"`` refuses it).

    Attributes:
      coefficients: ``coefficients(params, xs) -> (a, b)`` for inputs ``xs`` of
        shape ``[..., I]`` with any leading axes (time and batch), ``a`` and
        ``b`` of shape ``[..., S]``.
      readout: ``readout(params, h, xs) -> ys``: the outputs ``[..., O]`` of
        the steps whose new states are ``h`` ``[..., S]`` and inputs ``xs``.
      to_state: ``to_state(carry) -> h``, the carry ``[*batch, ...]`` as a state ``[*batch, S]``.
      to_carry: ``to_carry(h) -> carry``, its inverse (the caller casts it to the carry's dtype).
      step: (keyword) the cell's step, which this spec describes.

    Example:
      >>> import jax, jax.numpy as jnp, jaxrnn
      >>> cell = jaxrnn.mingru(4)
      >>> params = cell.init(jax.random.key(0), input_size=3)
      >>> a, b = cell.spec.coefficients(params, jnp.ones((10, 2, 3)))  # [T, B, I]
      >>> a.shape, b.shape
      ((10, 2, 4), (10, 2, 4))
    """

    coefficients: Callable[[Params, Array], tuple[Array, Array]]
    readout: Callable[[Params, Array, Array], Array]
    to_state: Callable[[Carry], Array]
    to_carry: Callable[[Array], Carry]


class LinearCoefficients(NamedTuple):
    r"""The coefficients of one step of a linear cell, :math:`h_t = a_t \odot h_{t-1} + b_t`.

    What :func:`jaxrnn.gates` returns for :func:`jaxrnn.mingru` (``a = 1 − z``,
    ``b = z ⊙ h̃``), :func:`jaxrnn.minlstm` (``a = f'``, ``b = i' ⊙ h̃``) and
    :func:`jaxrnn.lru` (``a = λ``, ``b = γ ⊙ B x``, both complex), from
    :attr:`LinearSpec.coefficients`.

    Attributes:
      a: ``[..., S]`` the factor of the previous state.
      b: ``[..., S]`` the term added to it.

    Example:
      >>> import jax, jax.numpy as jnp, jaxrnn
      >>> cell = jaxrnn.mingru(4)
      >>> params = cell.init(jax.random.key(0), input_size=3)
      >>> coef = jaxrnn.gates(cell, params, jnp.ones((5, 3)))  # [T, I]
      >>> coef.a.shape, bool(((coef.a > 0) & (coef.a < 1)).all())
      ((5, 4), True)
    """

    a: Array
    b: Array


def described_spec(cell: Cell) -> Spec | None:
    """``cell.spec`` when it describes ``cell.step`` itself, else None.

    A replaced or wrapped step (``cell._replace(step=my_step)``) keeps the
    built-in cell's spec but not its step: every fast path then runs the
    cell's own ``step`` instead.
    """
    spec = cell.spec
    if spec is None or getattr(spec, "step", None) is not cell.step:
        return None
    return spec


class Prepared(NamedTuple):
    """What a fused step reads, made once outside the time loop (see :class:`FusedRules`)."""

    w_hh: Array  # [G·H, H], for the backward product dz @ W_hh
    w_hh_t: Any  # [H, G·H] for the forward product h @ W_hh^T; the GRU's: one [H, H] per gate
    bias: Any  # [1, G·H] row added to every step's pre-activations, or 0; the GRU's: per gate
    extra: Any = None  # a cell's own additions (the GRU's recurrent bias b_hn)


class FusedRules(NamedTuple):
    """One cell's fused forward and backward step, for :mod:`jaxrnn._fused`.

    The cell's params have the fields ``w_ih`` ``[G·H, I]``, ``w_hh`` ``[G·H,
    H]``, ``b_ih`` and ``b_hh`` ``[G·H]`` (or None); the fused path computes
    every weight gradient from the slabs the backward rule returns.

    Dtypes, as the built-in steps compute (:func:`linear`): every matmul
    takes its operands in the params' dtype and accumulates in the
    accumulation dtype, :func:`at_least_float32` of it (:func:`dot`); the
    slabs, biases, gates and the rest of the element-wise work are in the
    accumulation dtype. The rules receive the carry and the output
    cotangents cast to the accumulation dtype and return everything in it;
    :mod:`jaxrnn._fused` casts the carry back to its own dtype after every
    step, as ``cell.step`` does, and keeps the backward pass's carry
    cotangent in the accumulation dtype.

    Attributes:
      applies: ``applies(params) -> bool``: whether the rules cover these
        params (the LSTM's do not cover a projection).
      project: ``project(params, xs) -> slab``, the input slab of every step
        ``[T, N, G·H]`` (one matmul, no bias; the GRU's: one slab per gate).
      prepare: ``prepare(params) -> Prepared``.
      forward: ``forward(prep, carry, xp_t) -> (carry, h, saved)``;
        ``saved[0]`` is h_{t-1}.
      backward: ``backward(prep, saved, dcarry, dh) -> (dcarry_in, dxp,
        drec)``: the gradients of the input slab and of the recurrent slab
        ``h_{t-1} W_hh^T + b_hh``; ``drec`` is None where the two are the same.
        ``dxp`` has the input slab's structure (one array per gate for the GRU).
        A cell with other params (the gains of :func:`jaxrnn.layernorm_lstm`)
        returns a fourth item, a dict from those fields to each row's share
        of their gradient at this step, ``[N, *field.shape]``; the fused path
        sums it over steps and rows. ``b_ih`` and ``b_hh`` may be absent.
      readout: ``readout(params, hs) -> ys`` for an output layer on the
        hidden states ``[T, N, H]``, differentiated by autodiff; None when
        ``y_t = h_t``.
      core: ``core(params) -> params`` without the output layer's leaves.
      slab: the index in ``saved`` of the residual that has the input
        slab's structure, shapes and dtype, and the backward's ``dxp`` has
        it too (the LSTM's activated gates; the GRU's ``(r, z, n)``), never
        0; or None. The fused path then keeps one buffer (the GRU: one per
        gate) for all three: each step's
        residual is written over its input slice in the forward loop and
        its ``dxp`` over the residual in the backward loop.
    """

    applies: Callable[[Params], bool]
    project: Callable[[Params, Array], Any]
    prepare: Callable[[Params], Prepared]
    forward: Callable[..., tuple[Any, Array, tuple[Array, ...]]]
    backward: Callable[..., tuple[Any, ...]]
    readout: Callable[[Params, Array], Array] | None = None
    core: Callable[[Params], Params] | None = None
    slab: int | None = None


def dot(a: Array, w: Array) -> Array:
    """``a @ w`` as the steps multiply: operands in ``w.dtype``, accumulated in at least float32.

    ``a`` is cast to the weights' dtype (a float32 carry meets bfloat16
    weights as bfloat16, as in :func:`linear`); the product comes back in
    the accumulation dtype, :func:`at_least_float32` of ``w.dtype``.
    """
    return jnp.matmul(a.astype(w.dtype), w, preferred_element_type=at_least_float32(w.dtype))


def project_input(p: Any, xs: Array) -> Array:
    """The input slab ``[T, N, G·H]`` of every step: ``xs @ w_ih^T`` as one matmul.

    In the params' dtype, accumulated in (and returned in) at least float32 (:func:`dot`).
    """
    acc = at_least_float32(p.w_ih.dtype)
    return jnp.einsum("tni,gi->tng", xs.astype(p.w_ih.dtype), p.w_ih, preferred_element_type=acc)


def prepare_stacked(p: Any) -> Prepared:
    """The :class:`Prepared` of a cell with one stacked gate slab: both biases in one row.

    The biases are added in the accumulation dtype, as :func:`linear` adds them.
    """
    acc = at_least_float32(p.w_hh.dtype)
    present = [b.astype(acc)[None, :] for b in (p.b_ih, p.b_hh) if b is not None]
    return Prepared(p.w_hh, p.w_hh.T, sum(present) if present else 0)


_ACTIVATIONS: dict[str, Activation] = {
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "identity": lambda x: x,
    "sigmoid": jax.nn.sigmoid,
}


def resolve_activation(activation: str | Activation, name: str = "activation") -> Activation:
    """Return the activation function named by ``activation`` (or the callable itself)."""
    if callable(activation):
        return activation
    if isinstance(activation, str) and activation in _ACTIVATIONS:
        return _ACTIVATIONS[activation]
    raise ValueError(
        f"{name}: expected one of {sorted(_ACTIVATIONS)} or a callable, got {activation!r}"
    )


def default_activations(gate_fn: Activation, activation_fn: Activation) -> bool:
    """Whether a gated cell uses σ and tanh, the activations its fused rules are written for."""
    return gate_fn is jax.nn.sigmoid and activation_fn is jnp.tanh


def check_callable(value: Any, name: str) -> Activation:
    """Return ``value``; raise a TypeError naming ``name`` unless it is callable."""
    if not callable(value):
        raise TypeError(
            f"{name}: expected a callable applied element-wise (such as jax.nn.sigmoid or "
            f"jnp.tanh), got {type(value).__name__} {value!r}"
        )
    return value


def activation_derivative(f: Activation, a: Array, fa: Array) -> Array:
    """f'(a) for an element-wise activation f, given a and f(a)."""
    if f is _ACTIVATIONS["tanh"]:
        return 1 - fa**2
    if f is _ACTIVATIONS["sigmoid"]:
        return fa * (1 - fa)
    if f is _ACTIVATIONS["relu"]:
        return (a > 0).astype(a.dtype)
    if f is _ACTIVATIONS["identity"]:
        return jnp.ones_like(a)
    # A user's activation: its element-wise derivative by one forward-mode product.
    return jax.jvp(f, (a,), (jnp.ones_like(a),))[1]


def as_int(value: object) -> int | None:
    """``value`` as an int if it is an integer scalar (Python, NumPy, concrete JAX), else None.

    Bools are not integers here.
    """
    if isinstance(value, bool | np.bool_) or np.ndim(value) != 0:  # type: ignore[arg-type]
        return None
    if isinstance(value, int | np.integer):
        return int(value)
    dtype = getattr(value, "dtype", None)
    if dtype is not None and jnp.issubdtype(dtype, jnp.integer):
        try:
            return operator.index(value)  # type: ignore[arg-type]
        except TypeError:  # a tracer
            return None
    return None


def as_float(value: object) -> float | None:
    """``value`` as a float if it is a real scalar (Python, NumPy, concrete JAX), else None."""
    if isinstance(value, bool | np.bool_ | str | bytes) or np.ndim(value) != 0:  # type: ignore[arg-type]
        return None
    if isinstance(value, int | float | np.integer | np.floating):
        return float(value)
    dtype = getattr(value, "dtype", None)
    if dtype is not None and (
        jnp.issubdtype(dtype, jnp.integer) or jnp.issubdtype(dtype, jnp.floating)
    ):
        try:
            return float(value)  # type: ignore[arg-type]
        except TypeError:  # a tracer
            return None
    return None


def check_positive_int(value: object, name: str) -> int:
    """Return ``value`` as an int; raise unless it is a positive integer scalar.

    Python, NumPy and concrete JAX integers are accepted (as optax accepts
    them); bools, floats and tracers are not.
    """
    number = as_int(value)
    if number is None or number <= 0:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    return number


def check_positive_float(value: object, name: str, *, none: bool = False) -> float | None:
    """Return ``value`` as a finite positive float (None passes when ``none``); else raise."""
    if value is None and none:
        return None
    number = as_float(value)
    if number is None or not 0 < number < math.inf:
        allowed = "a positive number or None" if none else "a positive number"
        raise ValueError(f"{name}: expected {allowed}, got {value!r}")
    return number


def check_param_dtype(dtype: Any) -> jnp.dtype:
    """Raise unless ``dtype`` is a floating dtype (params of integers would never train)."""
    dtype = jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"dtype: expected a floating dtype for the params, got {dtype}")
    return dtype


def cast(tree: Any, dtype: Any) -> Any:
    """``tree`` with its floating leaves in ``dtype`` (unchanged when ``dtype`` is None)."""
    if dtype is None:
        return tree
    return jax.tree.map(
        lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree
    )


def at_least_float32(dtype: Any) -> jnp.dtype:
    """``dtype`` widened to float32 when narrower (float64 stays float64).

    Unlike ``jnp.promote_types(dtype, jnp.float32)``, valid under
    ``jax.numpy_dtype_promotion("strict")``.
    """
    dtype = jnp.dtype(dtype)
    return dtype if jnp.finfo(dtype).bits >= 32 else jnp.dtype(jnp.float32)


def carry_dtype(dtype: Any) -> jnp.dtype:
    """The dtype a carry is stored in: ``dtype`` promoted to at least float32."""
    dtype = jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"dtype: expected a floating dtype, got {dtype}")
    return at_least_float32(dtype)


def linear(x: Array, w: Array, b: Array | None) -> Array:
    """``x @ w.T + b`` for ``x`` of shape ``[N, in]``, ``w`` of shape ``[out, in]``.

    The weights choose the precision: the matmul runs in ``w.dtype`` (bfloat16
    weights give a bfloat16 matmul, whatever the dtype of ``x``) and
    accumulates in at least float32, which is also the dtype of the result.
    """
    acc = at_least_float32(w.dtype)
    # A dot_general contracting both minor dims, not ``x @ w.T``: XLA:CPU then keeps
    # ``w`` in place instead of copying it transposed on every call (a 2x slower step
    # at batch 1).
    y = jax.lax.dot_general(
        x.astype(w.dtype), w, (((1,), (1,)), ((), ())), preferred_element_type=acc
    )
    if b is not None:
        y = y + b.astype(acc)[None, :]
    return y


def check_step_input(x: Array, w_ih: Array) -> None:
    """Check that ``x`` is a floating array whose last axis is the input size of ``w_ih``."""
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(f"x: expected an array of shape [*batch, input_size], got {type(x)}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"x: expected a floating dtype, got {x.dtype}")
    if x.ndim < 1 or x.shape[-1] != w_ih.shape[1]:
        raise ValueError(
            f"x: expected shape [*batch, {w_ih.shape[1]}] (params were built for "
            f"input_size={w_ih.shape[1]}; w_ih has shape {tuple(w_ih.shape)}), "
            f"got shape {tuple(x.shape)}"
        )


def check_carry_leaf(leaf: Array, name: str, batch_shape: Shape, size: int) -> None:
    """Check that a carry leaf has shape ``[*batch_shape, size]``."""
    expected = (*batch_shape, size)
    if not hasattr(leaf, "shape") or tuple(leaf.shape) != expected:
        got = tuple(leaf.shape) if hasattr(leaf, "shape") else type(leaf).__name__
        raise ValueError(
            f"{name}: expected shape {expected} (batch shape of x, then the state size), got {got}"
        )


def to_rows(a: Array) -> Array:
    """Flatten all leading axes of ``a``: ``[*batch, F] -> [N, F]``."""
    return a.reshape(-1, a.shape[-1])

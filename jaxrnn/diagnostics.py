r"""Diagnostics of the temporal-dependency problem: vanishing and exploding gradients.

Pascanu, Mikolov & Bengio (2013) write the gradient that reaches the carry
:math:`h_t` from a loss at a later step as a product of one-step Jacobians,

.. math::

   \frac{\partial L}{\partial h_t} = \frac{\partial L}{\partial h_T}
   \prod_{k=t+1}^{T} \frac{\partial h_k}{\partial h_{k-1}}, \qquad
   \Big\| \frac{\partial h_T}{\partial h_t} \Big\| \le (\lambda_1 \gamma)^{T-t},

with :math:`\lambda_1` the largest singular value of the recurrent matrix and
:math:`\gamma` a bound on the activation's derivative. This module measures
every factor of that statement for any :class:`~jaxrnn.Cell`:

* :func:`carry_grad_norms` — ‖∂L/∂carry_t‖ at every step, in one backward pass;
* :func:`jacobian_norms` — ‖∂h_T/∂h_t‖₂ and the singular values of every
  one-step Jacobian ∂h_t/∂h_{t-1};
* :func:`lyapunov_exponents` — the top of the Lyapunov spectrum along the
  trajectory (Benettin's QR method);
* :func:`spectral_norm`, :func:`spectral_radius`, :func:`gamma_of`,
  :func:`pascanu_bound` — the theory's side of the comparison;
* :func:`classify_decay` — a least-squares decay rate and a label.

Conventions shared by every function:

* index ``t`` (0-based) names the carry **after** step ``t``: ``t = T - 1`` is
  the final carry and the initial carry has no index;
* the *state* of a cell is its carry flattened to one vector per batch
  element: the carry's leaves, in :func:`jax.tree.leaves` order, each
  flattened after the batch axes and concatenated (for an LSTM the state is
  ``[h; c]`` of size D = P + H; for the Elman RNN and the GRU it is ``h``,
  D = H). The result type of the leaves is the state's dtype;
* ``xs`` is time-major ``[T, *batch, I]`` unless ``time_major=False``
  (``[*batch, T, I]``), with T ≥ 1, and every per-step result puts its time
  axis where :func:`jaxrnn.scan` puts the time axis of its outputs;
* the functions that run the cell take ``options`` (a
  :class:`jaxrnn.ScanOptions`) and its fields as keywords, as
  :func:`jaxrnn.scan` does, so one record can be forwarded to every layer.
  Each says which fields it honours and raises a ValueError naming any
  other field that is set. ``backward`` is accepted and has no effect: the
  diagnostics differentiate the cell's own ``step`` by autodiff. Any
  ``method`` other than ``"sequential"``, and ``kernel="cudnn"``, are
  errors: the diagnostics follow the step one time step at a time;
* each function that runs the cell is one :func:`jax.jit`-compiled program
  whose static arguments are the cell, ``loss_fn``, ``readout`` and the
  options: repeated calls with the same cell and function objects and
  arrays of the same shapes and dtypes reuse the compiled program (a
  ``lambda`` written anew at each call is a new function, and compiles
  again). The functions can also be called inside ``jit``.

Plots of these quantities are in :mod:`jaxrnn.plots`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Literal, NamedTuple, Unpack

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Float

from jaxrnn._cell import (
    _ACTIVATIONS,
    Activation,
    Array,
    Carry,
    Cell,
    Params,
    PRNGKey,
    Shape,
    described_spec,
)
from jaxrnn._checks import (
    ScanKwargs,
    ScanOptions,
    check_carry,
    check_lengths,
    default_dtype,
    from_time_major,
    scan_options,
    to_time_major,
    whole_sequence,
)
from jaxrnn._sequential import sequential_scan, zero_padding

__all__ = [
    "DecayFit",
    "JacobianNorms",
    "carry_grad_norms",
    "classify_decay",
    "gamma_of",
    "jacobian_norms",
    "lyapunov_exponents",
    "pascanu_bound",
    "spectral_norm",
    "spectral_radius",
]

Readout = Callable[[Params, Carry], Array]


# --------------------------------------------------------------------------- helpers


def _prepare(
    cell: Any, params: Params, xs: Any, carry: Carry | None, time_major: bool
) -> tuple[Array, Shape, Carry]:
    """Check the common arguments; return time-major xs, the batch shape and the carry."""
    if not isinstance(cell, Cell):
        raise TypeError(
            f"cell: expected a jaxrnn.Cell(init, initial_carry, step), got {type(cell).__name__}"
        )
    xs, batch_shape = to_time_major(xs, time_major)
    if xs.shape[0] < 1:
        raise ValueError(
            "xs: expected at least one time step (T >= 1; a diagnostic of zero steps has "
            f"nothing to measure), got T=0 (time-major shape {tuple(xs.shape)})"
        )
    carry = check_carry(cell, carry, batch_shape, default_dtype(params, xs))
    return xs, batch_shape, carry


def _options(
    options: ScanOptions | None,
    kwargs: dict[str, Any],
    num_steps: int,
    function: str,
    honoured: tuple[str, ...],
) -> ScanOptions:
    """The checked scan options for a diagnostic that honours ``honoured`` of their fields.

    ``backward`` is accepted and ignored everywhere; ``method`` must be
    ``"sequential"``; ``truncate``/``checkpoint`` raise unless honoured.
    """
    options = scan_options(options, kwargs)
    if options.kernel != "xla":
        raise ValueError(
            f"kernel: {function} differentiates the cell's step on XLA, one time step at a "
            f"time; expected kernel='xla', got kernel={options.kernel!r}"
        )
    if options.method != "sequential":
        raise ValueError(
            f"method: {function} follows the cell's step one time step at a time (it "
            "differentiates each step of the trajectory), so only method='sequential' "
            f"applies; got method={options.method!r}"
        )
    for field in ("truncate", "checkpoint"):
        value = getattr(options, field)
        if value is not None and field not in honoured:
            raise ValueError(
                f"{field}: not an option of {function}, which honours "
                f"{', '.join(honoured)} (and ignores backward); got {field}={value!r}"
            )
    return whole_sequence(options, num_steps)


class _Flat(NamedTuple):
    """Flattens a batched carry to the state ``[*batch, D]`` and back."""

    treedef: Any
    shapes: list[Shape]  # leaf shapes after the batch axes
    dtypes: list[Any]
    dtype: Any  # the state's dtype
    size: int  # D

    def ravel(self, carry: Carry, batch_ndim: int) -> Array:
        leaves = jax.tree.leaves(carry)
        parts = [leaf.reshape(*leaf.shape[:batch_ndim], -1).astype(self.dtype) for leaf in leaves]
        return jnp.concatenate(parts, axis=-1)

    def unravel(self, state: Array) -> Carry:
        batch = state.shape[:-1]
        leaves, start = [], 0
        for shape, dtype in zip(self.shapes, self.dtypes, strict=True):
            n = int(np.prod(shape))
            leaves.append(state[..., start : start + n].reshape(*batch, *shape).astype(dtype))
            start += n
        return jax.tree.unflatten(self.treedef, leaves)


def _flat(carry: Carry, batch_ndim: int) -> _Flat:
    leaves, treedef = jax.tree.flatten(carry)
    shapes = [tuple(leaf.shape[batch_ndim:]) for leaf in leaves]
    dtypes = [leaf.dtype for leaf in leaves]
    size = sum(int(np.prod(s)) for s in shapes)
    return _Flat(treedef, shapes, dtypes, jnp.result_type(*dtypes), size)


def _state_step(cell: Cell, params: Params, flat: _Flat, batch_ndim: int) -> Any:
    """The cell's step as a map of states: ``(state [*batch, D], x) -> state``."""

    def f(state: Array, x: Array) -> Array:
        new, _ = cell.step(params, flat.unravel(state), x)
        return flat.ravel(new, batch_ndim)

    return f


def _jvp_columns(f: Any, state: Array, x: Array, frame: Array) -> tuple[Array, Array]:
    """``f(state, x)`` and the Jacobian of f times every column of ``frame`` [*batch, D, k]."""
    g = lambda s: f(s, x)  # noqa: E731
    new, lin = jax.linearize(g, state)
    return new, jax.vmap(lin, in_axes=-1, out_axes=-1)(frame)


def _builtin_readout(cell: Cell) -> Readout | None:
    """How a built-in cell's output y_t is read from its carry after step t (its spec's rule)."""
    spec = described_spec(cell)
    return None if spec is None else spec.carry_readout()


# --------------------------------------------------------------------------- gradients


def carry_grad_norms(
    cell: Cell,
    params: Params,
    xs: Array,
    loss_fn: Callable[[Array], Array],
    *,
    carry: Carry | None = None,
    lengths: Array | None = None,
    time_major: bool = True,
    readout: Readout | None = None,
    options: ScanOptions | None = None,
    **kwargs: Unpack[ScanKwargs],
) -> Carry:
    r"""‖∂L/∂carry_t‖ for every step t, from one backward pass.

    The loss is ``L = loss_fn(ys)`` with ``ys`` the outputs of
    ``jaxrnn.scan(cell, params, xs, carry=carry, lengths=lengths,
    time_major=time_major)``. A zero perturbation :math:`\epsilon_t` is added
    to the carry after every step,

    .. math::

       \tilde c_t = c_t + \epsilon_t, \qquad
       \frac{\partial L}{\partial c_t} = \frac{\partial L}{\partial \epsilon_t}
       \Big|_{\epsilon = 0},

    so a single :func:`jax.grad` with respect to all the perturbations gives
    the gradient with respect to every carry (not T separate gradients). It
    is the total derivative: it counts the paths through every later step
    and the path through the output ``y_t`` of step t itself, which for the
    built-in cells is read from the carry after the step (``y_t = h_t``, or
    the Elman output layer ``g(W_hy h_t + b_y)``). A user's cell may compute
    ``y_t`` any way it likes, so for a cell whose spec does not describe its
    step (a user's cell, a built-in cell whose step was replaced by
    ``cell._replace(step=...)`` or wrapped by :func:`jaxrnn.clip_carry_grad`)
    pass ``readout``, how ``y_t`` is computed from the carry after step t.
    Without it, ``y_t`` is taken as an output of step t that does not depend
    on the carry after it, and ∂L/∂carry_t counts only the paths through
    steps t+1, …, T−1 (the cotangent step t+1 sends back, which
    :func:`jaxrnn.clip_carry_grad` clips). In both cases the final carry
    reaches the loss only through ``y_{T-1}``: ``loss_fn`` does not see the
    final carry itself.

    With ``lengths``, step t of a sequence is padding when ``t >= lengths[b]``:
    its carry is the carry after the last valid step and its output is zero
    (:func:`jaxrnn.scan`'s masking), and its input is set to zero before any
    step runs, so NaN or Inf in the padding reaches no norm. A perturbation
    of a padded carry reaches only later padded steps, whose outputs are
    zero whatever the carry, and the final carry, which the loss does not
    see — so the norm at every padded step is exactly 0 (all T entries for a
    sequence of length 0), and the carry after the last valid step is
    reached only through its own output ``y_t``.

    With ``truncate=k`` the norms are what truncated BPTT(k) sees, as
    :func:`jaxrnn.scan` computes it: the gradient through the carry stops
    every k steps, so ∂L/∂carry_t counts only the paths through the later
    steps of its own chunk of k steps (and its own output), and is exactly 0
    where none of them reaches the loss.

    Args:
      cell: any :class:`~jaxrnn.Cell`.
      params: the cell's params.
      xs: inputs ``[T, *batch, I]`` (``[*batch, T, I]`` with ``time_major=False``), T ≥ 1.
      loss_fn: ``loss_fn(ys) -> scalar``, with ``ys`` shaped as
        :func:`jaxrnn.scan` returns them, ``[T, *batch, O]`` (or ``[*batch, T, O]``).
      carry: the initial carry (zeros when None).
      lengths: integer array of shape ``batch``, values in [0, T]: the number of
        valid steps of each sequence. Checked when concrete; under ``jit``
        values outside [0, T] act as the nearest end, as in :func:`jaxrnn.scan`.
      time_major: the layout of ``xs``, of ``ys`` and of the result.
      readout: ``readout(params, carry) -> y`` for a carry with the batch axes
        of ``xs``: how a user's cell reads ``y_t`` from the carry after step
        t. Default: the built-in cells' own readout (from the cell's spec,
        when it describes ``cell.step``), none for other cells.
      options: a :class:`jaxrnn.ScanOptions`; the keywords below override its
        fields. Honoured: ``unroll``, ``truncate`` and ``checkpoint``, with
        the meaning they have in :func:`jaxrnn.scan`; ``backward`` has no
        effect; ``method`` must be ``"sequential"``.
      unroll: passed to :func:`jax.lax.scan`.
      truncate: the norms of truncated BPTT(k) (see above); ``truncate >= T``
        is full BPTT.
      checkpoint: checkpointing through time in chunks of k steps: the same
        norms, with memory for the backward pass growing like T/k + k
        instead of T.
      backward: accepted, no effect (the step is differentiated by autodiff).
      method: ``"sequential"`` only.
      method_options: None only (it belongs to the DEER methods).

    Returns:
      A pytree shaped like the carry (an array for the Elman RNN and the GRU,
      :class:`~jaxrnn.LSTMCarry` ``(h, c)`` for the LSTM) whose leaves have
      shape ``[T, *batch]`` (``[*batch, T]`` with ``time_major=False``): entry
      ``t`` is the L2 norm over the feature axis of ∂L/∂(leaf of the carry
      after step t), one norm per sequence.

    Raises:
      TypeError: ``cell`` is not a :class:`~jaxrnn.Cell`, ``loss_fn``
        returns a non-floating value, or a keyword is not a scan option.
      ValueError: ``loss_fn`` does not return a scalar, ``readout`` returns
        the wrong shape, ``xs`` has no time step, ``xs``/``carry``/``lengths``
        are malformed, or ``method`` is not ``"sequential"``.

    Example:
      A linear Elman RNN with W_hh = 0.5·I: the loss at the last step reaches
      step t scaled by 0.5^(T-1-t).

      >>> import jax, jax.numpy as jnp, jaxrnn
      >>> from jaxrnn import diagnostics
      >>> cell = jaxrnn.elman(4, activation="identity", use_bias=False)
      >>> params = cell.init(jax.random.key(0), 2)._replace(w_hh=0.5 * jnp.eye(4))
      >>> xs = jnp.ones((5, 3, 2))  # [T, B, I]
      >>> last = lambda ys: ys[-1].sum()
      >>> norms = diagnostics.carry_grad_norms(cell, params, xs, last)
      >>> norms.shape  # [T, B]
      (5, 3)
      >>> (norms[:, 0] / norms[-1, 0]).tolist()
      [0.0625, 0.125, 0.25, 0.5, 1.0]

      Truncated BPTT in chunks of 2 steps (cuts before steps 2 and 4) sees
      only the last chunk:

      >>> norms = diagnostics.carry_grad_norms(cell, params, xs, last, truncate=2)
      >>> (norms[:, 0] / norms[-1, 0]).tolist()
      [0.0, 0.0, 0.0, 0.0, 1.0]

      For an LSTM the result is an ``LSTMCarry`` of norms, and ``lengths``
      make padded steps exactly 0:

      >>> cell = jaxrnn.lstm(4)
      >>> params = cell.init(jax.random.key(0), 2)
      >>> loss = lambda ys: (ys ** 2).sum()
      >>> norms = diagnostics.carry_grad_norms(
      ...     cell, params, xs, loss, lengths=jnp.array([5, 3, 0]))
      >>> norms.h.shape, norms.c.shape
      ((5, 3), (5, 3))
      >>> norms.h[3:, 1].tolist(), norms.c[:, 2].tolist()
      ([0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0])

    References:
      Pascanu, Mikolov & Bengio, "On the difficulty of training recurrent
      neural networks", ICML 2013.
      Williams & Peng, "An efficient gradient-based algorithm for on-line
      training of recurrent network trajectories", Neural Computation 1990.
    """
    xs, batch_shape, carry0 = _prepare(cell, params, xs, carry, time_major)
    num_steps = xs.shape[0]
    opts = _options(
        options, dict(kwargs), num_steps, "carry_grad_norms", ("unroll", "truncate", "checkpoint")
    )
    lengths = check_lengths(lengths, batch_shape, num_steps)
    if readout is not None and not callable(readout):
        raise TypeError(f"readout: expected a callable (params, carry) -> y, got {readout!r}")
    return _carry_grad_core(
        cell,
        loss_fn,
        readout,
        opts.unroll,
        opts.truncate,
        opts.checkpoint,
        time_major,
        params,
        xs,
        carry0,
        lengths,
    )


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4, 5, 6))
def _carry_grad_core(
    cell: Cell,
    loss_fn: Callable[[Array], Array],
    readout: Readout | None,
    unroll: int | bool,
    truncate: int | None,
    checkpoint: int | None,
    time_major: bool,
    params: Params,
    xs: Array,
    carry0: Carry,
    lengths: Array | None,
) -> Carry:
    """:func:`carry_grad_norms` on checked, time-major arguments, compiled once per cell."""
    num_steps, batch_ndim = xs.shape[0], xs.ndim - 2
    read = _builtin_readout(cell) if readout is None else readout
    xs = zero_padding(xs, lengths)

    def step(params: Params, carry: Carry, x_eps: Any) -> tuple[Carry, Array]:
        x, eps = x_eps  # the pair (x_t, ε_t)
        new, y = cell.step(params, carry, x)
        if read is not None:
            # y_t read from the perturbed carry: y + (∂y/∂c)·ε, equal to y in value.
            r, dy = jax.jvp(lambda c: read(params, c), (new,), (eps,))
            if not hasattr(r, "shape") or tuple(r.shape) != tuple(y.shape):
                got = tuple(r.shape) if hasattr(r, "shape") else type(r).__name__
                raise ValueError(
                    f"readout: expected an output of shape {tuple(y.shape)} (the shape of "
                    f"the y that cell.step returns), got {got}"
                )
            y = y + dy.astype(y.dtype)
        # The perturbed carry; a padded step's is discarded by the mask, so its norm is 0.
        return jax.tree.map(jnp.add, new, eps), y

    def loss_of(eps: Carry) -> Array:
        _, ys = sequential_scan(
            step,
            params,
            (xs, eps),
            carry0,
            lengths,
            False,
            unroll=unroll,
            truncate=truncate,
            checkpoint=checkpoint,
        )
        return loss_fn(from_time_major(ys, time_major, batch_ndim))

    eps0 = jax.tree.map(lambda c: jnp.zeros((num_steps, *c.shape), c.dtype), carry0)
    loss, vjp = jax.vjp(loss_of, eps0)
    if not hasattr(loss, "shape") or tuple(loss.shape) != ():
        got = tuple(loss.shape) if hasattr(loss, "shape") else type(loss).__name__
        raise ValueError(f"loss_fn: expected a scalar loss, got shape {got}")
    if not jnp.issubdtype(loss.dtype, jnp.floating):
        raise TypeError(f"loss_fn: expected a real floating loss, got dtype {loss.dtype}")
    (grads,) = vjp(jnp.ones((), loss.dtype))

    def norm(g: Array) -> Array:
        # Scaled by the largest entry: squaring would underflow to 0 for norms below the
        # square root of the dtype's smallest number (1e-154 in float64), far above it.
        g = g.reshape(*g.shape[: 1 + batch_ndim], -1)
        scale = jnp.max(jnp.abs(g), axis=-1, keepdims=True)
        safe = jnp.where(scale > 0, scale, 1)
        return scale[..., 0] * jnp.linalg.norm(g / safe, axis=-1)

    return from_time_major(jax.tree.map(norm, grads), time_major, batch_ndim)


# --------------------------------------------------------------------------- Jacobians


class JacobianNorms(NamedTuple):
    """The result of :func:`jacobian_norms` (layout for ``time_major=True``).

    Attributes:
      to_final: ``[T, *batch]``: entry t is ‖∂s_{T-1}/∂s_t‖₂, the spectral norm
        of the Jacobian of the final state with respect to the state after
        step t (so entry T−1 is 1, the norm of the identity).
      step_singular_values: ``[T, *batch, D]``: the singular values, in
        descending order, of the one-step Jacobian ∂s_t/∂s_{t-1} of step t
        (step 0's with respect to the initial state).

    Example:
      >>> import jax, jax.numpy as jnp, jaxrnn
      >>> from jaxrnn.diagnostics import jacobian_norms
      >>> cell = jaxrnn.lstm(3)
      >>> out = jacobian_norms(cell, cell.init(jax.random.key(0), 2), jnp.ones((4, 2)))
      >>> out.to_final.shape, out.step_singular_values.shape  # no batch axis; D = 3 + 3
      ((4,), (4, 6))
    """

    to_final: Array
    step_singular_values: Array


def jacobian_norms(
    cell: Cell,
    params: Params,
    xs: Array,
    *,
    carry: Carry | None = None,
    time_major: bool = True,
    options: ScanOptions | None = None,
    **kwargs: Unpack[ScanKwargs],
) -> JacobianNorms:
    r"""Spectral norms of ∂s_{T-1}/∂s_t and singular values of every one-step Jacobian.

    With :math:`s_t` the state (the flattened carry, see the module
    docstring) after step t and :math:`J_t = \partial s_t / \partial s_{t-1}`,

    .. math::

       \frac{\partial s_{T-1}}{\partial s_t} = J_{T-1} J_{T-2} \cdots J_{t+1},

    each :math:`J_t` a D × D matrix per sequence, computed as D Jacobian-vector
    products of the step (batch elements are independent, so one product
    gives a column for every sequence). Cost: O(T·D) forward-mode products
    and O(T·D³) for the products and SVDs — meant for diagnostics at small
    and moderate D. Products of many expanding Jacobians can overflow to inf.

    Args:
      cell: any :class:`~jaxrnn.Cell`.
      params: the cell's params.
      xs: inputs ``[T, *batch, I]`` (``[*batch, T, I]`` with ``time_major=False``), T ≥ 1.
      carry: the initial carry (zeros when None).
      time_major: the layout of ``xs`` and of the results.
      options: a :class:`jaxrnn.ScanOptions`, so that one record can be
        passed to every layer; the keywords below override its fields.
        Honoured: ``unroll`` (of the scan over the steps); ``backward`` has
        no effect. ``truncate`` and ``checkpoint`` raise a ValueError (the
        Jacobians are forward-mode products, with no backward pass to
        truncate or checkpoint), and so does a ``method`` other than
        ``"sequential"``.
      unroll: passed to :func:`jax.lax.scan`.
      truncate: None only.
      checkpoint: None only.
      backward: accepted, no effect.
      method: ``"sequential"`` only.
      method_options: None only.

    Returns:
      A :class:`JacobianNorms` ``(to_final [T, *batch], step_singular_values
      [T, *batch, D])``, time axis after the batch axes with ``time_major=False``.

    Raises:
      TypeError: ``cell`` is not a :class:`~jaxrnn.Cell`, or a keyword is not
        a scan option.
      ValueError: ``xs`` has no time step, ``xs``/``carry`` are malformed, or
        an option other than ``unroll`` and ``backward`` is set.

    Example:
      A tanh Elman RNN with W_hh = 0.9·Q, Q orthogonal: tanh' ≤ 1, so every
      one-step Jacobian has singular values ≤ 0.9 and ‖∂h_{T-1}/∂h_t‖ ≤ 0.9^(T-1-t).

      >>> import jax, jax.numpy as jnp, jaxrnn
      >>> from jaxrnn import diagnostics
      >>> cell = jaxrnn.elman(4, recurrent_init="orthogonal")
      >>> params = cell.init(jax.random.key(0), 2)
      >>> params = params._replace(w_hh=0.9 * params.w_hh)
      >>> out = diagnostics.jacobian_norms(cell, params, jnp.ones((6, 2)), unroll=2)
      >>> bool((out.step_singular_values <= 0.9 + 1e-6).all())
      True
      >>> bool((out.to_final <= 0.9 ** jnp.arange(5, -1, -1) + 1e-6).all())
      True

    References:
      Pascanu, Mikolov & Bengio, "On the difficulty of training recurrent
      neural networks", ICML 2013.
    """
    xs, _, carry0 = _prepare(cell, params, xs, carry, time_major)
    opts = _options(options, dict(kwargs), xs.shape[0], "jacobian_norms", ("unroll",))
    return _jacobian_core(cell, opts.unroll, time_major, params, xs, carry0)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _jacobian_core(
    cell: Cell, unroll: int | bool, time_major: bool, params: Params, xs: Array, carry0: Carry
) -> JacobianNorms:
    """:func:`jacobian_norms` on checked, time-major arguments, compiled once per cell."""
    batch_shape = tuple(xs.shape[1:-1])
    batch_ndim = len(batch_shape)
    flat = _flat(carry0, batch_ndim)
    f = _state_step(cell, params, flat, batch_ndim)
    eye = jnp.broadcast_to(
        jnp.eye(flat.size, dtype=flat.dtype), (*batch_shape, flat.size, flat.size)
    )

    def body(state: Array, x: Array) -> tuple[Array, Array]:
        return _jvp_columns(f, state, x, eye)

    state0 = flat.ravel(carry0, batch_ndim)
    _, jacobians = jax.lax.scan(body, state0, xs, unroll=unroll)  # [T, *batch, D, D]

    def back(product: Array, jac: Array) -> tuple[Array, Array]:
        # product = ∂s_{T-1}/∂s_t on entry; ∂s_{T-1}/∂s_{t-1} = product @ J_t.
        return product @ jac, product

    _, products = jax.lax.scan(back, eye, jacobians, reverse=True)
    out = JacobianNorms(
        to_final=jnp.linalg.svd(products, compute_uv=False)[..., 0],
        step_singular_values=jnp.linalg.svd(jacobians, compute_uv=False),
    )
    return from_time_major(out, time_major, batch_ndim)


def lyapunov_exponents(
    cell: Cell,
    params: Params,
    xs: Array,
    k: int | None = None,
    *,
    carry: Carry | None = None,
    burn_in: int = 0,
    key: PRNGKey | None = None,
    time_major: bool = True,
    options: ScanOptions | None = None,
    **kwargs: Unpack[ScanKwargs],
) -> Float[Array, "*batch k"]:
    r"""The top-k Lyapunov exponents along the trajectory, by Benettin's QR method.

    An orthonormal frame :math:`Q_0 \in \mathbb{R}^{D \times k}` is carried
    along the trajectory by the one-step Jacobians (k Jacobian-vector
    products per step, vmapped) and re-orthonormalised every step:

    .. math::

       J_t Q_{t-1} = Q_t R_t, \qquad
       \lambda_i = \frac{1}{T - \text{burn\_in}}
       \sum_{t \ge \text{burn\_in}} \log |(R_t)_{ii}|.

    Exponents are in nats per step: λ < 0 contracts (perturbations, and
    gradients, shrink like e^{λ·lag}), λ > 0 expands. The first
    ``burn_in`` steps move the frame toward the leading directions without
    being counted; without it the estimate carries an O(1/T) bias from the
    random initial frame. A Jacobian that maps a frame direction to zero
    (e.g. saturated or dead units) gives −inf.

    Args:
      cell: any :class:`~jaxrnn.Cell`.
      params: the cell's params.
      xs: inputs ``[T, *batch, I]`` (``[*batch, T, I]`` with ``time_major=False``), T ≥ 1.
      k: how many exponents, 1 ≤ k ≤ D (the state size, see the module
        docstring); None: all D.
      carry: the initial carry (zeros when None).
      burn_in: number of initial steps not counted, 0 ≤ burn_in < T.
      key: PRNG key of the random initial frame (the same frame for every
        sequence); default ``jax.random.key(0)``.
      time_major: the layout of ``xs``.
      options: a :class:`jaxrnn.ScanOptions`, so that one record can be
        passed to every layer; the keywords below override its fields.
        Honoured: ``unroll`` (of the scan over the steps); ``backward`` has
        no effect. ``truncate`` and ``checkpoint`` raise a ValueError (the
        frame is moved by forward-mode products, with no backward pass to
        truncate or checkpoint), and so does a ``method`` other than
        ``"sequential"``.
      unroll: passed to :func:`jax.lax.scan`.
      truncate: None only.
      checkpoint: None only.
      backward: accepted, no effect.
      method: ``"sequential"`` only.
      method_options: None only.

    Returns:
      ``[*batch, k]``: each sequence's exponents, in descending order.

    Raises:
      TypeError: ``cell`` is not a :class:`~jaxrnn.Cell`, or a keyword is not
        a scan option.
      ValueError: ``k`` is not in [1, D], ``burn_in`` not in [0, T), ``xs``
        has no time step, or an option other than ``unroll`` and
        ``backward`` is set.

    Example:
      A linear cell h_t = W h_{t-1} + U x_t has exponents log|eig(W)|.

      >>> import jax, jax.numpy as jnp, jaxrnn
      >>> from jaxrnn import diagnostics
      >>> cell = jaxrnn.elman(3, activation="identity", use_bias=False)
      >>> w_hh = jnp.diag(jnp.array([0.5, -0.9, 0.2]))
      >>> params = cell.init(jax.random.key(0), 2)._replace(w_hh=w_hh)
      >>> xs = jnp.ones((200, 2))
      >>> lyap = diagnostics.lyapunov_exponents(cell, params, xs, k=2, burn_in=100)
      >>> jnp.allclose(lyap, jnp.log(jnp.array([0.9, 0.5])), atol=1e-5).item()
      True

    References:
      Benettin, Galgani, Giorgilli & Strelcyn, "Lyapunov characteristic
      exponents for smooth dynamical systems and for Hamiltonian systems; a
      method for computing all of them", Meccanica 1980.
      Engelken, Wolf & Abbott, "Lyapunov spectra of chaotic recurrent neural
      networks", 2020 (arXiv:2006.02427).
    """
    xs, batch_shape, carry0 = _prepare(cell, params, xs, carry, time_major)
    num_steps = xs.shape[0]
    opts = _options(options, dict(kwargs), num_steps, "lyapunov_exponents", ("unroll",))
    size = _flat(carry0, len(batch_shape)).size
    if k is None:
        k = size
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= size:
        raise ValueError(
            f"k: expected an integer in [1, D={size}] (D: the size of the flattened "
            f"carry), got {k!r}"
        )
    if isinstance(burn_in, bool) or not isinstance(burn_in, int) or not 0 <= burn_in < num_steps:
        raise ValueError(
            f"burn_in: expected an integer in [0, T={num_steps}) (T: the number of steps "
            f"of xs), got {burn_in!r}"
        )
    if key is None:
        key = jax.random.key(0)
    return _lyapunov_core(cell, k, burn_in, opts.unroll, params, xs, carry0, key)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _lyapunov_core(
    cell: Cell,
    k: int,
    burn_in: int,
    unroll: int | bool,
    params: Params,
    xs: Array,
    carry0: Carry,
    key: PRNGKey,
) -> Array:
    """:func:`lyapunov_exponents` on checked, time-major arguments, compiled once per cell."""
    num_steps = xs.shape[0]
    batch_shape = tuple(xs.shape[1:-1])
    batch_ndim = len(batch_shape)
    flat = _flat(carry0, batch_ndim)
    f = _state_step(cell, params, flat, batch_ndim)
    frame, _ = jnp.linalg.qr(jax.random.normal(key, (flat.size, k), flat.dtype))
    frame = jnp.broadcast_to(frame, (*batch_shape, flat.size, k))

    def body(state_frame: tuple[Array, Array], inputs: tuple[Array, Array]) -> Any:
        (state, frame), (t, x) = state_frame, inputs
        state, moved = _jvp_columns(f, state, x, frame)
        frame, r = jnp.linalg.qr(moved)
        logs = jnp.log(jnp.abs(jnp.diagonal(r, axis1=-2, axis2=-1)))
        return (state, frame), jnp.where(t >= burn_in, logs, jnp.zeros_like(logs))

    inputs = (jnp.arange(num_steps, dtype=jnp.int32), xs)
    state0 = flat.ravel(carry0, batch_ndim)
    _, logs = jax.lax.scan(body, (state0, frame), inputs, unroll=unroll)
    exponents = logs.sum(axis=0) / (num_steps - burn_in)
    return -jnp.sort(-exponents, axis=-1)


# --------------------------------------------------------------------------- theory


def _check_matrix(w: Any, name: str, square: bool) -> Array:
    w = jnp.asarray(w)
    if w.ndim != 2 or (square and w.shape[0] != w.shape[1]):
        want = "a square matrix [N, N]" if square else "a matrix [M, N]"
        raise ValueError(f"{name}: expected {want}, got shape {tuple(w.shape)}")
    if not jnp.issubdtype(w.dtype, jnp.floating):
        raise TypeError(f"{name}: expected a floating dtype, got {w.dtype}")
    return w


def spectral_norm(w: Array) -> Float[Array, ""]:
    r"""The largest singular value λ1 = ‖W‖₂ of a matrix.

    Pascanu et al.'s bound ‖∂h_t/∂h_k‖ ≤ (λ1·γ)^(t−k) uses λ1 of the recurrent
    matrix of an Elman RNN (``params.w_hh``). For a gated cell ``w_hh`` stacks
    the gate blocks (``[4H, H]`` for the LSTM) and the bound does not apply
    as such.

    Args:
      w: ``[M, N]``.

    Returns:
      A scalar array.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxrnn.diagnostics import spectral_norm
      >>> spectral_norm(jnp.array([[0.0, 2.0], [0.5, 0.0]])).item()
      2.0
    """
    w = _check_matrix(w, "w", square=False)
    return jnp.linalg.svd(w, compute_uv=False)[0]


def spectral_radius(w: Array) -> Float[Array, ""]:
    r"""The largest absolute eigenvalue ρ(W) of a square matrix.

    For a linear recurrence h_t = W h_{t-1} + …, ρ < 1 is sufficient for
    vanishing gradients and ρ > 1 necessary for exploding ones; ρ ≤ ‖W‖₂
    always, with equality for normal matrices. Uses :func:`jax.numpy.linalg.eigvals`,
    which JAX implements on CPU and GPU but not on TPU.

    Args:
      w: ``[N, N]``.

    Returns:
      A real scalar array.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxrnn.diagnostics import spectral_radius, spectral_norm
      >>> w = jnp.array([[0.5, 10.0], [0.0, 0.5]])  # not normal: ρ = 0.5 < ‖W‖₂
      >>> spectral_radius(w).item(), spectral_norm(w).item() > 10
      (0.5, True)
    """
    w = _check_matrix(w, "w", square=True)
    return jnp.max(jnp.abs(jnp.linalg.eigvals(w)))


def gamma_of(activation: str | Activation) -> float:
    """γ, the bound on |σ'| in Pascanu et al.'s bound, for a built-in activation.

    1 for ``"tanh"``, ``"relu"`` and ``"identity"``; 1/4 for ``"sigmoid"``.

    Args:
      activation: a name, or one of the built-in activation functions (as in
        ``jaxrnn.elman(...).spec.activation``).

    Returns:
      γ as a float.

    Raises:
      ValueError: for another activation; pass its Lipschitz constant to
        :func:`pascanu_bound` directly.

    Example:
      >>> import jaxrnn
      >>> from jaxrnn.diagnostics import gamma_of
      >>> gamma_of("sigmoid"), gamma_of(jaxrnn.elman(4).spec.activation)
      (0.25, 1.0)
    """
    gammas = {"tanh": 1.0, "relu": 1.0, "identity": 1.0, "sigmoid": 0.25}
    if isinstance(activation, str) and activation in gammas:
        return gammas[activation]
    for name, fn in _ACTIVATIONS.items():
        if activation is fn:
            return gammas[name]
    raise ValueError(
        f"activation: expected one of {sorted(gammas)} or the built-in function of one, got "
        f"{activation!r}; for another activation pass its Lipschitz constant as gamma"
    )


def pascanu_bound(lambda1: Any, gamma: Any, lags: Any) -> Array:
    r"""Pascanu et al.'s bound (λ1·γ)^lag on ‖∂h_t/∂h_{t-lag}‖.

    λ1 < 1/γ makes the bound, and so the gradient, vanish geometrically;
    λ1 > 1/γ is necessary (not sufficient) for exploding gradients.

    Args:
      lambda1: λ1, the spectral norm of the recurrent matrix (:func:`spectral_norm`).
      gamma: γ ≥ sup|σ'| (:func:`gamma_of`).
      lags: lags, any shape.

    Returns:
      The bound, shaped like ``lags``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxrnn.diagnostics import pascanu_bound
      >>> pascanu_bound(2.0, 0.25, jnp.arange(4)).tolist()
      [1.0, 0.5, 0.25, 0.125]

    References:
      Pascanu, Mikolov & Bengio, "On the difficulty of training recurrent
      neural networks", ICML 2013, section 2.1.
    """
    base = jnp.asarray(lambda1) * jnp.asarray(gamma)
    if base.ndim != 0:
        raise ValueError(
            f"lambda1, gamma: expected scalars, got shapes {jnp.shape(lambda1)}, {jnp.shape(gamma)}"
        )
    lags = jnp.asarray(lags)
    return jnp.power(base.astype(jnp.result_type(base, float)), lags)


class DecayFit(NamedTuple):
    """The result of :func:`classify_decay`.

    Attributes:
      rate: the fitted multiplicative change per step of lag, e^{log_rate}.
      log_rate: the least-squares slope of log(norm) against lag, nats per step.
      label: ``"vanishing"``, ``"exploding"`` or ``"stable"``.

    Example:
      >>> from jaxrnn.diagnostics import classify_decay
      >>> classify_decay([1.0, 1.0, 1.0]).label
      'stable'
    """

    rate: float
    log_rate: float
    label: Literal["vanishing", "exploding", "stable"]


def classify_decay(norms_by_lag: Any, lags: Any = None, *, tolerance: float = 0.01) -> DecayFit:
    r"""Fit a geometric rate to gradient norms against lag and name the regime.

    The slope b of :math:`\log \|g_\ell\| \approx a + b\,\ell` is fitted by least
    squares; the rate is :math:`e^b` per step. The label is

    * ``"vanishing"`` when b < −tolerance (rate < e^{−tolerance}),
    * ``"exploding"`` when b > tolerance (rate > e^{tolerance}),
    * ``"stable"`` otherwise.

    The default tolerance, 0.01 nats per step, is a change by a factor e
    over 100 steps. Norms from :func:`carry_grad_norms` with the loss at the
    last step are ordered by step, so ``norms[::-1]`` orders them by lag;
    leave out padded steps (their norm is 0). This runs on concrete values,
    outside :func:`jax.jit`.

    Args:
      norms_by_lag: ``[L]`` positive finite norms, entry ℓ at lag ``lags[ℓ]``.
      lags: ``[L]`` lags; default ``0, 1, …, L−1``.
      tolerance: the non-negative threshold on |b|, in nats per step.

    Returns:
      A :class:`DecayFit` ``(rate, log_rate, label)``.

    Raises:
      ValueError: fewer than two norms, a norm that is not positive and
        finite, lags of another shape or all equal, or a negative tolerance.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxrnn.diagnostics import classify_decay
      >>> fit = classify_decay(3.0 * 0.8 ** jnp.arange(20))
      >>> round(fit.rate, 12), fit.label
      (0.8, 'vanishing')
      >>> classify_decay(1.05 ** jnp.arange(20)).label
      'exploding'
    """
    norms = np.asarray(norms_by_lag, dtype=np.float64)
    if norms.ndim != 1 or norms.size < 2:
        raise ValueError(
            f"norms_by_lag: expected a 1-D array of at least 2 norms, got shape {norms.shape}"
        )
    if not (np.isfinite(norms).all() and (norms > 0).all()):
        raise ValueError(
            "norms_by_lag: expected positive finite norms (leave out padded steps, whose "
            f"norm is 0), got values in [{norms.min()}, {norms.max()}]"
        )
    lag = np.arange(norms.size, dtype=np.float64) if lags is None else np.asarray(lags, np.float64)
    if lag.shape != norms.shape:
        raise ValueError(f"lags: expected shape {norms.shape} (one per norm), got {lag.shape}")
    if np.ptp(lag) == 0:
        raise ValueError("lags: expected at least two different lags")
    if not tolerance >= 0:
        raise ValueError(f"tolerance: expected a non-negative number, got {tolerance!r}")
    centred = lag - lag.mean()
    log_norms = np.log(norms)
    slope = float(centred @ (log_norms - log_norms.mean()) / (centred @ centred))
    label: Literal["vanishing", "exploding", "stable"]
    if slope < -tolerance:
        label = "vanishing"
    elif slope > tolerance:
        label = "exploding"
    else:
        label = "stable"
    return DecayFit(rate=float(np.exp(slope)), log_rate=slope, label=label)

"""`jaxrnn.gates`: the gate activations of every step of a scan, read back for inspection.

The formulas are the cell's own: a built-in cell's spec carries ``gates``, the
function its step computes its gates with (:class:`jaxrnn.Spec`). This module
runs one masked scan that records the carry before each step, then applies
that function to every step's carry and input at once.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike
from jaxtyping import Shaped

from jaxrnn._cell import Array, Carry, Cell, Params, described_spec
from jaxrnn._checks import check_scan_args, from_time_major
from jaxrnn._sequential import sequential_scan, valid_steps, where_valid, zero_padding


def gates(
    cell: Cell,
    params: Params,
    xs: Shaped[ArrayLike, "..."],
    *,
    carry: Carry | None = None,
    lengths: Array | None = None,
    reverse: bool = False,
    time_major: bool = True,
) -> Any:
    r"""The gate activations of every step that ``jaxrnn.scan`` runs on the same arguments.

    For a cell whose step computes gates (its :class:`jaxrnn.Spec` has
    ``gates``): one masked scan records the carry before every step, then the
    cell's own gate function, the code its step runs, is applied to every
    step's previous carry and input, vectorised over time::

      for t in range(T):                      # t = T-1 … 0 with reverse=True
          gates[t] = cell.spec.gates(params, carry, xs[t])
          carry, _ = cell.step(params, carry, xs[t])

    What each cell returns, every field ``[T, *batch, H]`` (``[*batch, T, H]`` batch-major):

    * :func:`jaxrnn.lstm`: :class:`jaxrnn.LSTMGates` ``(input, forget,
      candidate, output)`` — i, f, g, o, with
      :math:`c_t = f \odot c_{t-1} + i \odot g` and
      :math:`h_t = o \odot \tanh(c_t)` (before a projection);
    * :func:`jaxrnn.gru`: :class:`jaxrnn.GRUGates` ``(reset, update,
      candidate)`` — r, z, n, with :math:`h_t = (1 - z) \odot n + z \odot h_{t-1}`;
    * :func:`jaxrnn.mingru`, :func:`jaxrnn.minlstm`, :func:`jaxrnn.lru`:
      :class:`jaxrnn.LinearCoefficients` ``(a, b)`` of
      :math:`h_t = a_t \odot h_{t-1} + b_t` (complex for the LRU, whose
      state is the complex h of size H).

    The activations are those the cell was built with (an LSTM's or GRU's
    ``gate_fn`` and ``activation_fn``: σ and tanh above by default). The
    gates are in the dtype the step computes them in: at least float32
    (a bfloat16 cell's are float32). Steps past a sequence's length are not
    run: their gates are exactly zero. With ``reverse=True`` each sequence is
    walked from its last valid step, as :func:`jaxrnn.scan` does; the gates
    keep the input's time order.

    Args:
      cell: a cell with gates: :func:`jaxrnn.lstm`, :func:`jaxrnn.gru`,
        :func:`jaxrnn.mingru`, :func:`jaxrnn.minlstm`, :func:`jaxrnn.lru`, or
        a user's cell whose spec has ``gates`` and describes its own step.
      params: the cell's params.
      xs: inputs ``[T, *batch, I]``, or ``[*batch, T, I]`` with ``time_major=False``.
      carry: the initial carry (zeros when None), as for :func:`jaxrnn.scan`.
      lengths: integer array of shape ``batch`` with values in [0, T], as for
        :func:`jaxrnn.scan` (checked when concrete; under ``jit`` values
        outside [0, T] act as the nearest end of that range).
      reverse: run each sequence from its last valid step to its first.
      time_major: whether the time axis of ``xs`` and of the gates is the
        first axis (else the one after the batch axes).

    Returns:
      The cell's NamedTuple of gates, each ``[T, *batch, H]`` (or ``[*batch, T, H]``).

    Raises:
      ValueError: for a cell without gates (:func:`jaxrnn.elman`, a user's
        cell without a spec, or a cell whose step was replaced or wrapped,
        e.g. by :func:`jaxrnn.clip_carry_grad`, since its spec no longer
        describes the step that runs); and every error :func:`jaxrnn.scan`
        raises for these arguments.

    Example:
      >>> import jax, jax.numpy as jnp, jaxrnn
      >>> cell = jaxrnn.lstm(8)
      >>> params = cell.init(jax.random.key(0), input_size=3)
      >>> xs = jax.random.normal(jax.random.key(1), (20, 2, 3))  # [T, B, I]
      >>> g = jaxrnn.gates(cell, params, xs, lengths=jnp.array([20, 5]))
      >>> g.forget.shape, bool((g.forget[5:, 1] == 0).all())  # padded steps: zeros
      ((20, 2, 8), True)

      The gates reproduce the step's cell-state update:

      >>> carry, _ = jaxrnn.scan(cell, params, xs[:2])
      >>> c1 = jaxrnn.scan(cell, params, xs[:1])[0].c
      >>> bool(jnp.allclose(carry.c, g.forget[1] * c1 + g.input[1] * g.candidate[1], atol=1e-6))
      True
    """
    gate_fn = _gate_fn(cell)
    args = check_scan_args(cell, params, xs, carry, lengths, reverse, time_major, 1, None, {})
    # The step names a wrong input size or carry, whatever T (T = 0 runs no step).
    one_step = jax.ShapeDtypeStruct(args.xs.shape[1:], args.xs.dtype)
    jax.eval_shape(cell.step, params, args.carry, one_step)
    xs_tm = zero_padding(args.xs, args.lengths)

    def record(p: Params, before: Carry, x: Array) -> tuple[Carry, Carry]:
        after, _ = cell.step(p, before, x)
        return after, before

    _, before = sequential_scan(record, params, xs_tm, args.carry, args.lengths, reverse)
    out = jax.vmap(gate_fn, in_axes=(None, 0, 0))(params, before, xs_tm)
    if args.lengths is not None:
        valid = valid_steps(args.lengths, xs_tm.shape[0])
        out = where_valid(valid, out, jax.tree.map(jnp.zeros_like, out))
    return from_time_major(out, time_major, len(args.batch_shape))


def _gate_fn(cell: Cell) -> Any:
    """``cell.spec.gates``, or a ValueError saying why ``cell`` has none."""
    if not isinstance(cell, Cell):
        raise TypeError(f"cell: expected a jaxrnn.Cell, got {type(cell).__name__}")
    want = (
        "cell: expected a cell with gates (jaxrnn.lstm, gru, mingru, minlstm, lru, or a "
        "cell whose spec has gates=)"
    )
    spec = cell.spec
    if spec is None:
        raise ValueError(
            f"{want}, got a cell without a spec (a user's cell, or one wrapped by "
            f"jaxrnn.clip_carry_grad)"
        )
    if described_spec(cell) is None:
        raise ValueError(
            f"{want}, got a cell whose step was replaced or wrapped: its "
            f"{type(spec).__name__} describes another step than the one that runs"
        )
    if spec.gates is None:
        raise ValueError(f"{want}, got a cell whose {type(spec).__name__} has no gates")
    return spec.gates

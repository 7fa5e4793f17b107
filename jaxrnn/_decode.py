"""Autoregressive decoding: a cell fed its own samples, or teacher-forced, in one `lax.scan`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxrnn._cell import Carry, Cell, Params, PRNGKey, as_int
from jaxrnn._checks import check_params


class Decoded(NamedTuple):
    """What :func:`decode` returns besides the final carry, stacked over the steps.

    Attributes:
      outputs: ``readout(y_t)`` of every step, leaves ``[N, ...]`` (the cell's
        outputs ``y_t`` ``[N, *batch, O]`` without a ``readout``).
      samples: ``sample(key_t, outputs_t)`` of every step, leaves ``[N, ...]``;
        None without a ``sample``.

    Example:
      >>> import jax, jax.numpy as jnp, jaxrnn
      >>> cell = jaxrnn.gru(4)
      >>> params = cell.init(jax.random.key(0), 4)
      >>> _, out = jaxrnn.decode(cell, params, cell.initial_carry(), jnp.ones(4), 3,
      ...                        sample=lambda key, y: y)
      >>> out.outputs.shape, out.samples.shape
      ((3, 4), (3, 4))
    """

    outputs: Any
    samples: Any


def _identity(x: Any) -> Any:
    return x


def _describe(tree: Any) -> str:
    return str(jax.tree.map(lambda a: f"{jnp.dtype(a.dtype).name}{list(a.shape)}", tree))


def _same_avals(a: Any, b: Any) -> bool:
    if jax.tree.structure(a) != jax.tree.structure(b):  # type: ignore[operator]
        return False
    return all(
        tuple(x.shape) == tuple(y.shape) and jnp.dtype(x.dtype) == jnp.dtype(y.dtype)
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def decode(
    cell: Cell,
    params: Params,
    carry: Carry,
    first_input: Any = None,
    num_steps: int | None = None,
    *,
    readout: Callable[[Any], Any] | None = None,
    sample: Callable[[PRNGKey | None, Any], Any] | None = None,
    embed: Callable[[Any], Any] | None = None,
    key: PRNGKey | None = None,
    inputs: Any = None,
    unroll: int | bool = 1,
) -> tuple[Carry, Decoded]:
    r"""Run ``cell`` for ``num_steps`` steps, each fed what the previous one sampled.

    Exactly this loop, compiled as one :func:`jax.lax.scan`::

      x = first_input
      for t in range(num_steps):
          carry, y = cell.step(params, carry, x)
          outputs[t] = readout(y)                              # e.g. logits
          samples[t] = sample(fold_in(key, t), outputs[t])     # e.g. a token id
          x = embed(samples[t])                                # the next input

    With ``inputs`` (teacher forcing) step ``t`` reads ``inputs[t]`` instead
    of ``embed(samples[t - 1])``, and the carry and the outputs are those of
    :func:`jaxrnn.scan` over ``inputs`` (``samples`` are still drawn when
    ``sample`` is given: what the model would have fed itself).

    Sampling and embedding are two functions so that the samples (token ids)
    are returned as drawn while the cell reads their embedding; for a
    float-valued sequence ``sample`` returns the next input itself and
    ``embed`` is the identity. Step ``t``'s key is ``fold_in(key, t)``: a
    step's draw does not depend on the number of steps, and the same key
    gives the same sequence. Everything is differentiable where ``sample``
    is (teacher forcing, or a deterministic float ``sample``), under
    :func:`jax.jit` and :func:`jax.vmap` too.

    Args:
      cell: the :class:`Cell` to run (only its ``step`` is used).
      params: the cell's params.
      carry: the carry to start from (e.g. ``cell.initial_carry(batch_shape)``,
        or the final carry of a :func:`jaxrnn.scan` over a prompt).
      first_input: the first step's input ``[*batch, I]`` (any pytree the step
        reads); None with ``inputs``.
      num_steps: N ≥ 0, the number of steps; with ``inputs``, None or their
        length.
      readout: ``readout(y_t) -> outputs_t``, e.g. the logits of a linear
        layer on the cell's output; the identity when None.
      sample: ``sample(key_t, outputs_t) -> sample_t``, e.g.
        ``jax.random.categorical``; ``key_t`` is None when ``key`` is.
        Required without ``inputs``.
      embed: ``embed(sample_t) -> x_{t+1}``, which must have the structure,
        shapes and dtypes of ``first_input`` (e.g. a one-hot or an embedding
        lookup of a token id); the identity when None.
      key: the PRNG key step keys are folded from; None for a deterministic
        ``sample``.
      inputs: teacher forcing: the inputs ``[N, *batch, I]`` of every step.
      unroll: passed to :func:`jax.lax.scan`.

    Returns:
      ``(final_carry, Decoded(outputs, samples))``, ``outputs`` and
      ``samples`` with a leading step axis of length N.

    Raises:
      ValueError or TypeError: naming the argument, at trace time, for a
      negative ``num_steps``, a missing ``sample`` or ``first_input``,
      ``first_input`` given with ``inputs``, or an ``embed(sample(...))`` whose
      structure, shape or dtype differs from ``first_input``'s.

    Example:
      Greedy decoding of token ids through a readout layer, the first input
      a start token (id 0):

      >>> import jax, jax.numpy as jnp, jaxrnn
      >>> V = 5
      >>> cell = jaxrnn.lstm(8)
      >>> params = cell.init(jax.random.key(0), input_size=V)
      >>> w_out = jax.random.normal(jax.random.key(1), (V, 8))
      >>> carry, out = jaxrnn.decode(
      ...     cell, params, cell.initial_carry((2,)), jax.nn.one_hot(jnp.zeros(2, int), V), 6,
      ...     readout=lambda h: h @ w_out.T,                       # logits [2, V]
      ...     sample=lambda key, logits: jnp.argmax(logits, -1),   # token ids [2]
      ...     embed=lambda ids: jax.nn.one_hot(ids, V))
      >>> out.outputs.shape, out.samples.shape
      ((6, 2, 5), (6, 2))

    References:
      Graves, "Generating sequences with recurrent neural networks", 2013.
      Williams & Zipser, "A learning algorithm for continually running fully
      recurrent neural networks", Neural Computation 1989 (teacher forcing).
    """
    check_params(cell, params)
    readout = _identity if readout is None else readout
    embed = _identity if embed is None else embed
    for name, fn in (("readout", readout), ("sample", sample), ("embed", embed)):
        if fn is not None and not callable(fn):
            raise TypeError(f"{name}: expected a callable or None, got {type(fn).__name__}")
    forced = inputs is not None
    if forced:
        if first_input is not None:
            raise ValueError(
                "first_input: expected None with inputs (teacher forcing feeds inputs[0] "
                f"first), got {_describe(first_input)}"
            )
        leaves = jax.tree.leaves(inputs)
        if not leaves or any(jnp.ndim(a) < 1 for a in leaves):
            raise ValueError(
                f"inputs: expected arrays [N, *batch, I] with a leading step axis, got "
                f"{_describe(inputs)}"
            )
        length = int(jnp.shape(leaves[0])[0])
        if num_steps is not None and as_int(num_steps) != length:
            raise ValueError(
                f"num_steps: expected None or the length of inputs {length}, got {num_steps!r}"
            )
        num_steps = length
        x0 = jax.tree.map(lambda a: jax.ShapeDtypeStruct(jnp.shape(a)[1:], a.dtype), inputs)
    else:
        if first_input is None:
            raise ValueError("first_input: expected the first step's input, got None")
        if sample is None:
            raise ValueError(
                "sample: expected a callable sample(key_t, outputs_t) (or inputs= for teacher "
                "forcing), got None"
            )
        steps = as_int(num_steps)
        if steps is None or steps < 0:
            raise ValueError(f"num_steps: expected a non-negative integer, got {num_steps!r}")
        num_steps = steps
        first_input = jax.tree.map(jnp.asarray, first_input)
        x0 = first_input
    carry = jax.tree.map(jnp.asarray, carry)

    def one_step(carry: Carry, t: Any, x: Any) -> tuple[Carry, Any, Any]:
        new_carry, y = cell.step(params, carry, x)
        out = readout(y)
        key_t = None if key is None else jax.random.fold_in(key, t)
        drawn = None if sample is None else sample(key_t, out)
        return new_carry, out, drawn

    t0 = jnp.zeros((), jnp.int32)
    new_carry, _, drawn = jax.eval_shape(one_step, carry, t0, x0)
    if not _same_avals(new_carry, carry):
        raise TypeError(
            f"carry: expected a carry that cell.step returns unchanged in structure, shape and "
            f"dtype, got {_describe(carry)} and cell.step returned {_describe(new_carry)}"
        )
    if not forced:
        x1 = jax.eval_shape(embed, drawn)
        if not _same_avals(x1, x0):
            raise TypeError(
                f"sample: expected embed(sample(key, outputs)) like first_input "
                f"{_describe(x0)}, got {_describe(x1)}"
            )

    steps_t = jnp.arange(num_steps, dtype=jnp.int32)
    if forced:

        def forced_body(carry: Carry, t_x: Any) -> tuple[Carry, Any]:
            carry, out, drawn = one_step(carry, *t_x)
            return carry, (out, drawn)

        carry, (outs, samples) = jax.lax.scan(forced_body, carry, (steps_t, inputs), unroll=unroll)
        return carry, Decoded(outs, samples)

    def free_body(state: tuple[Carry, Any], t: Any) -> tuple[tuple[Carry, Any], Any]:
        carry, x = state
        carry, out, drawn = one_step(carry, t, x)
        return (carry, embed(drawn)), (out, drawn)

    (carry, _), (outs, samples) = jax.lax.scan(
        free_body, (carry, first_input), steps_t, unroll=unroll
    )
    return carry, Decoded(outs, samples)

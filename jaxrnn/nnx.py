"""Flax NNX modules over jaxrnn's cells and stacks, shaped like Flax's own recurrent modules.

Two kinds of modules, both holding the functional params as
:class:`flax.nnx.Param` variables (so they work with ``nnx.Optimizer``,
``nnx.jit``, ``nnx.grad``, ``nnx.split``/``nnx.merge`` and inside any larger
NNX model) and computing exactly what the functional API computes with the
same params:

* **Sequence modules** :class:`LSTM`, :class:`GRU`, :class:`Elman` and
  :class:`LayerNormLSTM`: a :func:`jaxrnn.stack` of one cell (layers,
  directions, dropout), called like ``nnx.RNN``: ``module(inputs, *,
  initial_carry=, seq_lengths=, return_carry=, time_major=, reverse=,
  keep_order=)`` returns the outputs, or ``(carry, outputs)`` with
  ``return_carry=True``. Inputs are batch-major ``[*batch, T, in_features]``
  by default, as ``nnx.RNN``'s.
* **Cell modules** :class:`LSTMCell`, :class:`GRUCell`, :class:`SimpleCell`
  (:class:`ElmanCell`), :class:`LayerNormLSTMCell`, :class:`MinGRUCell`,
  :class:`MinLSTMCell` and :class:`LRUCell`, written to Flax's
  ``nnx.RNNCellBase`` protocol: ``cell(carry, inputs) -> (new_carry,
  output)``, ``cell.initialize_carry(input_shape)``, ``num_feature_axes``, so
  ``nnx.RNN(cell)``, ``nnx.Bidirectional`` and hand-written decoding loops run
  them.

**Carries in Flax's convention.** An LSTM's carry is the tuple ``(c, h)``, as
Flax's ``LSTMCell``'s, everywhere in this module (jaxrnn's functional cells
carry ``LSTMCarry(h, c)``; ``to_params`` and the functional API keep that).
A one-layer unidirectional module's carry is exactly ``nnx.RNN``'s over the
Flax cell (``(c, h)`` of ``[*batch, H]``), a one-layer bidirectional module's
the pair ``(forward, backward)`` of ``nnx.Bidirectional``; a stacked module's
has leading axes ``[num_layers, num_directions]``.

**Params** are the functional NamedTuples with every array wrapped in an
``nnx.Param`` (a field that is None, as ``b_ih`` with ``use_bias=False``, is
no state at all): ``module.params.first.forward.w_ih`` is the ``nnx.Param`` of
``StackParams.first.forward.w_ih``. ``to_params()`` returns the functional
params and ``from_params`` builds a module from them.

**dtype** is the computation dtype, as in Flax's layers: params and inputs are
cast to it for the call (``dtype=jnp.bfloat16`` over float32 ``param_dtype``
params gives bfloat16 matmuls); carries stay in at least float32 and the
outputs come back in the carry's dtype, as Flax's LSTM and GRU cells return
their float32 carry.

This module needs flax (``pip install 'jaxrnn[nnx]'``) and is imported
explicitly, ``import jaxrnn.nnx``; ``import jaxrnn`` never imports flax.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Self, Unpack

import jax
import jax.numpy as jnp

try:
    from flax import nnx
    from flax.nnx.nn.recurrent import RNNCellBase
except ImportError as e:  # pragma: no cover - exercised only without flax
    raise ImportError("jaxrnn.nnx needs flax: pip install 'jaxrnn[nnx]'") from e

from jaxrnn._cell import Array, Carry, Cell, PRNGKey, Shape, as_float, cast, check_positive_int
from jaxrnn._checks import (
    ScanKwargs,
    ScanOptions,
    check_lengths,
    check_like,
    check_resets,
    default_dtype,
    from_time_major,
    scan_options,
    to_time_major,
)
from jaxrnn._dropout import RecurrentDropoutCarry
from jaxrnn._dropout import recurrent_dropout as _recurrent_dropout
from jaxrnn._elman import elman
from jaxrnn._flax_conventions import flip, flip_resets, from_flax, to_flax
from jaxrnn._gru import gru
from jaxrnn._layernorm_lstm import layernorm_lstm
from jaxrnn._linear import lru, mingru, minlstm
from jaxrnn._lstm import lstm
from jaxrnn._stack import Merge, Stack, StackParams, concat, stack

__all__ = [
    "GRU",
    "LSTM",
    "Elman",
    "ElmanCell",
    "GRUCell",
    "LRUCell",
    "LSTMCell",
    "LayerNormLSTM",
    "LayerNormLSTMCell",
    "MinGRUCell",
    "MinLSTMCell",
    "SimpleCell",
]

_RngsLike = nnx.Rngs | nnx.RngStream | PRNGKey


def _is_variable(x: Any) -> bool:
    return isinstance(x, nnx.Variable)


def _dropout_stream(rngs: nnx.Rngs) -> nnx.RngStream | None:
    """A fork of the ``'dropout'`` (or default) stream of ``rngs``; None when it has neither."""
    try:
        return rngs["dropout"].fork()
    except KeyError:
        return None


def _values(params: Any) -> Any:
    """The arrays of a tree of ``nnx.Param``."""
    return jax.tree.map(lambda v: v.get_value(), params, is_leaf=_is_variable)


def _check_dtype(dtype: Any, name: str) -> Any:
    """``dtype`` as a floating ``jnp.dtype`` (None stays None), or a TypeError naming ``name``."""
    if dtype is None:
        return None
    try:
        dt = jnp.dtype(dtype)
    except TypeError:
        raise TypeError(f"{name}: expected a floating dtype, got {dtype!r}") from None
    if not jnp.issubdtype(dt, jnp.floating):
        raise TypeError(f"{name}: expected a floating dtype, got {dt}")
    return dt


def _hashable_options(cell_options: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    options = tuple(sorted(cell_options.items()))
    try:
        hash(options)
    except TypeError:
        raise TypeError(
            f"cell_options: expected hashable values (they are static module "
            f"attributes), got {cell_options!r}"
        ) from None
    return options


def _renamed(error: Exception, old: str, new: str) -> Exception:
    return type(error)(str(error).replace(f"{old}:", f"{new}:", 1))


class _RNN(nnx.Module):
    """What the sequence modules share: a stack of one cell, called like ``nnx.RNN``.

    Attributes:
      params: the functional :class:`jaxrnn.StackParams` with ``nnx.Param`` leaves.
      rngs: the ``nnx.RngStream`` dropout masks are drawn from, or None.
      in_features, hidden_features, num_layers, bidirectional, merge, dropout,
        recurrent_dropout, dtype, param_dtype, time_major, return_carry, reverse,
        keep_order: as given to the constructor (dtypes as ``jnp.dtype``).
      out_features: the size of the outputs' last axis.
      deterministic: False in training mode, True in evaluation mode.
      cell_options: the options of the cell's factory, as a dict.
    """

    _factory: ClassVar[Callable[..., Cell]]
    _num_gates: ClassVar[int]

    def __init__(
        self,
        in_features: int,
        hidden_features: int,
        *,
        num_layers: int = 1,
        bidirectional: bool = False,
        merge: Merge = concat,
        dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        time_major: bool = False,
        return_carry: bool = False,
        reverse: bool = False,
        keep_order: bool = False,
        deterministic: bool = False,
        rngs: nnx.Rngs,
        **cell_options: Any,
    ) -> None:
        check_positive_int(in_features, "in_features")
        check_positive_int(hidden_features, "hidden_features")
        if not isinstance(rngs, nnx.Rngs):
            raise TypeError(f"rngs: expected an nnx.Rngs, got {type(rngs).__name__}")
        self.in_features = in_features
        self.hidden_features = hidden_features
        self.num_layers = num_layers
        self.bidirectional = bool(bidirectional)
        self.merge = merge
        self.dropout = float(dropout)
        rate = as_float(recurrent_dropout)
        if rate is None or not 0.0 <= rate < 1.0:
            raise ValueError(
                f"recurrent_dropout: expected a rate in [0, 1), got {recurrent_dropout!r}"
            )
        self.recurrent_dropout = rate
        self.dtype = _check_dtype(dtype, "dtype")
        self.param_dtype = _check_dtype(param_dtype, "param_dtype")
        self.time_major = bool(time_major)
        self.return_carry = bool(return_carry)
        if reverse and self.bidirectional:
            raise ValueError(
                "reverse: a bidirectional module already runs both directions; "
                "expected reverse=False with bidirectional=True"
            )
        self.reverse = bool(reverse)
        self.keep_order = bool(keep_order)
        self.deterministic = bool(deterministic)
        self._cell_options = _hashable_options(cell_options)
        rnn = self.stack  # builds and checks the cell and the stack: raises on bad options
        params = rnn.init(rngs.params(), in_features, self.param_dtype)
        merge_fn = merge if self.bidirectional else None
        self.out_features = _output_size(self.cell, merge_fn, params, in_features, self.param_dtype)
        self.params = nnx.data(jax.tree.map(nnx.Param, params))
        self.rngs = nnx.data(_dropout_stream(rngs) if self._uses_dropout else None)

    @property
    def cell_options(self) -> dict[str, Any]:
        """The options passed to the cell's factory (:func:`jaxrnn.lstm`, ...).

        Example:
          >>> from flax import nnx
          >>> import jaxrnn.nnx
          >>> jaxrnn.nnx.LSTM(3, 8, forget_bias=1.0, rngs=nnx.Rngs(0)).cell_options
          {'forget_bias': 1.0}
        """
        return dict(self._cell_options)

    @property
    def cell(self) -> Cell:
        """The functional :class:`jaxrnn.Cell` of every layer and direction.

        Example:
          >>> from flax import nnx
          >>> import jaxrnn.nnx
          >>> jaxrnn.nnx.GRU(3, 8, rngs=nnx.Rngs(0)).cell.spec
          GRUSpec()
        """
        cell = type(self)._factory(self.hidden_features, **self.cell_options)
        if self.recurrent_dropout > 0.0:
            return _recurrent_dropout(cell, self.recurrent_dropout)
        return cell

    @property
    def stack(self) -> Stack:
        """The functional :class:`jaxrnn.Stack` this module runs.

        Its carries are jaxrnn's (``LSTMCarry(h, c)`` with leading axes
        ``[num_layers, num_directions]``); the module's are Flax's.

        Example:
          >>> import jax.numpy as jnp
          >>> from flax import nnx
          >>> import jaxrnn.nnx
          >>> rnn = jaxrnn.nnx.GRU(3, 8, num_layers=2, bidirectional=True, rngs=nnx.Rngs(0))
          >>> x = jnp.ones((4, 5, 3))
          >>> carry, ys = rnn.stack.apply(rnn.to_params(), x, time_major=False)
          >>> bool((ys == rnn(x)).all())
          True
        """
        return stack(
            self.cell,
            num_layers=self.num_layers,
            bidirectional=self.bidirectional,
            merge=self.merge,
            dropout=self.dropout,
        )

    @property
    def _uses_dropout(self) -> bool:
        return (self.dropout > 0.0 and self.num_layers > 1) or self.recurrent_dropout > 0.0

    def to_params(self) -> StackParams:
        """The functional params: :class:`jaxrnn.StackParams` of the ``nnx.Param`` values.

        The result works with :attr:`stack` and everything in jaxrnn that takes
        stack params (:func:`jaxrnn.interop.to_torch_state_dict`, checkpoints).
        Gradients from ``nnx.grad`` come back in the same layout through
        ``nnx.merge``: ``nnx.merge(graphdef, grads, rest).to_params()`` with
        ``graphdef, _, rest = nnx.split(module, nnx.Param, ...)``.

        Example:
          >>> from flax import nnx
          >>> import jaxrnn.nnx
          >>> rnn = jaxrnn.nnx.LSTM(3, 8, num_layers=2, rngs=nnx.Rngs(0))
          >>> params = rnn.to_params()
          >>> type(params).__name__, params.rest.forward.w_ih.shape
          ('StackParams', (1, 32, 8))
        """
        return _values(self.params)

    @classmethod
    def from_params(
        cls, params: StackParams, *, rngs: nnx.Rngs | None = None, **kwargs: Any
    ) -> Self:
        """Build a module whose params are ``params`` (jax arrays are held as they are, not copied).

        ``in_features``, ``hidden_features``, ``num_layers``, ``bidirectional``,
        ``param_dtype`` and the options that shape the params (``use_bias``;
        an LSTM's ``proj_size``; an Elman's ``output_size``) are read from
        ``params``. Options that the params do not show (an Elman's
        ``activation``, ``output_activation``) must be passed again; options
        that only initialise (``forget_bias``, ``chrono``, ``recurrent_init``)
        change nothing.

        Args:
          params: :class:`jaxrnn.StackParams` of this module's cell, e.g. from
            ``jaxrnn.stack(jaxrnn.lstm(H), ...).init`` or
            :func:`jaxrnn.interop.from_torch`.
          rngs: where dropout masks come from in training mode (its
            ``'dropout'`` or default stream); without it, a call in training
            mode with dropout needs ``rngs=``.
          **kwargs: the constructor's other keywords (``merge``, ``dropout``,
            ``recurrent_dropout``, ``dtype``, ``time_major``, ``return_carry``,
            ``reverse``, ``keep_order``, ``deterministic``) and cell options.

        Returns:
          The module; ``module.to_params()`` returns ``params``.

        Raises:
          TypeError, ValueError: naming ``params`` when they do not have the
            structure and shapes of the cell's stack params.

        Example:
          >>> import jax, jax.numpy as jnp, jaxrnn
          >>> import jaxrnn.nnx
          >>> rnn = jaxrnn.stack(jaxrnn.gru(8), num_layers=2, bidirectional=True)
          >>> params = rnn.init(jax.random.key(0), input_size=3)
          >>> module = jaxrnn.nnx.GRU.from_params(params)
          >>> module.in_features, module.hidden_features, module.num_layers, module.out_features
          (3, 8, 2, 16)
          >>> x = jnp.ones((4, 5, 3))  # [B, T, I]
          >>> bool((module(x) == rnn.apply(params, x, time_major=False)[1]).all())
          True
        """
        if not isinstance(params, StackParams):
            raise TypeError(
                f"params: expected jaxrnn.StackParams (from jaxrnn.stack(...).init), "
                f"got {type(params).__name__}"
            )
        first = params.first.forward
        in_features, hidden_features = cls._sizes(first)
        num_layers = 1
        if params.rest is not None:
            num_layers += int(jax.tree.leaves(params.rest)[0].shape[0])
        options = {**cls._structure_options(first), **kwargs}
        if rngs is not None and not isinstance(rngs, nnx.Rngs):
            raise TypeError(f"rngs: expected an nnx.Rngs or None, got {type(rngs).__name__}")

        def build() -> Any:
            return cls(
                in_features,
                hidden_features,
                num_layers=num_layers,
                bidirectional=params.first.backward is not None,
                param_dtype=jax.tree.leaves(first)[0].dtype,
                rngs=nnx.Rngs(0),
                **options,
            )

        module: Self = nnx.eval_shape(build)
        check_like(params, module.to_params(), "params")
        module.params = nnx.data(jax.tree.map(lambda a: nnx.Param(jnp.asarray(a)), params))
        stream = None if rngs is None or not module._uses_dropout else _dropout_stream(rngs)
        module.rngs = nnx.data(stream)
        return module

    @classmethod
    def _sizes(cls, cell_params: Any) -> tuple[int, int]:
        """``(in_features, hidden_features)`` read from one cell's params."""
        w_ih: Any = getattr(cell_params, "w_ih", None)
        if not hasattr(w_ih, "shape") or len(w_ih.shape) != 2:
            raise TypeError(
                f"params: expected the params of a {cls.__name__} cell with a matrix "
                f"w_ih, got {type(cell_params).__name__}"
            )
        return int(w_ih.shape[1]), int(w_ih.shape[0]) // cls._num_gates

    @staticmethod
    def _structure_options(cell_params: Any) -> dict[str, Any]:
        """The cell options that ``cell_params`` show by their structure (defaults left out)."""
        return {} if getattr(cell_params, "b_ih", None) is not None else {"use_bias": False}

    def initial_carry(self, batch_shape: Shape = (), dtype: Any = None) -> Carry:
        """Zeros, in the structure of the module's carry (see the class docstring).

        Args:
          batch_shape: the batch axes ``*batch`` of the inputs.
          dtype: the params' dtype when None (the carry is kept in at least float32).

        Example:
          >>> from flax import nnx
          >>> import jaxrnn.nnx
          >>> c, h = jaxrnn.nnx.LSTM(3, 8, rngs=nnx.Rngs(0)).initial_carry((4,))
          >>> c.shape  # one layer, one direction: nnx.RNN's (c, h)
          (4, 8)
          >>> rnn = jaxrnn.nnx.GRU(3, 8, num_layers=2, bidirectional=True, rngs=nnx.Rngs(0))
          >>> rnn.initial_carry((4,)).shape  # [num_layers, num_directions, *batch, H]
          (2, 2, 4, 8)
        """
        dtype = self.param_dtype if dtype is None else dtype
        return self._module_carry(self.stack.initial_carry(batch_shape, dtype))

    def _module_carry(self, carry: Carry) -> Any:
        """A stack's carry in the module's structure (Flax's convention, no dropout noise)."""
        if isinstance(carry, RecurrentDropoutCarry):
            carry = carry.carry
        if self.num_layers > 1:
            return to_flax(carry)
        parts = [
            to_flax(jax.tree.map(lambda a, d=d: a[0, d], carry))
            for d in range(2 if self.bidirectional else 1)
        ]
        return tuple(parts) if self.bidirectional else parts[0]

    def _stack_carry(self, carry: Any, batch_shape: Shape, dtype: Any) -> Carry:
        """The module's ``initial_carry`` as the stack's carry, checked."""
        full = self.stack.initial_carry(batch_shape, dtype)
        plain = full.carry if isinstance(full, RecurrentDropoutCarry) else full
        expected = jax.eval_shape(lambda: self._module_carry(plain))
        template = jax.eval_shape(lambda: jax.tree.map(lambda a: a[0, 0], plain))
        if self.num_layers == 1 and self.bidirectional:
            if not isinstance(carry, tuple | list) or len(carry) != 2:
                raise TypeError(
                    "initial_carry: expected the pair (forward, backward) of a bidirectional "
                    f"layer, as nnx.Bidirectional's, got {type(carry).__name__}"
                )
            parts = [
                from_flax(part, template, f"initial_carry[{d}]") for d, part in enumerate(carry)
            ]
            check_like(tuple(to_flax(p) for p in parts), expected, "initial_carry")
        else:
            parts = [from_flax(carry, template, "initial_carry")]
            check_like(to_flax(parts[0]), expected, "initial_carry")
        if self.num_layers == 1:
            inner = jax.tree.map(lambda *ps: jnp.stack(ps)[None], *parts)
        else:
            inner = parts[0]
        inner = jax.tree.map(lambda a, z: jnp.asarray(a, z.dtype), inner, plain)
        if isinstance(full, RecurrentDropoutCarry):
            return full._replace(carry=inner)
        return inner

    def set_view(self, deterministic: bool | None = None) -> None:
        """Used by ``nnx.view(module, deterministic=...)``, as for ``nnx.Dropout``.

        Example:
          >>> from flax import nnx
          >>> import jaxrnn.nnx
          >>> rnn = jaxrnn.nnx.GRU(3, 8, num_layers=2, dropout=0.5, rngs=nnx.Rngs(0))
          >>> nnx.view(rnn, deterministic=True).deterministic, rnn.deterministic
          (True, False)
        """
        if deterministic is not None:
            self.deterministic = bool(deterministic)

    def __call__(
        self,
        inputs: Array,
        *args: Any,
        initial_carry: Any = None,
        seq_lengths: Array | None = None,
        return_carry: bool | None = None,
        time_major: bool | None = None,
        reverse: bool | None = None,
        keep_order: bool | None = None,
        rngs: _RngsLike | None = None,
        deterministic: bool | None = None,
        resets: Array | None = None,
        options: ScanOptions | None = None,
        **kwargs: Unpack[ScanKwargs],
    ) -> Any:
        """Run the stack over ``inputs``, as ``nnx.RNN`` runs its cell.

        ``return_carry``, ``time_major``, ``reverse`` and ``keep_order``
        default to the module's attributes (set at construction, as
        ``nnx.RNN``'s).

        Args:
          inputs: ``[*batch, T, in_features]`` (batch-major, the default, as
            ``nnx.RNN``), or ``[T, *batch, in_features]`` with ``time_major=True``.
          *args: none; the initial carry and the lengths are keywords.
          initial_carry: the carry to start from, structured as
            :meth:`initial_carry` returns it (an LSTM's is Flax's ``(c, h)``);
            zeros when None.
          seq_lengths: integer array of shape ``batch`` with values in [0, T]:
            the number of valid steps of each right-padded sequence. Outputs
            past a length are zero and the final carry is taken at the last
            valid step; a backward direction starts at each sequence's last
            valid step (Flax's ``flip_sequences``: padding stays at the end).
          return_carry: return ``(carry, outputs)`` instead of ``outputs``.
          time_major: whether the time axis of ``inputs`` (and of the outputs) comes first.
          reverse: run backward in time (every layer; not with
            ``bidirectional``). Without ``keep_order`` the outputs come in the
            order they were computed, each sequence reversed within its
            length, as ``nnx.RNN``'s.
          keep_order: with ``reverse``, return the outputs in the inputs' time order.
          rngs: overrides where dropout masks come from: an ``nnx.Rngs`` (its
            ``'dropout'`` or default stream), an ``nnx.RngStream`` or a PRNG key.
          deterministic: overrides the module's mode for this call: True turns
            dropout off, False on.
          resets: bool array ``[*batch, T]`` (``[T, *batch]`` with
            ``time_major=True``), True where a step starts a new segment
            (an episode, a document): every layer and direction restarts there
            from its initial carry, as :func:`jaxrnn.scan`'s ``resets``.
          options: a :class:`jaxrnn.ScanOptions`, passed unchanged to
            :func:`jaxrnn.scan` through the stack.
          **kwargs: its fields as keywords (``unroll``, ``truncate``,
            ``checkpoint``, ``backward``, ``method``, ``method_options``,
            ``sequence_axis``).

        Returns:
          ``outputs`` ``[*batch, T, out_features]`` (``[T, *batch,
          out_features]`` with ``time_major``), or ``(carry, outputs)`` with
          ``return_carry``: the carry at each sequence's last valid step.

        Raises:
          TypeError: naming the method for an unknown keyword, or the argument
            for a wrong type (a jaxrnn ``LSTMCarry`` where ``(c, h)`` is expected).
          ValueError: naming ``inputs``, ``initial_carry``, ``seq_lengths``,
            ``reverse`` or ``rngs``, when a shape or value is wrong or dropout
            is on without a random stream.

        Example:
          >>> import jax.numpy as jnp
          >>> from flax import nnx
          >>> import jaxrnn.nnx
          >>> rnn = jaxrnn.nnx.LSTM(3, 8, rngs=nnx.Rngs(0))
          >>> x = jnp.ones((4, 5, 3))  # [B, T, I]
          >>> (c, h), ys = rnn(x, seq_lengths=jnp.array([5, 2, 3, 1]), return_carry=True)
          >>> ys.shape, c.shape
          ((4, 5, 8), (4, 8))
          >>> ys_back = rnn(x, initial_carry=(c, h), reverse=True, keep_order=True)
          >>> rnn(jnp.ones((5, 4, 3)), time_major=True).shape  # [T, B, I]
          (5, 4, 8)
        """
        name = f"{type(self).__name__}.__call__()"
        if args:
            raise TypeError(
                f"{name} takes 1 positional argument (inputs) but {1 + len(args)} were given; "
                "the initial carry and the lengths are the keywords initial_carry= and "
                "seq_lengths=, as nnx.RNN's"
            )
        for key in kwargs:
            if key not in ScanOptions._fields:
                hint = {"lengths": "seq_lengths", "carry": "initial_carry"}.get(key)
                also = f" (did you mean {hint}=?)" if hint else ""
                raise TypeError(f"{name} got an unexpected keyword argument {key!r}{also}")
        return_carry = self.return_carry if return_carry is None else bool(return_carry)
        time_major = self.time_major if time_major is None else bool(time_major)
        reverse = self.reverse if reverse is None else bool(reverse)
        keep_order = self.keep_order if keep_order is None else bool(keep_order)
        if reverse and self.bidirectional:
            raise ValueError(
                "reverse: a bidirectional module already runs both directions; "
                "expected reverse=False or None"
            )
        opts = scan_options(options, dict(kwargs))
        if reverse and opts.sequence_axis is not None:
            raise ValueError(
                "reverse: expected reverse=False with sequence_axis (a module reverses "
                "by flipping the whole time axis, which a device does not hold)"
            )
        if not hasattr(inputs, "shape") or not hasattr(inputs, "dtype"):
            inputs = jnp.asarray(inputs)
        layout = "[T, *batch, in_features]" if time_major else "[*batch, T, in_features]"
        if inputs.ndim < 2 or inputs.shape[-1] != self.in_features:
            raise ValueError(
                f"inputs: expected shape {layout} with in_features={self.in_features}, "
                f"got shape {tuple(inputs.shape)}"
            )
        if not jnp.issubdtype(inputs.dtype, jnp.floating):
            raise TypeError(f"inputs: expected a floating dtype, got {inputs.dtype}")
        xs, batch_shape = to_time_major(inputs, time_major)
        steps = xs.shape[0]
        try:
            lengths = check_lengths(seq_lengths, batch_shape, steps)
        except (TypeError, ValueError) as e:
            raise _renamed(e, "lengths", "seq_lengths") from None
        resets = check_resets(resets, steps, batch_shape, time_major)
        params = cast(self.to_params(), self.dtype)
        xs = cast(xs, self.dtype)
        dtype = default_dtype(params, xs)
        carry = None
        if initial_carry is not None:
            carry = self._stack_carry(initial_carry, batch_shape, dtype)
        if reverse:
            xs = flip(xs, lengths)
            resets = None if resets is None else flip_resets(resets, lengths)
        final, ys = self.stack.apply(
            params,
            xs,
            carry=carry,
            lengths=lengths,
            key=self._dropout_key(deterministic, rngs),
            time_major=True,
            options=opts,
            resets=resets,
        )
        if reverse and keep_order:
            ys = flip(ys, lengths)
        if self.dtype is not None:
            ys = ys.astype(jnp.result_type(*jax.tree.leaves(final)))
        outputs = from_time_major(ys, time_major, len(batch_shape))
        if return_carry:
            return self._module_carry(final), outputs
        return outputs

    def _rates_on(self) -> str:
        """The dropout rates in use, e.g. ``"dropout=0.5"``, for an error message."""
        on = [f"dropout={self.dropout}"] if self.dropout > 0.0 and self.num_layers > 1 else []
        if self.recurrent_dropout > 0.0:
            on.append(f"recurrent_dropout={self.recurrent_dropout}")
        return " and ".join(on)

    def _dropout_key(self, deterministic: bool | None, rngs: _RngsLike | None) -> PRNGKey | None:
        if not self._uses_dropout:
            return None
        if self.deterministic if deterministic is None else deterministic:
            return None
        stream: nnx.RngStream | None
        if rngs is None:
            stream = self.rngs
        elif isinstance(rngs, nnx.Rngs):
            stream = _dropout_stream(rngs)
        elif isinstance(rngs, nnx.RngStream):
            stream = rngs
        else:
            return rngs
        if stream is None:
            raise ValueError(
                f"rngs: {self._rates_on()} is on in training mode and needs a random "
                "stream: build the module with an nnx.Rngs that has a 'dropout' or default "
                "stream, pass rngs= to the call, or switch dropout off with module.eval() "
                "or deterministic=True"
            )
        return stream()


def _output_size(
    cell: Cell, merge: Merge | None, params: StackParams, in_features: int, dtype: Any
) -> int:
    """The size of the last axis of a stack's outputs, found by shape evaluation only."""
    x = jax.ShapeDtypeStruct((in_features,), dtype)
    _, y = jax.eval_shape(cell.step, params.first.forward, cell.initial_carry((), dtype), x)
    if merge is not None:
        y = jax.eval_shape(merge, y, y)
    return int(y.shape[-1])


class _TorchRNN(_RNN):
    """The sequence modules PyTorch has (nn.LSTM, nn.GRU, nn.RNN): ``from_torch``."""

    _torch_name: ClassVar[str]

    @classmethod
    def from_torch(cls, module: Any, *, rngs: nnx.Rngs | None = None, **kwargs: Any) -> Self:
        """Build the module from a PyTorch module, with its weights and its options.

        Through :func:`jaxrnn.interop.from_torch`: ``num_layers``,
        ``bidirectional``, ``bias``, ``proj_size`` (LSTM), ``nonlinearity``
        (RNN) and ``dropout`` carry over. ``batch_first`` changes nothing:
        the modules are batch-major by default (``time_major=False``),
        whichever layout the PyTorch module used; pass ``time_major=True``
        for ``[T, B, I]`` inputs. PyTorch's training mode has no counterpart
        in the weights: the module starts in training mode (``deterministic=False``).

        Args:
          module: ``torch.nn.LSTM`` for :class:`LSTM`, ``torch.nn.GRU`` for
            :class:`GRU`, ``torch.nn.RNN`` for :class:`Elman`.
          rngs: where dropout masks come from in training mode.
          **kwargs: other keywords of :meth:`from_params` (``dtype``,
            ``time_major``, ``return_carry``, ``deterministic``, ...).

        Raises:
          TypeError: naming ``module`` when it is not the matching PyTorch module.

        Example:
          >>> import numpy as np, torch, jax.numpy as jnp
          >>> import jaxrnn.nnx
          >>> torch_lstm = torch.nn.LSTM(3, 8, num_layers=2, batch_first=True)
          >>> module = jaxrnn.nnx.LSTM.from_torch(torch_lstm)
          >>> x = np.ones((4, 5, 3), np.float32)
          >>> want, _ = torch_lstm(torch.from_numpy(x))
          >>> bool(np.allclose(module(jnp.asarray(x)), want.detach().numpy(), atol=1e-5))
          True
        """
        from jaxrnn import interop

        torch_cls = getattr(interop._torch().nn, cls._torch_name)
        if type(module) is not torch_cls:
            raise TypeError(
                f"module: expected a torch.nn.{cls._torch_name} for {cls.__name__}.from_torch, "
                f"got {type(module).__name__}"
            )
        params, _ = interop.from_torch(module)
        options: dict[str, Any] = {"dropout": float(module.dropout)}
        if cls._torch_name == "RNN":
            options["activation"] = module.nonlinearity
        return cls.from_params(params, rngs=rngs, **{**options, **kwargs})


class LSTM(_TorchRNN):
    """A (multi-layer, bidirectional) LSTM as a flax NNX module, over :func:`jaxrnn.lstm`.

    PyTorch's ``nn.LSTM`` equations and gate order (i, f, g, o), which are
    Flax's ``LSTMCell``'s with ``b = b_ih + b_hh``; the same numbers as
    ``jaxrnn.stack(jaxrnn.lstm(hidden_features, **cell_options), ...)`` with
    :meth:`to_params`. Called like ``nnx.RNN`` (see :meth:`__call__`).

    The carry is Flax's ``(c, h)``: of ``[*batch, H]`` for one layer and one
    direction (exactly ``nnx.RNN(nnx.LSTMCell(...))``'s), the pair
    ``((c, h), (c, h))`` (forward, backward) of ``nnx.Bidirectional`` for one
    bidirectional layer, and ``(c, h)`` of ``[num_layers, num_directions,
    *batch, H]`` for stacked layers (no Flax module stacks layers; one array
    per leaf keeps the stack one scan over depth, and is PyTorch's ``h_n``
    before it flattens the two leading axes).

    Args:
      in_features: the size of the inputs' last axis.
      hidden_features: H, the size of the cell state.
      num_layers: number of stacked layers.
      bidirectional: whether every layer also runs backward in time.
      merge: combines the two directions' outputs (concatenation by default,
        as ``nnx.Bidirectional``'s ``merge_fn``).
      dropout: rate of the dropout on the outputs of every layer but the last,
        in training mode only.
      recurrent_dropout: rate of the variational dropout on the hidden state
        every layer feeds back (:func:`jaxrnn.recurrent_dropout`: one mask per
        sequence, layer and direction), in training mode only. The masks are
        not part of the module's carry.
      dtype: the computation dtype (params and inputs are cast to it for the
        call), or None for the params' and inputs' own.
      param_dtype: dtype of the params.
      time_major, return_carry, reverse, keep_order: the defaults of the
        call's keywords, as ``nnx.RNN``'s constructor takes them.
      deterministic: start in evaluation mode (dropout off) when True.
      rngs: ``nnx.Rngs``; the params are drawn from its ``'params'`` (or
        default) stream and the dropout masks from a fork of its ``'dropout'``
        (or default) stream.
      **cell_options: options of :func:`jaxrnn.lstm`: ``forget_bias``,
        ``chrono``, ``recurrent_init``, ``proj_size``, ``use_bias``, ...

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> from flax import nnx
      >>> import jaxrnn.nnx
      >>> class Model(nnx.Module):
      ...     def __init__(self, rngs):
      ...         self.rnn = jaxrnn.nnx.LSTM(3, 8, forget_bias=1.0, rngs=rngs)
      ...         self.head = nnx.Linear(self.rnn.out_features, 1, rngs=rngs)
      ...     def __call__(self, x):
      ...         ys = self.rnn(x)  # [B, T, 8]
      ...         return self.head(ys[:, -1])[:, 0]
      >>> model = Model(nnx.Rngs(0))
      >>> optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)
      >>> @nnx.jit
      ... def train_step(model, optimizer, x, y):
      ...     loss_fn = lambda model: jnp.mean((model(x) - y) ** 2)
      ...     loss, grads = nnx.value_and_grad(loss_fn)(model)
      ...     optimizer.update(model, grads)  # updates model's nnx.Param in place
      ...     return loss
      >>> x, y = jnp.ones((4, 5, 3)), jnp.zeros(4)
      >>> losses = [train_step(model, optimizer, x, y) for _ in range(3)]
      >>> bool(losses[-1] < losses[0])
      True
    """

    _factory = staticmethod(lstm)
    _num_gates = 4
    _torch_name = "LSTM"

    @staticmethod
    def _structure_options(cell_params: Any) -> dict[str, Any]:
        w_hr = getattr(cell_params, "w_hr", None)
        options = _RNN._structure_options(cell_params)
        if w_hr is not None:
            options["proj_size"] = int(w_hr.shape[0])
        return options


class GRU(_TorchRNN):
    """A (multi-layer, bidirectional) GRU as a flax NNX module, over :func:`jaxrnn.gru`.

    PyTorch's ``nn.GRU`` equations and gate order (r, z, n); Flax's
    ``GRUCell`` is the case ``b_hn = 0`` (its candidate has no recurrent
    bias). Arguments and carries as :class:`LSTM`'s (the carry is the array
    ``h``); ``**cell_options`` are :func:`jaxrnn.gru`'s: ``chrono``,
    ``recurrent_init``, ``use_bias``, ...

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> import jaxrnn.nnx
      >>> rnn = jaxrnn.nnx.GRU(3, 8, num_layers=2, bidirectional=True, rngs=nnx.Rngs(0))
      >>> h, ys = rnn(jnp.ones((4, 5, 3)), return_carry=True)  # [B, T, I]
      >>> ys.shape, h.shape  # h: [num_layers, num_directions, B, H]
      ((4, 5, 16), (2, 2, 4, 8))
    """

    _factory = staticmethod(gru)
    _num_gates = 3
    _torch_name = "GRU"


class Elman(_TorchRNN):
    """A (multi-layer, bidirectional) Elman RNN as a flax NNX module, over :func:`jaxrnn.elman`.

    PyTorch's ``nn.RNN``, optionally with Elman's output layer; Flax's
    ``SimpleCell`` with ``b_i = b_ih + b_hh``. Arguments and carries as
    :class:`LSTM`'s (the carry is the array ``h``); ``**cell_options`` are
    :func:`jaxrnn.elman`'s: ``activation`` (``"tanh"`` by default,
    ``"relu"``, ...), ``output_size``, ``output_activation``,
    ``recurrent_init``, ``bias_init``, ``use_bias``. :meth:`from_params`
    cannot see the activations in the params: pass them again.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> import jaxrnn.nnx
      >>> rnn = jaxrnn.nnx.Elman(3, 8, activation="relu", recurrent_init="identity",
      ...                        rngs=nnx.Rngs(0))
      >>> h, ys = rnn(jnp.ones((4, 5, 3)), return_carry=True)  # [B, T, I]
      >>> ys.shape, h.shape, rnn.out_features
      ((4, 5, 8), (4, 8), 8)
    """

    _factory = staticmethod(elman)
    _num_gates = 1
    _torch_name = "RNN"

    @staticmethod
    def _structure_options(cell_params: Any) -> dict[str, Any]:
        w_hy = getattr(cell_params, "w_hy", None)
        options = _RNN._structure_options(cell_params)
        if w_hy is not None:
            options["output_size"] = int(w_hy.shape[0])
        return options


class LayerNormLSTM(_RNN):
    """A (multi-layer, bidirectional) layer-normalised LSTM, over :func:`jaxrnn.layernorm_lstm`.

    Ba, Kiros & Hinton's LSTM with layer normalisation. Arguments and carries
    as :class:`LSTM`'s (the carry is Flax's ``(c, h)``); ``**cell_options``
    are :func:`jaxrnn.layernorm_lstm`'s: ``forget_bias``, ``recurrent_init``,
    ``epsilon``, ...

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> import jaxrnn.nnx
      >>> rnn = jaxrnn.nnx.LayerNormLSTM(3, 8, num_layers=2, rngs=nnx.Rngs(0))
      >>> (c, h), ys = rnn(jnp.ones((4, 5, 3)), return_carry=True)
      >>> ys.shape, c.shape
      ((4, 5, 8), (2, 1, 4, 8))
    """

    _factory = staticmethod(layernorm_lstm)
    _num_gates = 4

    @staticmethod
    def _structure_options(cell_params: Any) -> dict[str, Any]:
        return {}


class _CellModule(RNNCellBase):
    """What the cell modules share: one jaxrnn cell written to Flax's ``RNNCellBase`` protocol.

    Attributes:
      params: the cell's functional params with ``nnx.Param`` leaves.
      in_features, hidden_features, dtype, param_dtype: as given to the constructor.
      cell_options: the options of the cell's factory, as a dict.
    """

    _factory: ClassVar[Callable[..., Cell]]
    _num_gates: ClassVar[int]

    def __init__(
        self,
        in_features: int,
        hidden_features: int,
        *,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
        **cell_options: Any,
    ) -> None:
        check_positive_int(in_features, "in_features")
        check_positive_int(hidden_features, "hidden_features")
        if not isinstance(rngs, nnx.Rngs):
            raise TypeError(f"rngs: expected an nnx.Rngs, got {type(rngs).__name__}")
        self.in_features = in_features
        self.hidden_features = hidden_features
        self.dtype = _check_dtype(dtype, "dtype")
        self.param_dtype = _check_dtype(param_dtype, "param_dtype")
        self._cell_options = _hashable_options(cell_options)
        params = self.cell.init(rngs.params(), in_features, self.param_dtype)
        self.params = nnx.data(jax.tree.map(nnx.Param, params))

    @property
    def cell_options(self) -> dict[str, Any]:
        """The options passed to the cell's factory.

        Example:
          >>> from flax import nnx
          >>> import jaxrnn.nnx
          >>> jaxrnn.nnx.GRUCell(3, 8, use_bias=False, rngs=nnx.Rngs(0)).cell_options
          {'use_bias': False}
        """
        return dict(self._cell_options)

    @property
    def cell(self) -> Cell:
        """The functional :class:`jaxrnn.Cell` this module steps.

        Example:
          >>> from flax import nnx
          >>> import jaxrnn.nnx
          >>> jaxrnn.nnx.LSTMCell(3, 8, rngs=nnx.Rngs(0)).cell.spec
          LSTMSpec()
        """
        return type(self)._factory(self.hidden_features, **self.cell_options)

    @property
    def num_feature_axes(self) -> int:
        """1: a step's input is ``[*batch, in_features]`` (what ``nnx.RNN`` reads)."""
        return 1

    def to_params(self) -> Any:
        """The functional params (e.g. :class:`jaxrnn.LSTMParams`) of the ``nnx.Param`` values.

        Example:
          >>> import jax.numpy as jnp, jaxrnn
          >>> from flax import nnx
          >>> import jaxrnn.nnx
          >>> cell = jaxrnn.nnx.GRUCell(3, 8, rngs=nnx.Rngs(0))
          >>> _, ys = jaxrnn.scan(cell.cell, cell.to_params(), jnp.ones((5, 3)))
          >>> bool(jnp.allclose(ys, nnx.RNN(cell)(jnp.ones((5, 3))), atol=1e-6))
          True
        """
        return _values(self.params)

    @classmethod
    def from_params(cls, params: Any, *, dtype: Any = None, **cell_options: Any) -> Self:
        """Build a cell module whose params are ``params`` (from ``cell.init`` or a stack's layer).

        The sizes, ``param_dtype`` and the options that shape the params
        (``use_bias``, ``proj_size``, ``output_size``) are read from ``params``;
        other options (an Elman's ``activation``) must be passed again.

        Raises:
          TypeError, ValueError: naming ``params`` when they do not have the
            structure and shapes of this cell's params.

        Example:
          >>> import jax, jaxrnn
          >>> import jaxrnn.nnx
          >>> params = jaxrnn.lstm(8, proj_size=4).init(jax.random.key(0), input_size=3)
          >>> cell = jaxrnn.nnx.LSTMCell.from_params(params)
          >>> cell.in_features, cell.hidden_features, cell.cell_options
          (3, 8, {'proj_size': 4})
        """
        in_features, hidden_features = cls._sizes(params)
        options = {**cls._structure_options(params), **cell_options}

        def build() -> Any:
            return cls(
                in_features,
                hidden_features,
                dtype=dtype,
                param_dtype=jax.tree.leaves(params)[0].dtype,
                rngs=nnx.Rngs(0),
                **options,
            )

        module: Self = nnx.eval_shape(build)
        check_like(params, module.to_params(), "params")
        module.params = nnx.data(jax.tree.map(lambda a: nnx.Param(jnp.asarray(a)), params))
        return module

    @classmethod
    def _sizes(cls, params: Any) -> tuple[int, int]:
        w_ih: Any = getattr(params, "w_ih", None)
        if not hasattr(w_ih, "shape") or len(w_ih.shape) != 2:
            raise TypeError(
                f"params: expected the params of a {cls.__name__} with a matrix w_ih, "
                f"got {type(params).__name__}"
            )
        return int(w_ih.shape[1]), int(w_ih.shape[0]) // cls._num_gates

    @staticmethod
    def _structure_options(params: Any) -> dict[str, Any]:
        return {} if getattr(params, "b_ih", None) is not None else {"use_bias": False}

    def _template(self) -> Any:
        return jax.eval_shape(lambda: self.cell.initial_carry((), self.param_dtype))

    def __call__(self, carry: Any, inputs: Array) -> tuple[Any, Array]:
        """One step: ``(new_carry, output)``, carries in Flax's convention.

        The new carry keeps the dtypes of ``carry`` (as ``nnx.RNN``'s scan
        needs); with ``dtype`` the output comes in the carry's dtype, as
        Flax's LSTM and GRU cells return their carry.

        Args:
          carry: as :meth:`initialize_carry` returns it (an LSTM's is ``(c, h)``).
          inputs: ``[*batch, in_features]``.

        Raises:
          TypeError: naming ``carry`` for a jaxrnn ``LSTMCarry(h, c)`` where
            ``(c, h)`` is expected, or ``inputs`` for a non-floating dtype.
          ValueError: naming ``inputs`` for a wrong feature size.

        Example:
          >>> import jax.numpy as jnp
          >>> from flax import nnx
          >>> import jaxrnn.nnx
          >>> cell = jaxrnn.nnx.LSTMCell(3, 8, rngs=nnx.Rngs(0))
          >>> carry = cell.initialize_carry((4, 3))  # (c, h), each [4, 8]
          >>> for t in range(5):  # a decoding loop, one step at a time
          ...     carry, y = cell(carry, jnp.ones((4, 3)))
          >>> c, h = carry
          >>> bool((y == h).all()), y.shape
          (True, (4, 8))
        """
        if not hasattr(inputs, "shape") or not hasattr(inputs, "dtype"):
            inputs = jnp.asarray(inputs)
        if inputs.ndim < 1 or inputs.shape[-1] != self.in_features:
            raise ValueError(
                f"inputs: expected shape [*batch, in_features] with "
                f"in_features={self.in_features}, got shape {tuple(inputs.shape)}"
            )
        if not jnp.issubdtype(inputs.dtype, jnp.floating):
            raise TypeError(f"inputs: expected a floating dtype, got {inputs.dtype}")
        inner = from_flax(carry, self._template(), "carry")
        check_like(
            to_flax(inner),
            jax.eval_shape(
                lambda: to_flax(self.cell.initial_carry(inputs.shape[:-1], self.param_dtype))
            ),
            "carry",
        )
        params = cast(self.to_params(), self.dtype)
        new, y = self.cell.step(params, inner, cast(inputs, self.dtype))
        new = jax.tree.map(lambda n, o: n.astype(o.dtype), new, inner)
        if self.dtype is not None:
            y = y.astype(jnp.result_type(*jax.tree.leaves(new)))
        return to_flax(new), y

    def initialize_carry(
        self,
        input_shape: tuple[int, ...],
        rngs: nnx.Rngs | nnx.RngStream | None = None,
        carry_init: Any = None,
    ) -> Any:
        """The carry a sequence starts from, for inputs of shape ``input_shape``.

        Zeros by default (no random stream needed); with ``carry_init`` (a
        Flax initializer ``(key, shape, dtype)``), each leaf drawn from the
        ``'carry'`` stream of ``rngs``, as Flax's cells. The dtype is
        ``param_dtype`` kept in at least float32 (jaxrnn's carries).

        Args:
          input_shape: ``(*batch, in_features)``: one step's input shape.
          rngs: an ``nnx.Rngs`` (its ``'carry'`` stream) or an
            ``nnx.RngStream``; needed only with ``carry_init``.
          carry_init: a Flax initializer, or None for zeros.

        Returns:
          The carry in Flax's convention: ``(c, h)`` of ``[*batch, H]`` for an
          LSTM, the array ``h`` for a GRU or an Elman cell.

        Example:
          >>> from flax import nnx
          >>> import jaxrnn.nnx
          >>> jaxrnn.nnx.GRUCell(3, 8, rngs=nnx.Rngs(0)).initialize_carry((4, 3)).shape
          (4, 8)
        """
        input_shape = tuple(input_shape)
        if not input_shape:
            raise ValueError("input_shape: expected (*batch, in_features), got ()")
        zeros = self.cell.initial_carry(input_shape[:-1], self.param_dtype)
        if carry_init is None:
            return to_flax(zeros)
        if isinstance(rngs, nnx.Rngs):
            rngs = rngs.carry
        if rngs is None:
            raise ValueError("rngs: carry_init draws the carry and needs an nnx.Rngs or RngStream")
        stream = rngs
        return to_flax(jax.tree.map(lambda a: carry_init(stream(), a.shape, a.dtype), zeros))


class LSTMCell(_CellModule):
    """An LSTM cell module (:func:`jaxrnn.lstm`) to Flax's ``RNNCellBase`` protocol.

    PyTorch's equations and gate order (i, f, g, o); Flax's ``LSTMCell`` with
    ``b = b_ih + b_hh``. The carry is Flax's ``(c, h)``.

    Args:
      in_features: the size of the inputs' last axis.
      hidden_features: H.
      dtype: the computation dtype (params and inputs are cast to it), or None.
      param_dtype: the params' dtype.
      rngs: the params are drawn from its ``'params'`` (or default) stream.
      **cell_options: :func:`jaxrnn.lstm`'s options (``forget_bias``,
        ``proj_size``, ``use_bias``, ``recurrent_init``, ...).

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> import jaxrnn.nnx
      >>> cell = jaxrnn.nnx.LSTMCell(3, 8, rngs=nnx.Rngs(0))
      >>> (c, h), ys = nnx.RNN(cell, return_carry=True)(jnp.ones((4, 5, 3)))
      >>> c.shape, ys.shape
      ((4, 8), (4, 5, 8))
    """

    _factory = staticmethod(lstm)
    _num_gates = 4

    @staticmethod
    def _structure_options(params: Any) -> dict[str, Any]:
        options = _CellModule._structure_options(params)
        if getattr(params, "w_hr", None) is not None:
            options["proj_size"] = int(params.w_hr.shape[0])
        return options


class GRUCell(_CellModule):
    """A GRU cell module (:func:`jaxrnn.gru`) to Flax's ``RNNCellBase`` protocol.

    PyTorch's equations (r, z, n), with the recurrent bias ``b_hn`` inside
    the reset gate's product; Flax's ``GRUCell`` is the case ``b_hn = 0``.
    Arguments as :class:`LSTMCell`'s, options :func:`jaxrnn.gru`'s.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> import jaxrnn.nnx
      >>> fwd = nnx.RNN(jaxrnn.nnx.GRUCell(3, 8, rngs=nnx.Rngs(0)))
      >>> bwd = nnx.RNN(jaxrnn.nnx.GRUCell(3, 8, rngs=nnx.Rngs(1)))
      >>> nnx.Bidirectional(fwd, bwd)(jnp.ones((4, 5, 3))).shape
      (4, 5, 16)
    """

    _factory = staticmethod(gru)
    _num_gates = 3


class ElmanCell(_CellModule):
    """An Elman cell module (:func:`jaxrnn.elman`, PyTorch's ``nn.RNNCell``), also ``SimpleCell``.

    Flax's ``SimpleCell`` with ``b_i = b_ih + b_hh``. Arguments as
    :class:`LSTMCell`'s, options :func:`jaxrnn.elman`'s (``activation``,
    ``output_size``, ...).

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> import jaxrnn.nnx
      >>> cell = jaxrnn.nnx.SimpleCell(3, 8, activation="relu", rngs=nnx.Rngs(0))
      >>> nnx.RNN(cell)(jnp.ones((4, 5, 3))).shape
      (4, 5, 8)
    """

    _factory = staticmethod(elman)
    _num_gates = 1

    @staticmethod
    def _structure_options(params: Any) -> dict[str, Any]:
        options = _CellModule._structure_options(params)
        if getattr(params, "w_hy", None) is not None:
            options["output_size"] = int(params.w_hy.shape[0])
        return options


SimpleCell = ElmanCell


class LayerNormLSTMCell(_CellModule):
    """A layer-normalised LSTM cell module (:func:`jaxrnn.layernorm_lstm`); carry ``(c, h)``.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> import jaxrnn.nnx
      >>> cell = jaxrnn.nnx.LayerNormLSTMCell(3, 8, rngs=nnx.Rngs(0))
      >>> nnx.RNN(cell)(jnp.ones((4, 5, 3))).shape
      (4, 5, 8)
    """

    _factory = staticmethod(layernorm_lstm)
    _num_gates = 4

    @staticmethod
    def _structure_options(params: Any) -> dict[str, Any]:
        return {}


class MinGRUCell(_CellModule):
    """A minGRU cell module (:func:`jaxrnn.mingru`, linear in its carry).

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> import jaxrnn.nnx
      >>> nnx.RNN(jaxrnn.nnx.MinGRUCell(3, 8, rngs=nnx.Rngs(0)))(jnp.ones((4, 5, 3))).shape
      (4, 5, 8)
    """

    _factory = staticmethod(mingru)
    _num_gates = 2


class MinLSTMCell(_CellModule):
    """A minLSTM cell module (:func:`jaxrnn.minlstm`, linear in its carry).

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> import jaxrnn.nnx
      >>> nnx.RNN(jaxrnn.nnx.MinLSTMCell(3, 8, rngs=nnx.Rngs(0)))(jnp.ones((4, 5, 3))).shape
      (4, 5, 8)
    """

    _factory = staticmethod(minlstm)
    _num_gates = 3


class LRUCell(_CellModule):
    """A linear recurrent unit cell module (:func:`jaxrnn.lru`).

    Its output has the input's size (``in_features``); the carry is real,
    ``[*batch, 2 * hidden_features]`` (real then imaginary parts).
    ``**cell_options``: ``r_min``, ``r_max``, ``max_phase``.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> import jaxrnn.nnx
      >>> cell = jaxrnn.nnx.LRUCell(3, 8, r_min=0.9, rngs=nnx.Rngs(0))
      >>> carry, ys = nnx.RNN(cell, return_carry=True)(jnp.ones((4, 5, 3)))
      >>> carry.shape, ys.shape
      ((4, 16), (4, 5, 3))
    """

    _factory = staticmethod(lru)
    _num_gates = 1

    @classmethod
    def _sizes(cls, params: Any) -> tuple[int, int]:
        nu_log: Any = getattr(params, "nu_log", None)
        w_ih: Any = getattr(params, "w_ih", None)
        if not hasattr(nu_log, "shape") or not hasattr(w_ih, "shape") or len(w_ih.shape) != 2:
            raise TypeError(f"params: expected jaxrnn.LRUParams, got {type(params).__name__}")
        return int(w_ih.shape[1]), int(nu_log.shape[0])

    @staticmethod
    def _structure_options(params: Any) -> dict[str, Any]:
        return {}

"""Flax NNX modules over jaxrnn's stacks: :class:`LSTM`, :class:`GRU` and :class:`Elman`.

Each module is a :func:`jaxrnn.stack` of one of jaxrnn's cells whose params
are held as :class:`flax.nnx.Param` variables, so it works with
``nnx.Optimizer``, ``nnx.jit``, ``nnx.grad``, ``nnx.split``/``nnx.merge`` and
inside any larger NNX model, and computes exactly what the functional API
computes with the same params.

* **Params** are the functional :class:`jaxrnn.StackParams` NamedTuple with
  every array wrapped in an ``nnx.Param``: ``module.params.first.forward.w_ih``
  is the ``nnx.Param`` of ``StackParams.first.forward.w_ih`` (state paths
  ``('params', 'first', 'forward', 'w_ih')``, layers after the first stacked on
  a leading axis under ``'rest'``). :meth:`~LSTM.to_params` returns the
  functional params and :meth:`~LSTM.from_params` builds a module from them.
* **Layout**: ``module(x)`` is batch-major by default, ``x`` of shape ``[B, T,
  in_features]`` (any number of batch axes), like flax's ``nn.RNN``;
  ``time_major=True`` takes jaxrnn's ``[T, B, in_features]``. It returns
  ``(outputs, final_carry)``; the final carry has jaxrnn's leading axes
  ``[num_layers, num_directions]``.
* **Dropout** between layers follows ``nnx.Dropout``: it is active in training
  mode (``deterministic=False``, the default for a new module, as for
  ``nnx.Dropout`` and PyTorch) and off in evaluation mode. Switch with
  ``model.eval()`` / ``model.train()`` (which reach every submodule), with
  ``nnx.view(model, deterministic=True)``, or per call with
  ``deterministic=``. Masks are drawn from the ``'dropout'`` stream (or the
  default stream) of the ``rngs`` given at construction, or from ``rngs``
  given to the call.

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
except ImportError as e:  # pragma: no cover - exercised only without flax
    raise ImportError("jaxrnn.nnx needs flax: pip install 'jaxrnn[nnx]'") from e

from jaxrnn._cell import Array, Carry, Cell, PRNGKey, Shape, as_float, check_positive_int
from jaxrnn._checks import ScanKwargs, ScanOptions, check_like, scan_options
from jaxrnn._dropout import recurrent_dropout as _recurrent_dropout
from jaxrnn._elman import elman
from jaxrnn._gru import gru
from jaxrnn._lstm import lstm
from jaxrnn._stack import Merge, Stack, StackParams, concat, stack

__all__ = ["GRU", "LSTM", "Elman"]

_RngsLike = nnx.Rngs | nnx.RngStream | PRNGKey


def _is_variable(x: Any) -> bool:
    return isinstance(x, nnx.Variable)


def _dropout_stream(rngs: nnx.Rngs) -> nnx.RngStream | None:
    """A fork of the ``'dropout'`` (or default) stream of ``rngs``; None when it has neither."""
    try:
        return rngs["dropout"].fork()
    except KeyError:
        return None


class _RNN(nnx.Module):
    """What :class:`LSTM`, :class:`GRU` and :class:`Elman` share: a stack of one cell.

    Attributes:
      params: the functional :class:`jaxrnn.StackParams` with ``nnx.Param`` leaves.
      rngs: the ``nnx.RngStream`` dropout masks are drawn from, or None.
      in_features, hidden_features, num_layers, bidirectional, merge, dropout,
        recurrent_dropout, param_dtype: as given to the constructor (``param_dtype`` as a dtype).
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
        param_dtype: Any = jnp.float32,
        deterministic: bool = False,
        rngs: nnx.Rngs,
        **cell_options: Any,
    ) -> None:
        check_positive_int(in_features, "in_features")
        check_positive_int(hidden_features, "hidden_features")
        if not isinstance(rngs, nnx.Rngs):
            raise TypeError(f"rngs: expected an nnx.Rngs, got {type(rngs).__name__}")
        options = tuple(sorted(cell_options.items()))
        try:
            hash(options)
        except TypeError:
            raise TypeError(
                f"cell_options: expected hashable values (they are static module "
                f"attributes), got {cell_options!r}"
            ) from None
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
        self.param_dtype = jnp.dtype(param_dtype)
        self.deterministic = bool(deterministic)
        self._cell_options = options
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

        ``module(x, carry, lengths)`` is ``module.stack.apply(module.to_params(),
        x, carry=carry, lengths=lengths, time_major=False)`` with the pair
        ``(final_carry, outputs)`` swapped.

        Example:
          >>> import jax.numpy as jnp
          >>> from flax import nnx
          >>> import jaxrnn.nnx
          >>> rnn = jaxrnn.nnx.GRU(3, 8, num_layers=2, bidirectional=True, rngs=nnx.Rngs(0))
          >>> x = jnp.ones((4, 5, 3))
          >>> carry, ys = rnn.stack.apply(rnn.to_params(), x, time_major=False)
          >>> bool((ys == rnn(x)[0]).all())
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
        return jax.tree.map(lambda v: v.get_value(), self.params, is_leaf=_is_variable)

    @classmethod
    def from_params(
        cls,
        params: StackParams,
        *,
        merge: Merge = concat,
        dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
        deterministic: bool = False,
        rngs: nnx.Rngs | None = None,
        **cell_options: Any,
    ) -> Self:
        """Build a module whose params are ``params`` (jax arrays are held as they are, not copied).

        ``in_features``, ``hidden_features``, ``num_layers``, ``bidirectional``,
        ``param_dtype`` and the options that shape the params (``use_bias``;
        an LSTM's ``proj_size``; an Elman's ``output_size``) are read from
        ``params``. Options that the params do not show (an Elman's
        ``activation``, ``output_activation``) must be passed again in
        ``cell_options``; options that only initialise (``forget_bias``,
        ``chrono``, ``recurrent_init``) change nothing.

        Args:
          params: :class:`jaxrnn.StackParams` of this module's cell, e.g. from
            ``jaxrnn.stack(jaxrnn.lstm(H), ...).init`` or
            :func:`jaxrnn.interop.from_torch`.
          merge: combines a bidirectional layer's two directions, as in
            :func:`jaxrnn.stack`.
          dropout: the rate of dropout between layers.
          recurrent_dropout: the rate of :func:`jaxrnn.recurrent_dropout` in every layer.
          deterministic: start in evaluation mode (True) or training mode.
          rngs: where dropout masks come from in training mode (its
            ``'dropout'`` or default stream); without it, a call in training
            mode with dropout needs ``rngs=``.
          **cell_options: options of the cell's factory.

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
          >>> ys, carry = module(x)
          >>> bool((ys == rnn.apply(params, x, time_major=False)[1]).all())
          True
        """
        if not isinstance(params, StackParams):
            raise TypeError(
                f"params: expected jaxrnn.StackParams (from jaxrnn.stack(...).init), "
                f"got {type(params).__name__}"
            )
        first = params.first.forward
        w_ih: Any = getattr(first, "w_ih", None)
        if not hasattr(w_ih, "shape") or len(w_ih.shape) != 2:
            raise TypeError(
                f"params: expected the params of a {cls.__name__} cell with a matrix "
                f"w_ih, got {type(first).__name__}"
            )
        num_layers = 1
        if params.rest is not None:
            num_layers += int(jax.tree.leaves(params.rest)[0].shape[0])
        options = {**cls._structure_options(first), **cell_options}
        if rngs is not None and not isinstance(rngs, nnx.Rngs):
            raise TypeError(f"rngs: expected an nnx.Rngs or None, got {type(rngs).__name__}")

        def build() -> Any:
            return cls(
                int(w_ih.shape[1]),
                int(w_ih.shape[0]) // cls._num_gates,
                num_layers=num_layers,
                bidirectional=params.first.backward is not None,
                merge=merge,
                dropout=dropout,
                recurrent_dropout=recurrent_dropout,
                param_dtype=w_ih.dtype,
                deterministic=deterministic,
                rngs=nnx.Rngs(0),
                **options,
            )

        module: Self = nnx.eval_shape(build)
        check_like(params, module.to_params(), "params")
        module.params = nnx.data(jax.tree.map(lambda a: nnx.Param(jnp.asarray(a)), params))
        stream = None if rngs is None or not module._uses_dropout else _dropout_stream(rngs)
        module.rngs = nnx.data(stream)
        return module

    @staticmethod
    def _structure_options(cell_params: Any) -> dict[str, Any]:
        """The cell options that ``cell_params`` show by their structure (defaults left out)."""
        return {} if getattr(cell_params, "b_ih", None) is not None else {"use_bias": False}

    def initial_carry(self, batch_shape: Shape = (), dtype: Any = None) -> Carry:
        """Zeros: the carry a call starts from, ``[num_layers, num_directions, *batch, H]``.

        Args:
          batch_shape: the batch axes ``*batch`` of the inputs.
          dtype: the params' dtype when None (the carry is kept in at least float32).

        Example:
          >>> from flax import nnx
          >>> import jaxrnn.nnx
          >>> rnn = jaxrnn.nnx.GRU(3, 8, num_layers=2, bidirectional=True, rngs=nnx.Rngs(0))
          >>> rnn.initial_carry((4,)).shape
          (2, 2, 4, 8)
        """
        return self.stack.initial_carry(batch_shape, self.param_dtype if dtype is None else dtype)

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
        x: Array,
        carry: Carry | None = None,
        lengths: Array | None = None,
        *,
        time_major: bool = False,
        deterministic: bool | None = None,
        rngs: _RngsLike | None = None,
        options: ScanOptions | None = None,
        resets: Array | None = None,
        **kwargs: Unpack[ScanKwargs],
    ) -> tuple[Array, Carry]:
        """Run the stack over ``x``: ``(outputs, final_carry)``.

        Args:
          x: inputs ``[*batch, T, in_features]`` (batch-major, the default, as
            flax's ``nn.RNN``), or ``[T, *batch, in_features]`` with ``time_major=True``.
          carry: the initial carry, ``[num_layers, num_directions, *batch, H]``
            per leaf as :meth:`initial_carry`; zeros when None.
          lengths: integer array of shape ``batch``: the number of valid steps
            of each right-padded sequence. Outputs past a length are zero and
            the final carry is taken at the last valid step; the backward
            direction starts at each sequence's last valid step.
          time_major: whether the time axis of ``x`` (and of the outputs) comes first.
          deterministic: overrides the module's mode for this call: True turns
            dropout off, False on.
          rngs: overrides where dropout masks come from: an ``nnx.Rngs`` (its
            ``'dropout'`` or default stream), an ``nnx.RngStream`` or a PRNG key.
          options: a :class:`jaxrnn.ScanOptions`, passed unchanged to
            :func:`jaxrnn.scan` through the stack.
          resets: bool array ``[*batch, T]`` (``[T, *batch]`` with
            ``time_major=True``), True where a step starts a new segment
            (an episode, a document): every layer and direction restarts there
            from its initial carry, as :func:`jaxrnn.scan`'s ``resets``.
          **kwargs: its fields as keywords (``unroll``, ``truncate``,
            ``checkpoint``, ``backward``, ``method``, ``method_options``).

        Returns:
          ``(outputs, final_carry)``: outputs ``[*batch, T, out_features]``
          (``[T, *batch, out_features]`` with ``time_major``) and the carry at
          each sequence's last valid step, shaped like ``carry``.

        Raises:
          ValueError: naming ``x``, ``carry``, ``lengths`` or ``rngs``, when a
            shape is wrong or dropout is on without a random stream.

        Example:
          >>> import jax.numpy as jnp
          >>> from flax import nnx
          >>> import jaxrnn.nnx
          >>> rnn = jaxrnn.nnx.LSTM(3, 8, rngs=nnx.Rngs(0))
          >>> ys, carry = rnn(jnp.ones((4, 5, 3)), lengths=jnp.array([5, 2, 3, 1]))
          >>> ys.shape, carry.h.shape  # carry: [num_layers, num_directions, B, H]
          ((4, 5, 8), (1, 1, 4, 8))
          >>> rnn.eval()  # evaluation mode: no dropout (none here: one layer)
          >>> ys_tm, _ = rnn(jnp.ones((5, 4, 3)), time_major=True)  # [T, B, I]
          >>> ys_tm.shape
          (5, 4, 8)
        """
        if not hasattr(x, "shape") or not hasattr(x, "dtype"):
            x = jnp.asarray(x)
        layout = "[T, *batch, in_features]" if time_major else "[*batch, T, in_features]"
        if x.ndim < 2 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"x: expected shape {layout} with in_features={self.in_features}, "
                f"got shape {tuple(x.shape)}"
            )
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise TypeError(f"x: expected a floating dtype, got {x.dtype}")
        key = self._dropout_key(deterministic, rngs)
        final, ys = self.stack.apply(
            self.to_params(),
            x,
            carry=carry,
            lengths=lengths,
            key=key,
            time_major=time_major,
            options=scan_options(options, dict(kwargs)),
            resets=resets,
        )
        return ys, final

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


class LSTM(_RNN):
    """A (multi-layer, bidirectional) LSTM as a flax NNX module, over :func:`jaxrnn.lstm`.

    PyTorch's ``nn.LSTM`` equations and gate order (i, f, g, o); the same
    numbers as ``jaxrnn.stack(jaxrnn.lstm(hidden_features, **cell_options),
    ...)`` with :meth:`to_params`. See :meth:`__call__` for the call.

    Args:
      in_features: the size of the inputs' last axis.
      hidden_features: H, the size of the cell state.
      num_layers: number of stacked layers.
      bidirectional: whether every layer also runs backward in time.
      merge: combines the two directions' outputs (concatenation by default).
      dropout: rate of the dropout on the outputs of every layer but the last,
        in training mode only.
      recurrent_dropout: rate of the variational dropout on the hidden state
        every layer feeds back (:func:`jaxrnn.recurrent_dropout`: one mask per
        sequence, layer and direction), in training mode only.
      param_dtype: dtype of the params; the computation follows it (as in
        jaxrnn: bfloat16 params give bfloat16 matmuls with float32 carries).
      deterministic: start in evaluation mode (dropout off) when True.
      rngs: ``nnx.Rngs``; the params are drawn from its ``'params'`` (or
        default) stream and the dropout masks from a fork of its ``'dropout'``
        (or default) stream.
      **cell_options: options of :func:`jaxrnn.lstm`: ``forget_bias``,
        ``chrono``, ``recurrent_init``, ``proj_size``, ``use_bias``.

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> from flax import nnx
      >>> import jaxrnn.nnx
      >>> class Model(nnx.Module):
      ...     def __init__(self, rngs):
      ...         self.rnn = jaxrnn.nnx.LSTM(3, 8, forget_bias=1.0, rngs=rngs)
      ...         self.head = nnx.Linear(self.rnn.out_features, 1, rngs=rngs)
      ...     def __call__(self, x):
      ...         ys, _ = self.rnn(x)  # [B, T, 8]
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

    @staticmethod
    def _structure_options(cell_params: Any) -> dict[str, Any]:
        w_hr = getattr(cell_params, "w_hr", None)
        options = _RNN._structure_options(cell_params)
        if w_hr is not None:
            options["proj_size"] = int(w_hr.shape[0])
        return options


class GRU(_RNN):
    """A (multi-layer, bidirectional) GRU as a flax NNX module, over :func:`jaxrnn.gru`.

    PyTorch's ``nn.GRU`` equations and gate order (r, z, n). Arguments as
    :class:`LSTM`'s; ``**cell_options`` are :func:`jaxrnn.gru`'s: ``chrono``,
    ``recurrent_init``, ``use_bias``.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> import jaxrnn.nnx
      >>> rnn = jaxrnn.nnx.GRU(3, 8, num_layers=2, bidirectional=True, rngs=nnx.Rngs(0))
      >>> ys, h = rnn(jnp.ones((4, 5, 3)))  # [B, T, I]
      >>> ys.shape, h.shape  # h: [num_layers, num_directions, B, H]
      ((4, 5, 16), (2, 2, 4, 8))
    """

    _factory = staticmethod(gru)
    _num_gates = 3


class Elman(_RNN):
    """A (multi-layer, bidirectional) Elman RNN as a flax NNX module, over :func:`jaxrnn.elman`.

    PyTorch's ``nn.RNN``, optionally with Elman's output layer. Arguments as
    :class:`LSTM`'s; ``**cell_options`` are :func:`jaxrnn.elman`'s:
    ``activation`` (``"tanh"`` by default, ``"relu"``, ...), ``output_size``,
    ``output_activation``, ``recurrent_init``, ``bias_init``, ``use_bias``.
    :meth:`from_params` cannot see the activations in the params: pass them again.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> import jaxrnn.nnx
      >>> rnn = jaxrnn.nnx.Elman(3, 8, activation="relu", recurrent_init="identity",
      ...                        rngs=nnx.Rngs(0))
      >>> ys, h = rnn(jnp.ones((4, 5, 3)))  # [B, T, I]
      >>> ys.shape, h.shape, rnn.out_features
      ((4, 5, 8), (1, 1, 4, 8), 8)
    """

    _factory = staticmethod(elman)
    _num_gates = 1

    @staticmethod
    def _structure_options(cell_params: Any) -> dict[str, Any]:
        w_hy = getattr(cell_params, "w_hy", None)
        options = _RNN._structure_options(cell_params)
        if w_hy is not None:
            options["output_size"] = int(w_hy.shape[0])
        return options

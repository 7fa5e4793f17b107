"""Flax linen modules over jaxrnn's cells and stacks: cells for ``nn.RNN`` and multi-layer RNNs.

Two kinds of module, both holding an ordinary Flax param tree (a dict of
arrays, no ``None`` leaves) that works with ``TrainState``, ``optax`` and
``flax.serialization``:

* **Cells** written to :class:`flax.linen.RNNCellBase`'s protocol (the
  ``features`` attribute, ``__call__(carry, inputs) -> (new_carry, y)``,
  ``initialize_carry(rng, input_shape)``, ``num_feature_axes``, ``dtype`` and
  ``param_dtype``), so they run inside ``nn.RNN``, ``nn.Bidirectional``,
  ``nn.scan`` and hand-written decoding loops: :class:`LSTMCell`,
  :class:`GRUCell`, :class:`SimpleCell` (Elman), :class:`LayerNormLSTMCell`,
  :class:`MinGRUCell`, :class:`MinLSTMCell` and :class:`LRUCell`. Each is one
  step of the functional cell (``jaxrnn.lstm(features, **cell_options)``, ...):
  its params are the fields of the cell's params NamedTuple (``w_ih``,
  ``w_hh``, ``b_ih``, ``b_hh``, ...) that are present, one ``self.param`` each.
* **Multi-layer, bidirectional RNNs** over :func:`jaxrnn.stack` (the fused
  BPTT path): :class:`LSTM`, :class:`GRU`, :class:`Elman` and
  :class:`LayerNormLSTM`, called with ``nn.RNN``'s keywords (``seq_lengths``,
  ``initial_carry``, ``return_carry``, ``time_major``, ``reverse``,
  ``keep_order``) and returning what ``nn.RNN`` returns: the outputs, or
  ``(carry, outputs)`` with ``return_carry``. Dropout between layers draws
  from the ``'dropout'`` rng and is off with ``deterministic=True``, as
  ``nn.Dropout``.

**Carries** are in Flax's convention: an LSTM's is the tuple ``(c, h)`` (so
``c, h = carry`` reads what Flax code expects; jaxrnn's own
:class:`jaxrnn.LSTMCarry` is ``(h, c)``, and passing one raises), every other
carry is an array. **Options** of the functional cell (``forget_bias``,
``use_bias``, ``recurrent_init``, ...) are given as one mapping,
``cell_options``, forwarded unchanged to the cell's factory.

This module needs flax (``pip install 'jaxrnn[nnx]'``) and is imported
explicitly, ``import jaxrnn.linen``; ``import jaxrnn`` never imports flax.

Example:
  >>> import jax, jax.numpy as jnp
  >>> import flax.linen as nn
  >>> import jaxrnn.linen
  >>> rnn = nn.RNN(jaxrnn.linen.LSTMCell(8))  # in place of nn.RNN(nn.LSTMCell(8))
  >>> x = jnp.ones((4, 5, 3))  # [B, T, I]
  >>> variables = rnn.init(jax.random.key(0), x)
  >>> sorted(variables["params"]["cell"])
  ['b_hh', 'b_ih', 'w_hh', 'w_ih']
  >>> rnn.apply(variables, x).shape
  (4, 5, 8)
"""

from __future__ import annotations

import contextlib
import inspect
import types
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

try:
    import flax.linen as nn
    from flax.core.frozen_dict import FrozenDict
except ImportError as e:  # pragma: no cover - exercised only without flax
    raise ImportError("jaxrnn.linen needs flax: pip install 'jaxrnn[nnx]'") from e

from jaxrnn._cell import Array, Carry, Cell, Params, PRNGKey, cast, check_positive_int
from jaxrnn._checks import ScanOptions, check_lengths, check_like
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
    "GRUCell",
    "LRUCell",
    "LSTMCell",
    "LayerNormLSTM",
    "LayerNormLSTMCell",
    "MinGRUCell",
    "MinLSTMCell",
    "SimpleCell",
]

Dtype = Any


# ------------------------------------------------------------------ params as Flax dicts


def _is_namedtuple(x: Any) -> bool:
    return isinstance(x, tuple) and hasattr(x, "_fields")


def _as_dict(tree: Any) -> Any:
    """A (nested) params NamedTuple as nested dicts of its present fields (no None leaves)."""
    if _is_namedtuple(tree):
        return {k: _as_dict(v) for k, v in zip(tree._fields, tree, strict=True) if v is not None}
    return tree


def _as_named(tree: Any, template: Any, name: str) -> Any:
    """Nested dicts back in the NamedTuple structure of ``template`` (absent fields None)."""
    if not _is_namedtuple(template):
        return tree
    want = [k for k, v in zip(template._fields, template, strict=True) if v is not None]
    if not isinstance(tree, Mapping) or set(tree) != set(want):
        got = sorted(tree) if isinstance(tree, Mapping) else type(tree).__name__
        raise ValueError(f"{name}: expected a dict with the keys {sorted(want)}, got {got}")
    fields = {
        k: None if v is None else _as_named(tree[k], v, f"{name}[{k!r}]")
        for k, v in zip(template._fields, template, strict=True)
    }
    return type(template)(**fields)


def _declare(module: nn.Module, init: Callable[[PRNGKey], dict[str, Any]]) -> dict[str, Any]:
    """``module``'s params, one ``self.param`` per key of ``init(key)``, all drawn from one key.

    All are drawn by one call of ``init`` so that params whose initial values
    depend on each other (the LRU's ν and γ) keep that dependence. When the
    params exist, ``init`` only gives the shapes Flax checks them against.
    """
    names = list(jax.eval_shape(init, jax.random.key(0)))
    if not module.has_variable("params", names[0]) and module.is_mutable_collection("params"):
        values = init(module.make_rng("params"))
        return {n: module.param(n, lambda _key, v=values[n]: v) for n in names}
    return {n: module.param(n, lambda key, n=n: init(key)[n]) for n in names}


def _frozen_options(module: nn.Module) -> None:
    """Store ``module.cell_options`` as a FrozenDict (modules must hash), checked as a mapping."""
    options = module.cell_options
    if not isinstance(options, Mapping):
        raise TypeError(
            f"{type(module).__name__}: cell_options: expected a mapping of the cell factory's "
            f"keyword options, e.g. {{'forget_bias': 1.0}}, got {type(options).__name__}"
        )
    options = FrozenDict(options)
    try:
        hash(options)
    except TypeError:
        raise TypeError(
            f"{type(module).__name__}: cell_options: expected hashable values (module "
            f"attributes are hashed), got {dict(options)!r}"
        ) from None
    object.__setattr__(module, "cell_options", options)


@contextlib.contextmanager
def _named(method: str, renames: Mapping[str, str] = FrozenDict()) -> Iterator[None]:
    """Re-raise the argument errors of jaxrnn's checks prefixed with ``method``.

    jaxrnn's messages start with the argument's name (``lengths: expected
    ...``); ``renames`` maps those names to the method's own (``seq_lengths``).
    """
    try:
        yield
    except (TypeError, ValueError) as e:
        if type(e) not in (TypeError, ValueError) or str(e).startswith(method):
            raise
        message = str(e)
        for old, new in renames.items():
            if message.startswith(old) and message[len(old) : len(old) + 1] in (":", ".", "["):
                message = new + message[len(old) :]
                break
        raise type(e)(f"{method}: {message}") from e


def _check_inputs(inputs: Any, method: str, min_ndim: int, layout: str) -> Array:
    if not hasattr(inputs, "shape") or not hasattr(inputs, "dtype"):
        inputs = jnp.asarray(inputs)
    if inputs.ndim < min_ndim:
        raise ValueError(f"{method}: inputs: expected shape {layout}, got {tuple(inputs.shape)}")
    if not jnp.issubdtype(inputs.dtype, jnp.floating):
        raise TypeError(f"{method}: inputs: expected a floating dtype, got {inputs.dtype}")
    return inputs


def _check_input_size(
    module: nn.Module, params_path: tuple[str, ...], size: int, method: str
) -> None:
    """Raise when the existing params were built for another input size than ``size``."""
    if not module.has_variable("params", params_path[0]):
        return
    value: Any = module.get_variable("params", params_path[0])
    for key in params_path[1:]:
        value = value[key]
    built = int(value.shape[-1])
    if built != size:
        raise ValueError(
            f"{method}: inputs: expected {built} features in the last axis (the params were "
            f"built for input size {built}), got {size}"
        )


def _own_call(cls: type, raw: Callable[..., Any]) -> None:
    """Give ``cls`` its own ``__call__``, a copy of ``raw`` named ``<cls.__name__>.__call__``.

    Python names the function in a wrong call's error (``LSTM.__call__() got
    an unexpected keyword argument 'foo'``) by its code's qualified name,
    which would otherwise be the private base class's. Called from
    ``__init_subclass__`` before Flax wraps the class's methods.
    """
    if "__call__" in cls.__dict__:
        return
    raw = inspect.unwrap(raw)  # a decorated function's own code, not its wrapper's
    qualname = f"{cls.__name__}.__call__"
    call = types.FunctionType(
        raw.__code__.replace(co_qualname=qualname),
        raw.__globals__,
        "__call__",
        raw.__defaults__,
        raw.__closure__,
    )
    call.__kwdefaults__ = raw.__kwdefaults__
    call.__qualname__ = qualname
    call.__doc__ = raw.__doc__
    call.__annotations__ = dict(raw.__annotations__)
    call.__module__ = raw.__module__
    setattr(cls, "__call__", nn.compact(call))  # noqa: B010 - a class attribute, by name


# ------------------------------------------------------------------------------ cells


class _CellBase(nn.RNNCellBase):
    """What the cell modules share: one step of a functional cell, params from its ``init``.

    Attributes:
      features: H, the hidden size (the functional cell's ``hidden_size``).
      cell_options: keyword options of the cell's factory, e.g. ``{"forget_bias": 1.0}``.
      dtype: the dtype of the computation: params and inputs are cast to it
        for the step (bfloat16 over float32 params); None leaves them as they
        are (jaxrnn's rule: the weights' dtype chooses the matmul's precision).
      param_dtype: the dtype of the params.
    """

    features: int
    cell_options: Mapping[str, Any] = FrozenDict()
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    _factory: ClassVar[Callable[..., Cell]]

    def __post_init__(self) -> None:
        check_positive_int(self.features, f"{type(self).__name__}: features")
        _frozen_options(self)
        self.cell  # noqa: B018 - builds the functional cell: bad options raise here
        super().__post_init__()

    @property
    def cell(self) -> Cell:
        """The functional :class:`jaxrnn.Cell` this module steps.

        Example:
          >>> import jaxrnn.linen
          >>> jaxrnn.linen.GRUCell(8).cell.spec
          GRUSpec()
        """
        try:
            return type(self)._factory(self.features, **self.cell_options)
        except TypeError as e:
            raise TypeError(f"{type(self).__name__}: cell_options: {e}") from None

    @property
    def num_feature_axes(self) -> int:
        """1: one step's input is a vector ``[*batch, I]``."""
        return 1

    def _template(self, input_size: int) -> Params:
        return jax.eval_shape(
            lambda: self.cell.init(jax.random.key(0), input_size, self.param_dtype)
        )

    @nn.nowrap
    def to_params(self, params: Mapping[str, Any]) -> Params:
        """The functional params (:class:`jaxrnn.LSTMParams`, ...) of this module's param dict.

        Args:
          params: this module's params, ``variables['params']`` (or its ``['cell']``
            entry inside ``nn.RNN``).

        Returns:
          The params NamedTuple of :attr:`cell`, absent fields None; it works
          with :func:`jaxrnn.scan` and everything in jaxrnn that takes cell params.

        Raises:
          ValueError: naming ``params`` when its keys or shapes are not the cell's.

        Example:
          >>> import jax, jax.numpy as jnp, jaxrnn
          >>> import jaxrnn.linen
          >>> cell = jaxrnn.linen.LSTMCell(8)
          >>> x = jnp.ones((2, 3))
          >>> variables = cell.init(jax.random.key(0), cell.initialize_carry(None, x.shape), x)
          >>> params = cell.to_params(variables["params"])
          >>> type(params).__name__, params.w_ih.shape
          ('LSTMParams', (32, 3))
        """
        method = f"{type(self).__name__}.to_params"
        if not isinstance(params, Mapping) or "w_ih" not in params:
            raise ValueError(
                f"{method}: params: expected the dict of this cell's params (with 'w_ih'), "
                f"got {type(params).__name__}"
            )
        template = self._template(int(params["w_ih"].shape[-1]))
        with _named(method):
            named = _as_named(params, template, "params")
            check_like(named, template, "params")
        return named

    @nn.nowrap
    def from_params(self, params: Params) -> dict[str, Any]:
        """The param dict of this module for functional params (the inverse of :meth:`to_params`).

        Example:
          >>> import jax, jaxrnn
          >>> import jaxrnn.linen
          >>> params = jaxrnn.gru(8).init(jax.random.key(0), input_size=3)
          >>> sorted(jaxrnn.linen.GRUCell(8).from_params(params))
          ['b_hh', 'b_ih', 'w_hh', 'w_ih']
        """
        if not _is_namedtuple(params):
            raise TypeError(
                f"{type(self).__name__}.from_params: params: expected the functional cell's "
                f"params NamedTuple (e.g. jaxrnn.LSTMParams), got {type(params).__name__}"
            )
        return _as_dict(params)

    @nn.nowrap
    def initialize_carry(self, rng: PRNGKey | None, input_shape: tuple[int, ...]) -> Carry:
        """Zeros: the carry for one step's inputs of shape ``[*batch, I]``, in Flax's convention.

        Args:
          rng: ignored (the carry is zeros); accepted for ``RNNCellBase``'s signature.
          input_shape: the shape of one step's input, ``[*batch, I]``.

        Returns:
          An LSTM's tuple ``(c, h)`` (each ``[*batch, H]``), else an array ``[*batch, H]``
          (an LRU's ``[*batch, 2H]``: the real and imaginary parts); float32 at least.

        Example:
          >>> import jaxrnn.linen
          >>> c, h = jaxrnn.linen.LSTMCell(8).initialize_carry(None, (4, 3))
          >>> c.shape, h.shape
          ((4, 8), (4, 8))
        """
        shape = tuple(input_shape)
        if len(shape) < 1 or not all(isinstance(d, int) for d in shape):
            raise ValueError(
                f"{type(self).__name__}.initialize_carry: input_shape: expected a tuple of "
                f"ints [*batch, I], got {input_shape!r}"
            )
        return to_flax(self.cell.initial_carry(shape[:-1], self.param_dtype))

    def __init_subclass__(cls, **kwargs: Any) -> None:
        _own_call(cls, _cell_call)
        super().__init_subclass__(**kwargs)


def _cell_call(self: _CellBase, carry: Carry, inputs: Array) -> tuple[Carry, Array]:
    """One step: ``(new_carry, y)`` from the carry and one step's inputs ``[*batch, I]``.

    Args:
      self: the cell module (this function is each cell class's ``__call__``).
      carry: the carry in Flax's convention, as :meth:`initialize_carry` returns it.
      inputs: ``[*batch, I]``; all axes but the last are batch axes.

    Returns:
      ``(new_carry, y)``: the new carry (structure, shapes and dtypes of
      ``carry``) and the output ``[*batch, O]``.

    Raises:
      TypeError, ValueError: naming ``__call__`` and ``carry`` or
        ``inputs``, for a carry of the wrong structure (a jaxrnn
        ``LSTMCarry`` for Flax's ``(c, h)``) or shape, or inputs whose
        size is not the one the params were built for.
    """
    method = f"{type(self).__name__}.__call__"
    inputs = _check_inputs(inputs, method, 1, "[*batch, I]")
    size = int(inputs.shape[-1])
    _check_input_size(self, ("w_ih",), size, method)
    cell = self.cell
    template = self._template(size)
    params = _declare(self, lambda key: _as_dict(cell.init(key, size, self.param_dtype)))
    named = _as_named(params, template, "params")
    shape_carry = jax.eval_shape(lambda: cell.initial_carry((), self.param_dtype))
    with _named(method, {"x": "inputs"}):
        state = from_flax(carry, shape_carry, "carry")
        new_state, y = cell.step(cast(named, self.dtype), state, cast(inputs, self.dtype))
    return to_flax(new_state), y


class LSTMCell(_CellBase):
    """The LSTM cell of :func:`jaxrnn.lstm` as a linen cell: ``nn.RNN(LSTMCell(H))``.

    PyTorch's equations and gate order (i, f, g, o), with both biases; Flax's
    carry ``(c, h)``. ``cell_options`` are :func:`jaxrnn.lstm`'s
    (``forget_bias``, ``chrono``, ``recurrent_init``, ``proj_size``,
    ``use_bias``, ``gate_fn``, ``activation_fn``, and the initialisation
    presets where the factory has them). Params: ``w_ih`` ``[4H, I]``,
    ``w_hh`` ``[4H, H]``, ``b_ih``, ``b_hh`` ``[4H]``.

    Flax's ``nn.LSTMCell`` holds the same function in eight Dense layers: its
    kernel ``ii`` is ``w_ih[:H].T``, ``if`` is ``w_ih[H:2H].T`` ..., ``hi``
    is ``w_hh[:H].T`` with bias ``b_ih[:H] + b_hh[:H]`` (Flax has one bias
    per gate). ``cell_options={"init": "flax"}`` draws Flax's initialisation.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import jaxrnn.linen
      >>> cell = jaxrnn.linen.LSTMCell(8, cell_options={"forget_bias": 1.0})
      >>> x = jnp.ones((4, 3))  # one step, [B, I]
      >>> carry = cell.initialize_carry(jax.random.key(0), x.shape)
      >>> variables = cell.init(jax.random.key(1), carry, x)
      >>> (c, h), y = cell.apply(variables, carry, x)
      >>> c.shape, bool((y == h).all())
      ((4, 8), True)
    """

    _factory = staticmethod(lstm)


class GRUCell(_CellBase):
    """The GRU cell of :func:`jaxrnn.gru` as a linen cell: ``nn.RNN(GRUCell(H))``.

    PyTorch's equations (reset gate after the recurrent matmul) and gate order
    (r, z, n). Flax's ``nn.GRUCell`` computes the same function: its ``ir``,
    ``iz``, ``in`` kernels are the transposed blocks of ``w_ih`` with biases
    ``b_ih`` (plus ``b_hh`` for r and z: Flax has no recurrent bias there),
    ``hr``, ``hz``, ``hn`` those of ``w_hh``, and ``hn``'s bias is ``b_hh``'s
    n block. ``cell_options`` are :func:`jaxrnn.gru`'s.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import flax.linen as nn
      >>> import jaxrnn.linen
      >>> rnn = nn.RNN(jaxrnn.linen.GRUCell(8), return_carry=True)
      >>> x = jnp.ones((4, 5, 3))  # [B, T, I]
      >>> variables = rnn.init(jax.random.key(0), x)
      >>> h, ys = rnn.apply(variables, x, seq_lengths=jnp.array([5, 2, 3, 1]))
      >>> h.shape, ys.shape
      ((4, 8), (4, 5, 8))
    """

    _factory = staticmethod(gru)


class SimpleCell(_CellBase):
    """The Elman cell of :func:`jaxrnn.elman` as a linen cell (Flax's name, ``SimpleCell``).

    ``h_t = f(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)``, optionally with
    Elman's output layer (``cell_options={"output_size": O}``). Flax's
    ``nn.SimpleCell`` (not residual) is the same function with ``b_hh`` zero.
    ``cell_options`` are :func:`jaxrnn.elman`'s (``activation``, ...).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import flax.linen as nn
      >>> import jaxrnn.linen
      >>> rnn = nn.RNN(jaxrnn.linen.SimpleCell(8, cell_options={"activation": "relu"}))
      >>> x = jnp.ones((4, 5, 3))
      >>> rnn.apply(rnn.init(jax.random.key(0), x), x).shape
      (4, 5, 8)
    """

    _factory = staticmethod(elman)


class LayerNormLSTMCell(_CellBase):
    """The layer-normalised LSTM of :func:`jaxrnn.layernorm_lstm` as a linen cell.

    Carry ``(c, h)`` as Flax's LSTM cells; ``cell_options`` are
    :func:`jaxrnn.layernorm_lstm`'s (``forget_bias``, ``epsilon``, ...).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import flax.linen as nn
      >>> import jaxrnn.linen
      >>> rnn = nn.RNN(jaxrnn.linen.LayerNormLSTMCell(8))
      >>> x = jnp.ones((4, 5, 3))
      >>> sorted(rnn.init(jax.random.key(0), x)["params"]["cell"])
      ['b', 'beta_c', 'gamma_c', 'gamma_hh', 'gamma_ih', 'w_hh', 'w_ih']
    """

    _factory = staticmethod(layernorm_lstm)


class MinGRUCell(_CellBase):
    """The minGRU cell of :func:`jaxrnn.mingru` (linear in h) as a linen cell.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import flax.linen as nn
      >>> import jaxrnn.linen
      >>> rnn = nn.RNN(jaxrnn.linen.MinGRUCell(8))
      >>> x = jnp.ones((4, 5, 3))
      >>> rnn.apply(rnn.init(jax.random.key(0), x), x).shape
      (4, 5, 8)
    """

    _factory = staticmethod(mingru)


class MinLSTMCell(_CellBase):
    """The minLSTM cell of :func:`jaxrnn.minlstm` (linear in h) as a linen cell.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import flax.linen as nn
      >>> import jaxrnn.linen
      >>> rnn = nn.RNN(jaxrnn.linen.MinLSTMCell(8))
      >>> x = jnp.ones((4, 5, 3))
      >>> rnn.apply(rnn.init(jax.random.key(0), x), x).shape
      (4, 5, 8)
    """

    _factory = staticmethod(minlstm)


class LRUCell(_CellBase):
    """The linear recurrent unit of :func:`jaxrnn.lru` as a linen cell.

    ``features`` is H, the number of complex state units; the carry is real,
    ``[*batch, 2H]`` (real parts, then imaginary parts), and the output has
    the input's size. ``cell_options`` are :func:`jaxrnn.lru`'s (``r_min``,
    ``r_max``, ``max_phase``).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import flax.linen as nn
      >>> import jaxrnn.linen
      >>> rnn = nn.RNN(jaxrnn.linen.LRUCell(8, cell_options={"r_min": 0.9}), return_carry=True)
      >>> x = jnp.ones((4, 5, 3))
      >>> carry, ys = rnn.apply(rnn.init(jax.random.key(0), x), x)
      >>> carry.shape, ys.shape
      ((4, 16), (4, 5, 3))
    """

    _factory = staticmethod(lru)


# ------------------------------------------------------------------- multi-layer RNNs


class _Stacked(nn.Module):
    """What :class:`LSTM`, :class:`GRU`, :class:`Elman` and :class:`LayerNormLSTM` share.

    The attributes are documented on :class:`LSTM`.
    """

    features: int
    num_layers: int = 1
    bidirectional: bool = False
    merge: Merge = concat
    dropout: float = 0.0
    deterministic: bool | None = None
    cell_options: Mapping[str, Any] = FrozenDict()
    time_major: bool = False
    return_carry: bool = False
    reverse: bool = False
    keep_order: bool = False
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    _factory: ClassVar[Callable[..., Cell]]

    def __post_init__(self) -> None:
        name = type(self).__name__
        check_positive_int(self.features, f"{name}: features")
        _frozen_options(self)
        self.stack  # noqa: B018 - builds the cell and the stack: bad options raise here
        super().__post_init__()

    @property
    def cell(self) -> Cell:
        """The functional :class:`jaxrnn.Cell` of every layer and direction.

        Example:
          >>> import jaxrnn.linen
          >>> jaxrnn.linen.LSTM(8, cell_options={"forget_bias": 1.0}).cell.spec
          LSTMSpec()
        """
        try:
            return type(self)._factory(self.features, **self.cell_options)
        except TypeError as e:
            raise TypeError(f"{type(self).__name__}: cell_options: {e}") from None

    @property
    def stack(self) -> Stack:
        """The functional :class:`jaxrnn.Stack` this module runs.

        ``module.apply(variables, x, seq_lengths=n, return_carry=True)`` is
        ``module.stack.apply(module.to_params(variables['params']), x,
        lengths=n, time_major=False)`` with the carry in Flax's convention
        (squeezed for one layer and one direction).

        Example:
          >>> import jax, jax.numpy as jnp
          >>> import jaxrnn.linen
          >>> rnn = jaxrnn.linen.GRU(8, num_layers=2, bidirectional=True)
          >>> x = jnp.ones((4, 5, 3))
          >>> variables = rnn.init(jax.random.key(0), x)
          >>> _, ys = rnn.stack.apply(rnn.to_params(variables["params"]), x, time_major=False)
          >>> bool((ys == rnn.apply(variables, x)).all())
          True
        """
        name = type(self).__name__
        cell = self.cell
        try:
            return stack(
                cell,
                num_layers=self.num_layers,
                bidirectional=self.bidirectional,
                merge=self.merge,
                dropout=self.dropout,
            )
        except (TypeError, ValueError) as e:
            raise type(e)(f"{name}: {e}") from None

    @property
    def _squeezed(self) -> bool:
        """One layer, one direction: the carry has no leading axes, as ``nn.RNN``'s."""
        return self.num_layers == 1 and not self.bidirectional

    def _template(self, input_size: int) -> StackParams:
        return jax.eval_shape(
            lambda: self.stack.init(jax.random.key(0), input_size, self.param_dtype)
        )

    @nn.nowrap
    def to_params(self, params: Mapping[str, Any]) -> StackParams:
        """The functional :class:`jaxrnn.StackParams` of this module's param dict.

        The dict is :class:`jaxrnn.StackParams` as nested dicts without the
        absent fields: ``params['first']['forward']['w_ih']``, the layers
        after the first stacked on a leading axis under ``'rest'``, the
        backward direction under ``'backward'``.

        Raises:
          ValueError: naming ``params`` when its keys or shapes are not the stack's.

        Example:
          >>> import jax, jax.numpy as jnp
          >>> import jaxrnn.linen
          >>> rnn = jaxrnn.linen.LSTM(8, num_layers=3)
          >>> params = rnn.init(jax.random.key(0), jnp.ones((2, 5, 3)))["params"]
          >>> params["rest"]["forward"]["w_ih"].shape
          (2, 32, 8)
          >>> rnn.to_params(params).first.forward.w_ih.shape
          (32, 3)
        """
        method = f"{type(self).__name__}.to_params"
        try:
            size = int(params["first"]["forward"]["w_ih"].shape[-1])
        except (KeyError, TypeError, AttributeError):
            raise ValueError(
                f"{method}: params: expected this module's param dict, with "
                f"params['first']['forward']['w_ih'], got {type(params).__name__}"
            ) from None
        template = self._template(size)
        with _named(method):
            named = _as_named(params, template, "params")
            check_like(named, template, "params")
        return named

    @nn.nowrap
    def from_params(self, params: StackParams) -> dict[str, Any]:
        """The param dict of this module for :class:`jaxrnn.StackParams` (see :meth:`to_params`).

        Example:
          >>> import jax, jax.numpy as jnp, jaxrnn
          >>> import jaxrnn.linen
          >>> params = jaxrnn.stack(jaxrnn.gru(8)).init(jax.random.key(0), input_size=3)
          >>> rnn = jaxrnn.linen.GRU(8)
          >>> rnn.apply({"params": rnn.from_params(params)}, jnp.ones((2, 5, 3))).shape
          (2, 5, 8)
        """
        if not isinstance(params, StackParams):
            raise TypeError(
                f"{type(self).__name__}.from_params: params: expected jaxrnn.StackParams, "
                f"got {type(params).__name__}"
            )
        return _as_dict(params)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        _own_call(cls, _stacked_call)
        super().__init_subclass__(**kwargs)

    def _carry_in(
        self, carry: Carry | None, params: StackParams, inputs: Array, batch_shape: tuple[int, ...]
    ) -> Carry | None:
        """``initial_carry`` in Flax's convention as the stack's carry (None stays None)."""
        if carry is None:
            return None
        shape_carry = jax.eval_shape(lambda: self.cell.initial_carry((), self.param_dtype))
        state = from_flax(carry, shape_carry, "carry")
        if self._squeezed:
            dtype = jnp.result_type(inputs, *jax.tree.leaves(params))
            expected = jax.eval_shape(lambda: self.cell.initial_carry(batch_shape, dtype))
            check_like(state, expected, "carry")
            state = jax.tree.map(lambda a: jnp.asarray(a)[None, None], state)
        return state

    def _dropout_key(self, deterministic: bool | None) -> PRNGKey | None:
        if self.dropout == 0.0 or self.num_layers == 1:
            return None
        if nn.merge_param("deterministic", self.deterministic, deterministic):
            return None
        return self.make_rng("dropout")


def _stacked_call(
    self: _Stacked,
    inputs: Array,
    *,
    initial_carry: Carry | None = None,
    init_key: PRNGKey | None = None,
    seq_lengths: Array | None = None,
    return_carry: bool | None = None,
    time_major: bool | None = None,
    reverse: bool | None = None,
    keep_order: bool | None = None,
    deterministic: bool | None = None,
    resets: Array | None = None,
    options: ScanOptions | None = None,
) -> Array | tuple[Carry, Array]:
    """Run the stack over ``inputs``: the outputs, or ``(carry, outputs)``, as ``nn.RNN``.

    Args:
      self: the module (this function is each module class's ``__call__``).
      inputs: ``[*batch, T, I]`` (``[T, *batch, I]`` with ``time_major``).
      initial_carry: the carry to start from, in the structure this call
        returns; zeros when None.
      init_key: ignored (the initial carry is zeros); ``nn.RNN``'s signature.
      seq_lengths: integers of shape ``batch``, the valid steps of each
        right-padded sequence: outputs past a length are zero, the final
        carry is the one at the last valid step, the backward direction
        starts at each sequence's last valid step, and padded inputs are
        never read (NaN there reaches no output and no gradient).
      return_carry: return ``(carry, outputs)`` instead of the outputs.
      time_major: whether the time axis comes first.
      reverse: read each sequence from its last valid step to its first;
        the outputs are then in that reversed order unless ``keep_order``
        (``nn.RNN``'s meaning; padding stays at the end).
      keep_order: with ``reverse``, put the outputs back in the input's order.
      deterministic: True turns dropout off (merged with the attribute).
      resets: bools ``[*batch, T]`` (``[T, *batch]`` with ``time_major``),
        True where a step starts a new segment, as :func:`jaxrnn.scan`'s.
      options: a :class:`jaxrnn.ScanOptions` for every layer's scan.

    Returns:
      ``outputs`` ``[*batch, T, O]``, or ``(carry, outputs)`` with
      ``return_carry``. With one layer and one direction the carry is
      exactly ``nn.RNN``'s for Flax's cell: an LSTM's ``(c, h)`` of
      ``[*batch, H]``, a GRU's array ``[*batch, H]``. Otherwise every leaf
      has the leading axes ``[num_layers, num_directions]`` (PyTorch's
      ``h_n`` before it flattens them, jaxrnn's stack carry; Flax has no
      multi-layer RNN to copy), still ``(c, h)`` for an LSTM.

    Raises:
      TypeError, ValueError: naming ``__call__`` and the argument.
    """
    method = f"{type(self).__name__}.__call__"
    return_carry = self.return_carry if return_carry is None else return_carry
    time_major = self.time_major if time_major is None else time_major
    reverse = self.reverse if reverse is None else reverse
    keep_order = self.keep_order if keep_order is None else keep_order
    for name, value in (
        ("return_carry", return_carry),
        ("time_major", time_major),
        ("reverse", reverse),
        ("keep_order", keep_order),
    ):
        if not isinstance(value, bool):
            raise TypeError(f"{method}: {name}: expected a bool, got {value!r}")
    layout = "[T, *batch, I]" if time_major else "[*batch, T, I]"
    inputs = _check_inputs(inputs, method, 2, layout)
    size = int(inputs.shape[-1])
    _check_input_size(self, ("first", "forward", "w_ih"), size, method)
    rnn = self.stack
    template = self._template(size)
    params = _declare(self, lambda key: _as_dict(rnn.init(key, size, self.param_dtype)))
    named = cast(_as_named(params, template, "params"), self.dtype)
    inputs = cast(inputs, self.dtype)
    batch_shape = inputs.shape[1:-1] if time_major else inputs.shape[:-2]
    num_steps = int(inputs.shape[0] if time_major else inputs.shape[-2])
    renames = {"xs": "inputs", "carry": "initial_carry", "lengths": "seq_lengths"}
    with _named(method, renames):
        lengths = check_lengths(seq_lengths, tuple(batch_shape), num_steps)
        carry = self._carry_in(initial_carry, named, inputs, tuple(batch_shape))
        time_axis = 0 if time_major else len(batch_shape)
        if reverse:
            inputs = flip(inputs, lengths, time_axis)
            if resets is not None:
                resets = jnp.asarray(resets)
                if resets.ndim == len(batch_shape) + 1:  # else the stack's check names it
                    resets = flip_resets(resets, lengths, time_axis)
        final, ys = rnn.apply(
            named,
            inputs,
            carry=carry,
            lengths=lengths,
            key=self._dropout_key(deterministic),
            time_major=time_major,
            options=options,
            resets=resets,
        )
    if reverse and keep_order:
        ys = flip(ys, lengths, 0 if time_major else len(batch_shape))
    if not return_carry:
        return ys
    if self._squeezed:
        final = jax.tree.map(lambda a: a[0, 0], final)
    return to_flax(final), ys


class LSTM(_Stacked):
    """A (multi-layer, bidirectional) LSTM over :func:`jaxrnn.stack` of :func:`jaxrnn.lstm`.

    With one layer, ``LSTM(H)`` stands in for ``nn.RNN(nn.LSTMCell(H))``:
    the same call, the same returns (PyTorch's equations, so other params).
    It runs jaxrnn's fused BPTT path. The params are
    :class:`jaxrnn.StackParams` as nested dicts (:meth:`to_params`,
    :meth:`from_params` convert); the call is :meth:`__call__`'s.

    Attributes:
      features: H, the hidden size of every layer.
      num_layers: the number of stacked layers.
      bidirectional: whether every layer also runs backward in time.
      merge: combines a bidirectional layer's two directions (concatenation
        by default; Flax's ``nn.Bidirectional`` calls it ``merge_fn``).
      dropout: rate of the dropout on the outputs of every layer but the last.
      deterministic: True turns dropout off (also a call argument, as for
        ``nn.Dropout``); needed only when dropout is on.
      cell_options: keyword options of the cell's factory, :func:`jaxrnn.lstm`'s here
        (``forget_bias``, ``proj_size``, ``use_bias``, ``init``, ...).
      time_major, return_carry, reverse, keep_order: defaults of the call's
        keywords, as ``nn.RNN``'s attributes.
      dtype: the dtype of the computation (params and inputs are cast to it
        for the call), or None.
      param_dtype: the dtype of the params.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import jaxrnn.linen
      >>> rnn = jaxrnn.linen.LSTM(8, num_layers=2, bidirectional=True, dropout=0.1)
      >>> x = jnp.ones((4, 5, 3))  # [B, T, I]
      >>> variables = rnn.init(jax.random.key(0), x, deterministic=True)
      >>> (c, h), ys = rnn.apply(variables, x, seq_lengths=jnp.array([5, 2, 3, 1]),
      ...                        return_carry=True, deterministic=False,
      ...                        rngs={"dropout": jax.random.key(1)})
      >>> ys.shape, h.shape  # h: [num_layers, num_directions, B, H]
      ((4, 5, 16), (2, 2, 4, 8))
    """

    _factory = staticmethod(lstm)


class GRU(_Stacked):
    """A (multi-layer, bidirectional) GRU over :func:`jaxrnn.stack` of :func:`jaxrnn.gru`.

    Attributes as :class:`LSTM`'s; ``cell_options`` are :func:`jaxrnn.gru`'s.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import jaxrnn.linen
      >>> rnn = jaxrnn.linen.GRU(8, return_carry=True)
      >>> x = jnp.ones((4, 5, 3))
      >>> h, ys = rnn.apply(rnn.init(jax.random.key(0), x), x)
      >>> h.shape, ys.shape  # one layer, one direction: nn.RNN(nn.GRUCell(8))'s shapes
      ((4, 8), (4, 5, 8))
    """

    _factory = staticmethod(gru)


class Elman(_Stacked):
    """A (multi-layer, bidirectional) Elman RNN over :func:`jaxrnn.stack` of :func:`jaxrnn.elman`.

    Attributes as :class:`LSTM`'s; ``cell_options`` are :func:`jaxrnn.elman`'s.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import jaxrnn.linen
      >>> rnn = jaxrnn.linen.Elman(8, num_layers=2, cell_options={"activation": "relu"})
      >>> x = jnp.ones((4, 5, 3))
      >>> rnn.apply(rnn.init(jax.random.key(0), x), x).shape
      (4, 5, 8)
    """

    _factory = staticmethod(elman)


class LayerNormLSTM(_Stacked):
    """A (multi-layer, bidirectional) LayerNorm LSTM over :func:`jaxrnn.layernorm_lstm`.

    Attributes as :class:`LSTM`'s; ``cell_options`` are :func:`jaxrnn.layernorm_lstm`'s.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import jaxrnn.linen
      >>> rnn = jaxrnn.linen.LayerNormLSTM(8, num_layers=2)
      >>> x = jnp.ones((4, 5, 3))
      >>> rnn.apply(rnn.init(jax.random.key(0), x), x).shape
      (4, 5, 8)
    """

    _factory = staticmethod(layernorm_lstm)

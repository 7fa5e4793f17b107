"""PyTorch weight import and export: ``nn.RNN``, ``nn.LSTM``, ``nn.GRU`` and their cells.

:func:`from_torch` imports a live module (``nn.RNN``, ``nn.LSTM``, ``nn.GRU``,
``nn.RNNCell``, ``nn.LSTMCell``, ``nn.GRUCell``, or any model holding one, with
``prefix=``) or a saved ``state_dict`` (the usual ``.pt`` file of a whole model,
with ``prefix=``); :func:`to_torch_state_dict` exports params back, under a
``prefix`` too, so that ``model.load_state_dict`` takes them.

This is the only module of jaxrnn that imports torch, and only when one of its
functions is called; install it with ``pip install jaxrnn[interop]``.
"""

from __future__ import annotations

import numbers
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn._cell import (
    Array,
    Cell,
    PRNGKey,
    at_least_float32,
    default_activations,
    described_spec,
)
from jaxrnn._checks import default_dtype
from jaxrnn._elman import ElmanParams, ElmanSpec, elman
from jaxrnn._gru import GRUParams, GRUSpec, gru
from jaxrnn._lstm import LSTMCarry, LSTMParams, LSTMSpec, lstm
from jaxrnn._stack import LayerParams, StackParams, stack

__all__ = ["from_torch", "to_torch_state_dict"]

Mode = Literal["lstm", "gru", "rnn_tanh", "rnn_relu"]

_FIELDS = {"weight_ih": "w_ih", "weight_hh": "w_hh", "bias_ih": "b_ih", "bias_hh": "b_hh"}
_GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}
_KIND_OF_GATES = {4: "an LSTM's", 3: "a GRU's", 1: "a plain RNN's"}
_LAYER_KEY = re.compile(r"(weight_ih|weight_hh|bias_ih|bias_hh|weight_hr)_l(\d+)(_reverse)?")
_CELL_KEYS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
_HINT_KEY = re.compile(r"parametrizations\.|_orig$|_mask$|_g$|_v$")


class _Config(NamedTuple):
    """What a PyTorch recurrent module is: its kind, sizes and options."""

    mode: str  # one of _GATES
    is_cell: bool  # nn.*Cell (keys without _l{k})
    input_size: int
    hidden_size: int
    num_layers: int
    bidirectional: bool
    proj_size: int  # 0: no projection, as PyTorch
    bias: bool


def _torch() -> Any:
    try:
        import torch
    except ImportError as e:  # pragma: no cover - exercised only without torch
        raise ImportError("jaxrnn.interop needs PyTorch: pip install 'jaxrnn[interop]'") from e
    return torch


# --------------------------------------------------------------------------------------
# import
# --------------------------------------------------------------------------------------


def from_torch(
    source: Any,
    *,
    prefix: str = "",
    mode: str | None = None,
    batch_first: bool | None = None,
    dropout: float | None = None,
    input_size: int | None = None,
    hidden_size: int | None = None,
    num_layers: int | None = None,
    bidirectional: bool | None = None,
    proj_size: int | None = None,
    bias: bool | None = None,
) -> tuple[Any, Any]:
    """Import a PyTorch recurrent module, or its saved ``state_dict``, as params.

    ``source`` is one of:

    * a live ``nn.RNN``, ``nn.LSTM`` or ``nn.GRU`` (every option is supported:
      ``num_layers``, ``bidirectional``, ``batch_first``, ``bias``,
      ``nonlinearity``, ``dropout`` and ``proj_size``), or any ``nn.Module``
      with ``prefix`` naming such a submodule (``prefix="encoder.lstm."``). The
      weights read are the ones the module computes with (``getattr(module,
      "weight_hh_l0")``), so a module under ``torch.nn.utils.parametrize``,
      ``parametrizations.weight_norm``, ``weight_norm`` or ``prune`` imports
      exactly. Returns ``(params, apply)``, ``params`` a :class:`jaxrnn.StackParams`.
    * a live ``nn.RNNCell``, ``nn.LSTMCell`` or ``nn.GRUCell``. Returns
      ``(params, cell)``: the params of one cell (:class:`jaxrnn.ElmanParams`,
      :class:`jaxrnn.LSTMParams` or :class:`jaxrnn.GRUParams`) and the
      :class:`jaxrnn.Cell` computing it: PyTorch's ``h_1, c_1 = module(x,
      (h_0, c_0))`` is ``(h_1, c_1), _ = cell.step(params, LSTMCarry(h_0, c_0), x)``
      and ``h_1 = module(x, h_0)`` is ``h_1, _ = cell.step(params, h_0, x)``.
    * a ``state_dict`` (a mapping from names to tensors or arrays, such as
      ``torch.load("model.pt")``), read under ``prefix``: keys outside it are
      ignored, keys under it must be exactly a module's (``weight_ih_l0``,
      ``bias_hh_l1_reverse``, ``weight_hr_l0``, ... or a cell's ``weight_ih``,
      ...). The tensors show the input, hidden and projection sizes, the number
      of layers, the directions and the biases, and whether the module is an
      LSTM or a GRU. They do not show ``batch_first``, which must be given for a
      module's ``state_dict``, the ``dropout`` (0 unless given) or a plain
      RNN's nonlinearity: give ``mode="rnn_tanh"`` or ``"rnn_relu"``.

    The hyper-parameter arguments, when given, must agree with the module or the
    tensors; a disagreement raises an error naming the tensor that shows it.

    Params keep the module's dtype: float32, float16, bfloat16 or float64 (the
    last needs JAX's 64-bit mode, ``jax.config.update("jax_enable_x64", True)``;
    without it a float64 module raises instead of silently losing precision).

    ``apply(params, x, hx=None, lengths=None, key=None)`` follows the module's
    own call convention: ``x`` is ``[T, B, I]`` (``[B, T, I]`` with
    ``batch_first``) or unbatched ``[T, I]``; ``hx`` is ``h_0`` of shape
    ``[num_layers * num_directions, B, H]`` (a tuple ``(h_0, c_0)`` for an
    LSTM); it returns ``(output, h_n)`` or ``(output, (h_n, c_n))`` with
    PyTorch's shapes, ``h_n`` and ``c_n`` in the dtype of ``output``.
    ``lengths`` (shape ``[B]``) gives what a ``PackedSequence`` gives: outputs
    are zero past each length and ``h_n`` is taken at each sequence's last
    valid step. Dropout between layers (any rate in [0, 1]) runs only when
    ``key`` is given (PyTorch's training mode).

    Args:
      source: a PyTorch module, or a ``state_dict`` mapping names to tensors or arrays.
      prefix: the name of the recurrent module inside ``source``, ending in a
        dot (``"encoder.lstm."``); ``""`` when ``source`` is the module itself
        or its own ``state_dict``.
      mode: ``"lstm"``, ``"gru"``, ``"rnn_tanh"`` or ``"rnn_relu"`` (PyTorch's
        ``RNNBase.mode`` names, in any case, are accepted). Needed only for a
        plain RNN's ``state_dict``.
      batch_first: the module's ``batch_first``; needed for a module's
        ``state_dict``, not an option of cells.
      dropout: the module's ``dropout`` between layers, in [0, 1]; default 0
        for a ``state_dict``, the module's for a module.
      input_size: checked against the tensors when given.
      hidden_size: checked against the tensors when given.
      num_layers: checked against the tensors when given.
      bidirectional: checked against the tensors when given.
      proj_size: checked against the tensors when given (0: no projection).
      bias: checked against the tensors when given.

    Returns:
      ``(params, apply)`` for a module (or its ``state_dict``) of stacked
      layers; ``(params, cell)`` for a cell (or its ``state_dict``).

    Raises:
      TypeError: ``source`` is neither a supported module nor a mapping; a
        tensor is not floating; float64 tensors without JAX's 64-bit mode.
      ValueError: missing or unknown keys under ``prefix``; tensor shapes
        that disagree with each other or with the given hyper-parameters;
        a hyper-parameter the tensors cannot show is missing.

    Example:
      >>> import torch, jax.numpy as jnp
      >>> from jaxrnn.interop import from_torch
      >>> module = torch.nn.LSTM(4, 8, num_layers=2, batch_first=True)
      >>> params, apply = from_torch(module)
      >>> out, (h_n, c_n) = apply(params, jnp.ones((3, 5, 4)))
      >>> out.shape, h_n.shape
      ((3, 5, 8), (2, 3, 8))

      A whole model's saved ``state_dict``, and a cell:

      >>> class Model(torch.nn.Module):
      ...     def __init__(self):
      ...         super().__init__()
      ...         self.embed = torch.nn.Embedding(10, 4)
      ...         self.lstm = torch.nn.LSTM(4, 8, bidirectional=True, batch_first=True)
      >>> state = Model().state_dict()  # or torch.load("model.pt")
      >>> params, apply = from_torch(state, prefix="lstm.", batch_first=True)
      >>> apply(params, jnp.ones((3, 5, 4)))[0].shape
      (3, 5, 16)
      >>> cell_params, cell = from_torch(torch.nn.GRUCell(4, 8))
      >>> h, y = cell.step(cell_params, cell.initial_carry((3,)), jnp.ones((3, 4)))
      >>> h.shape
      (3, 8)
    """
    torch = _torch()
    if not isinstance(prefix, str):
        raise TypeError(f"prefix: expected a str such as 'encoder.lstm.', got {prefix!r}")
    given: dict[str, Any] = {
        "input_size": input_size,
        "hidden_size": hidden_size,
        "num_layers": num_layers,
        "bidirectional": bidirectional,
        "proj_size": proj_size,
        "bias": bias,
    }
    given = {name: value for name, value in given.items() if value is not None}
    if "proj_size" in given:
        given["proj_size"] = given["proj_size"] or 0
    wanted_mode = None if mode is None else _check_mode(mode)
    if dropout is not None:
        _check_dropout(dropout)

    if isinstance(source, torch.nn.Module):
        module = _submodule(source, prefix)
        config, options, tensors = _read_module(module)
        where = f"the module {prefix[:-1]!r}" if prefix else "the module"
        _check_given(given, config, lambda name: f"{where} has {name}={getattr(config, name)!r}")
        if wanted_mode is not None and wanted_mode != config.mode:
            raise ValueError(f"mode: given {mode!r}, but {where} is {config.mode!r}")
        for name, value in (("batch_first", batch_first), ("dropout", dropout)):
            if value is not None and name not in options:
                raise ValueError(f"{name}: not an option of {type(module).__name__}")
            if value is not None and value != options[name]:
                raise ValueError(f"{name}: given {value!r}, but {where} has {options[name]!r}")
        arrays = _to_jax(tensors, "")
    elif isinstance(source, Mapping):
        tensors = _select(source, prefix)
        config = _infer(tensors, prefix, wanted_mode, given, source)
        _check_keys_and_shapes(tensors, config, prefix)
        if config.is_cell:
            for name, value in (("batch_first", batch_first), ("dropout", dropout)):
                if value is not None:
                    raise ValueError(
                        f"{name}: the tensors under prefix {prefix!r} are a cell's "
                        f"(nn.{_cell_class(config)}), which has no {name}"
                    )
            options = {}
        else:
            if batch_first is None:
                raise ValueError(
                    "batch_first: a state_dict does not record it; pass batch_first=True "
                    "or batch_first=False as the module was built"
                )
            if not isinstance(batch_first, bool):
                raise TypeError(f"batch_first: expected a bool, got {batch_first!r}")
            options = {"batch_first": batch_first, "dropout": 0.0 if dropout is None else dropout}
        arrays = _to_jax(tensors, prefix)
    else:
        raise TypeError(
            "source: expected a torch.nn.RNN, LSTM, GRU, RNNCell, LSTMCell or GRUCell "
            f"module, or a state_dict mapping names to tensors, got {type(source).__name__}"
        )

    cell = _cell_for(config)
    if config.is_cell:
        return _cell_params(arrays, config, ""), cell
    params = _stack_params(arrays, config)
    apply = _make_apply(cell, config, options["batch_first"], float(options["dropout"]))
    return params, apply


def _check_mode(mode: Any) -> str:
    name = mode.lower() if isinstance(mode, str) else mode
    if name not in _GATES:
        raise ValueError(
            f"mode: expected 'lstm', 'gru', 'rnn_tanh' or 'rnn_relu', got {mode!r}"
            + (" (a plain RNN's nonlinearity is part of its mode)" if name == "rnn" else "")
        )
    return str(name)


def _check_dropout(dropout: Any) -> None:
    # PyTorch's own check (RNNBase.__init__): a number in [0, 1], not a bool.
    if (
        isinstance(dropout, bool)
        or not isinstance(dropout, numbers.Real)
        or not 0 <= float(dropout) <= 1
    ):
        raise ValueError(f"dropout: expected a rate in [0, 1], got {dropout!r}")


def _cell_class(config: _Config) -> str:
    return {"lstm": "LSTMCell", "gru": "GRUCell"}.get(config.mode, "RNNCell")


def _rnn_modules(root: Any) -> list[str]:
    torch = _torch()
    kinds = (torch.nn.RNNBase, torch.nn.RNNCellBase)
    return [name for name, m in root.named_modules() if name and isinstance(m, kinds)]


def _submodule(root: Any, prefix: str) -> Any:
    torch = _torch()
    module = root
    if prefix:
        if not prefix.endswith("."):
            raise ValueError(
                f"prefix: expected a module name ending in '.', such as {prefix + '.'!r}, "
                f"got {prefix!r}"
            )
        try:
            module = root.get_submodule(prefix[:-1])
        except AttributeError as e:
            found = [name + "." for name in _rnn_modules(root)]
            raise ValueError(
                f"prefix: {type(root).__name__} has no submodule {prefix[:-1]!r}; "
                f"its recurrent modules are under {found}"
            ) from e
    if not isinstance(module, torch.nn.RNNBase | torch.nn.RNNCellBase):
        found = [name + "." for name in _rnn_modules(module)]
        hint = f"; pass prefix= one of {found}" if found else ""
        raise TypeError(
            "module: expected torch.nn.RNN, LSTM, GRU, RNNCell, LSTMCell or GRUCell, "
            f"got {type(module).__name__}{hint}"
        )
    return module


def _read_module(module: Any) -> tuple[_Config, dict[str, Any], dict[str, Any]]:
    """The module's config, options and effective tensors (parametrized, pruned, ...)."""
    torch = _torch()
    if isinstance(module, torch.nn.RNNCellBase):
        if isinstance(module, torch.nn.LSTMCell):
            mode = "lstm"
        elif isinstance(module, torch.nn.GRUCell):
            mode = "gru"
        elif isinstance(module, torch.nn.RNNCell):
            mode = f"rnn_{module.nonlinearity}"
        else:
            raise TypeError(f"module: unsupported cell {type(module).__name__}")
        config = _Config(
            mode, True, module.input_size, module.hidden_size, 1, False, 0, bool(module.bias)
        )
        options: dict[str, Any] = {}
    else:
        mode = module.mode.lower()
        if mode not in _GATES:
            raise TypeError(f"module: unsupported mode {module.mode!r}")
        config = _Config(
            mode,
            False,
            module.input_size,
            module.hidden_size,
            module.num_layers,
            bool(module.bidirectional),
            int(getattr(module, "proj_size", 0) or 0),
            bool(module.bias),
        )
        options = {"batch_first": bool(module.batch_first), "dropout": float(module.dropout)}
    tensors = {name: _effective(module, name) for name in _expected_shapes(config)}
    return config, options, tensors


def _effective(module: Any, name: str) -> Any:
    """The tensor ``module`` computes with under ``name``, not its ``state_dict`` entry.

    ``torch.nn.utils.parametrize`` computes it on attribute access; the old-style
    ``weight_norm`` and ``prune`` store it as an attribute that only their forward
    pre-hook refreshes, so it is recomputed here from the hook, as a forward would.
    """
    torch = _torch()
    from torch.nn.utils.prune import BasePruningMethod
    from torch.nn.utils.weight_norm import WeightNorm

    with torch.no_grad():
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, WeightNorm) and hook.name == name:
                return hook.compute_weight(module)
            if isinstance(hook, BasePruningMethod) and hook._tensor_name == name:
                return hook.apply_mask(module)
        value = getattr(module, name, None)
    if value is None:
        raise ValueError(f"module: {type(module).__name__} has no tensor {name!r}")
    return value


def _select(state: Mapping[Any, Any], prefix: str) -> dict[str, Any]:
    """The entries of ``state`` under ``prefix``, with the prefix removed."""
    if prefix and not prefix.endswith("."):
        raise ValueError(
            f"prefix: expected a module name ending in '.', such as {prefix + '.'!r}, "
            f"got {prefix!r}"
        )
    under = {
        key[len(prefix) :]: value
        for key, value in state.items()
        if isinstance(key, str) and key.startswith(prefix)
    }
    if not under:
        raise ValueError(
            f"prefix: no key of the state_dict starts with {prefix!r}; " + _where_rnns_are(state)
        )
    return under


def _where_rnns_are(state: Mapping[Any, Any]) -> str:
    found = sorted(
        {
            key[: -len(marker)]
            for key in state
            if isinstance(key, str)
            for marker in ("weight_ih_l0", "weight_ih")
            if key.endswith(marker) and (key == marker or key[: -len(marker)].endswith("."))
        }
    )
    if found:
        return f"recurrent modules' weights are under prefix {' or '.join(map(repr, found))}"
    keys = [str(k) for k in list(state)[:8]]
    return f"no recurrent module's weights (weight_ih_l0 or weight_ih) in it; its keys: {keys}"


def _shape(value: Any, key: str) -> tuple[int, ...]:
    shape = getattr(value, "shape", None)
    if shape is None:
        raise TypeError(f"{key}: expected a tensor or an array, got {type(value).__name__}")
    return tuple(int(n) for n in shape)


def _infer(
    tensors: dict[str, Any],
    prefix: str,
    mode: str | None,
    given: dict[str, Any],
    state: Mapping[Any, Any],
) -> _Config:
    """The config the tensors show (with ``mode``), checked against ``given``."""
    keys = set(tensors)
    is_cell = not any(_LAYER_KEY.fullmatch(key) for key in keys) and bool(keys & set(_CELL_KEYS))
    known = set(_CELL_KEYS) if is_cell else {k for k in keys if _LAYER_KEY.fullmatch(k)}
    unknown = sorted(keys - known)
    if unknown:
        hint = ""
        if any(_HINT_KEY.search(key) for key in unknown):
            hint = (
                " (the state_dict of a parametrized, weight-normed or pruned module keeps the "
                "tensors the weights are computed from: import the live module, or save it "
                "after torch.nn.utils.parametrize.remove_parametrizations, "
                "torch.nn.utils.remove_weight_norm or torch.nn.utils.prune.remove)"
            )
        listed = [prefix + k for k in unknown[:10]] + (["..."] if len(unknown) > 10 else [])
        raise ValueError(
            f"state_dict: unexpected keys under prefix {prefix!r}: {listed}{hint}; "
            + _where_rnns_are(state)
        )
    first = "" if is_cell else "_l0"
    needed = [f"weight_ih{first}", f"weight_hh{first}"]
    missing = [prefix + k for k in needed if k not in keys]
    if missing:
        raise ValueError(f"state_dict: missing keys under prefix {prefix!r}: {missing}")
    w_ih, w_hh = (_shape(tensors[k], prefix + k) for k in needed)
    for key, shape in zip(needed, (w_ih, w_hh), strict=True):
        if len(shape) != 2:
            raise ValueError(f"{prefix}{key}: expected a matrix, got shape {shape}")
    proj, hidden = 0, w_hh[1]
    if not is_cell and "weight_hr_l0" in keys:
        w_hr = _shape(tensors["weight_hr_l0"], prefix + "weight_hr_l0")
        if len(w_hr) != 2:
            raise ValueError(f"{prefix}weight_hr_l0: expected a matrix, got shape {w_hr}")
        proj, hidden = w_hr
        if w_hh[1] != proj:
            raise ValueError(
                f"{prefix}weight_hh{first}: expected {proj} columns (proj_size, from "
                f"{prefix}weight_hr_l0 of shape {w_hr}), got shape {w_hh}"
            )
    gates = w_hh[0] // hidden if hidden and w_hh[0] % hidden == 0 else 0
    if mode is None:
        if gates not in _KIND_OF_GATES:
            raise ValueError(
                f"{prefix}weight_hh{first}: expected shape [4*H, H] (LSTM), [3*H, H] (GRU) "
                f"or [H, H] (RNN), got {w_hh}"
            )
        if gates == 1:
            raise ValueError(
                f"mode: the tensors under prefix {prefix!r} are a plain RNN's ({prefix}weight_hh"
                f"{first} of shape {w_hh}), and a state_dict does not record its "
                "nonlinearity: pass mode='rnn_tanh' or mode='rnn_relu'"
            )
        mode = "lstm" if gates == 4 else "gru"
    elif gates != _GATES[mode]:
        what = _KIND_OF_GATES.get(gates, "no PyTorch module's")
        want = _GATES[mode]
        raise ValueError(
            f"{prefix}weight_hh{first}: mode={mode!r} expects shape "
            f"({want * hidden}, {w_hh[1]}) ({want} gate blocks of hidden_size={hidden}), "
            f"got {w_hh}, which is {what}"
        )
    if proj and mode != "lstm":
        raise ValueError(f"{prefix}weight_hr_l0: only an LSTM has a projection, got a {mode}")
    if is_cell:
        layers, bidirectional = 1, False
    else:
        matches = [m for m in map(_LAYER_KEY.fullmatch, keys) if m]
        layers = 1 + max(int(m.group(2)) for m in matches)
        bidirectional = any(m.group(3) for m in matches)
    has_bias = f"bias_ih{first}" in keys or f"bias_hh{first}" in keys
    config = _Config(mode, is_cell, w_ih[1], hidden, layers, bidirectional, proj, has_bias)

    last = f"_l{layers - 1}"
    evidence = {
        "input_size": f"{prefix}weight_ih{first} has shape {w_ih}",
        "hidden_size": f"{prefix}weight_hh{first} has shape {w_hh}"
        + (f" and {prefix}weight_hr_l0 shape ({proj}, {hidden})" if proj else ""),
        "num_layers": f"the last layer's key is {prefix}weight_ih{last}",
        "bidirectional": "keys ending in _reverse are "
        + ("present" if bidirectional else "absent"),
        "proj_size": f"{prefix}weight_hr_l0 is "
        + (f"of shape ({proj}, {hidden})" if proj else "absent"),
        "bias": f"{prefix}bias_ih{first} is " + ("present" if has_bias else "absent"),
    }
    if is_cell:
        evidence["num_layers"] = evidence["bidirectional"] = evidence["proj_size"] = (
            f"the tensors under prefix {prefix!r} are a cell's (nn.{_cell_class(config)})"
        )

    def show(name: str) -> str:
        return f"the state_dict has {name}={getattr(config, name)!r} ({evidence[name]})"

    _check_given(given, config, show)
    return config


def _check_given(given: dict[str, Any], config: _Config, show: Callable[[str], str]) -> None:
    for name, value in given.items():
        actual = getattr(config, name)
        if isinstance(actual, bool) != isinstance(value, bool) or value != actual:
            raise ValueError(f"{name}: given {value!r}, but {show(name)}")


def _expected_shapes(config: _Config) -> dict[str, tuple[int, ...]]:
    """PyTorch's parameter names of a module of ``config``, in its order, with their shapes."""
    gates = _GATES[config.mode] * config.hidden_size
    out = config.proj_size or config.hidden_size
    directions = 2 if config.bidirectional else 1

    def one(where: str, input_size: int) -> dict[str, tuple[int, ...]]:
        shapes: dict[str, tuple[int, ...]] = {
            f"weight_ih{where}": (gates, input_size),
            f"weight_hh{where}": (gates, out),
        }
        if config.bias:
            shapes[f"bias_ih{where}"] = (gates,)
            shapes[f"bias_hh{where}"] = (gates,)
        if config.proj_size:
            shapes[f"weight_hr{where}"] = (config.proj_size, config.hidden_size)
        return shapes

    if config.is_cell:
        return one("", config.input_size)
    shapes: dict[str, tuple[int, ...]] = {}
    for layer in range(config.num_layers):
        size = config.input_size if layer == 0 else out * directions
        for suffix in ("", "_reverse")[:directions]:
            shapes.update(one(f"_l{layer}{suffix}", size))
    return shapes


def _check_keys_and_shapes(tensors: dict[str, Any], config: _Config, prefix: str) -> None:
    expected = _expected_shapes(config)
    missing = [prefix + k for k in expected if k not in tensors]
    extra = sorted(prefix + k for k in tensors if k not in expected)
    if missing or extra:
        parts = [f"missing {missing}"] if missing else []
        parts += [f"unexpected {extra}"] if extra else []
        raise ValueError(
            f"state_dict: keys under prefix {prefix!r} do not form one module "
            f"({config.mode}, num_layers={config.num_layers}, bidirectional="
            f"{config.bidirectional}, bias={config.bias}): " + "; ".join(parts)
        )
    for key, shape in expected.items():
        got = _shape(tensors[key], prefix + key)
        if got != shape:
            raise ValueError(f"{prefix}{key}: expected shape {shape}, got {got}")


def _to_jax(tensors: dict[str, Any], prefix: str) -> dict[str, Array]:
    """Tensors (torch, numpy or JAX) as JAX arrays of their own, common, floating dtype."""
    torch = _torch()
    arrays: dict[str, np.ndarray] = {}
    for key, value in tensors.items():
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu()
            if value.dtype == torch.bfloat16:  # numpy has no bfloat16; the cast is exact
                array = value.to(torch.float32).numpy().astype(jnp.bfloat16)
            else:
                array = value.numpy()
        else:
            array = np.asarray(value)
        if not jnp.issubdtype(array.dtype, jnp.floating):
            raise TypeError(f"{prefix}{key}: expected a floating tensor, got dtype {array.dtype}")
        arrays[key] = array
    dtypes = {np.dtype(a.dtype) for a in arrays.values()}
    if len(dtypes) > 1:
        found = {prefix + k: str(a.dtype) for k, a in arrays.items()}
        raise TypeError(f"state_dict: expected tensors of one dtype, got {found}")
    (dtype,) = dtypes
    if dtype == np.float64 and not jax.config.read("jax_enable_x64"):
        raise TypeError(
            "the module's tensors are float64, but JAX's 64-bit mode is off, so JAX would "
            "make them float32: turn it on with jax.config.update('jax_enable_x64', True) "
            "at startup (or the environment variable JAX_ENABLE_X64=1), or import under "
            "`with jax.enable_x64(True):`; or import float32 params from module.float()"
        )
    return {key: jnp.asarray(a) for key, a in arrays.items()}


def _cell_for(config: _Config) -> Cell:
    if config.mode == "lstm":
        return lstm(config.hidden_size, proj_size=config.proj_size or None, use_bias=config.bias)
    if config.mode == "gru":
        return gru(config.hidden_size, use_bias=config.bias)
    activation = config.mode.removeprefix("rnn_")
    return elman(config.hidden_size, activation=activation, use_bias=config.bias)


def _cell_params(arrays: dict[str, Array], config: _Config, where: str) -> Any:
    fields: dict[str, Any] = {
        name: arrays.get(f"{torch_name}{where}") for torch_name, name in _FIELDS.items()
    }
    if config.mode == "lstm":
        return LSTMParams(**fields, w_hr=arrays.get(f"weight_hr{where}"))
    if config.mode == "gru":
        return GRUParams(**fields)
    return ElmanParams(**fields)


def _stack_params(arrays: dict[str, Array], config: _Config) -> StackParams:
    layers = []
    for layer in range(config.num_layers):
        forward = _cell_params(arrays, config, f"_l{layer}")
        backward = _cell_params(arrays, config, f"_l{layer}_reverse")
        layers.append(LayerParams(forward, backward if config.bidirectional else None))
    rest = None
    if len(layers) > 1:
        rest = jax.tree.map(lambda *a: jnp.stack(a), *layers[1:])
    return StackParams(layers[0], rest)


def _make_apply(
    cell: Cell, config: _Config, batch_first: bool, dropout: float
) -> Callable[..., Any]:
    num_layers = config.num_layers
    num_directions = 2 if config.bidirectional else 1
    state_sizes: tuple[int, ...] = (config.hidden_size,)
    if config.mode == "lstm":
        state_sizes = (config.proj_size or config.hidden_size, config.hidden_size)
    is_lstm = len(state_sizes) == 2
    # jaxrnn.stack takes rates in [0, 1); at rate 1 (PyTorch's training mode) every
    # layer after the first reads zeros, so each runs alone on zeros (_run_dropped).
    rnn = stack(
        cell,
        num_layers=num_layers,
        bidirectional=config.bidirectional,
        dropout=0.0 if dropout == 1.0 else dropout,
    )
    one = stack(cell, bidirectional=config.bidirectional)

    def run_dropped(
        params: StackParams, x: Array, carry: Any, lengths: Array | None
    ) -> tuple[Any, Array]:
        if carry is None:
            carry = rnn.initial_carry(x.shape[1:-1], default_dtype(params, x))
        first, ys = one.apply(
            StackParams(params.first, None),
            x,
            carry=jax.tree.map(lambda a: a[:1], carry),
            lengths=lengths,
        )
        if params.rest is None:
            return first, ys
        zeros = jnp.zeros_like(ys)

        def layer(layer_params: LayerParams, layer_carry: Any) -> tuple[Any, Array]:
            final, ys = one.apply(
                StackParams(layer_params, None),
                zeros,
                carry=jax.tree.map(lambda a: a[None], layer_carry),
                lengths=lengths,
            )
            return jax.tree.map(lambda a: a[0], final), ys

        rest, rest_ys = jax.vmap(layer)(params.rest, jax.tree.map(lambda a: a[1:], carry))
        return jax.tree.map(lambda a, b: jnp.concatenate([a, b]), first, rest), rest_ys[-1]

    def apply(
        params: StackParams,
        x: Array,
        hx: Any = None,
        lengths: Array | None = None,
        key: PRNGKey | None = None,
    ) -> tuple[Array, Any]:
        torch = _torch()
        if isinstance(x, torch.nn.utils.rnn.PackedSequence):
            raise TypeError(
                "x: got a PackedSequence; pass the padded batch and its lengths instead: "
                "x, lengths = torch.nn.utils.rnn.pad_packed_sequence(packed, "
                f"batch_first={batch_first}), then apply(params, x, lengths=lengths); "
                "outputs past each length are zero, as pad_packed_sequence gives them"
            )
        x = jnp.asarray(x)
        if x.ndim not in (2, 3):
            raise ValueError(
                f"x: expected shape [T, B, I], [B, T, I] or unbatched [T, I], "
                f"got shape {tuple(x.shape)}"
            )
        batched = x.ndim == 3
        if not batched:
            x = x[:, None]
        elif batch_first:
            x = jnp.swapaxes(x, 0, 1)
        batch = x.shape[1]
        carry = None
        if hx is not None:
            carry = _carry_from_torch(hx, state_sizes, num_layers, num_directions, batch, batched)
        if lengths is not None and not batched:
            lengths = jnp.reshape(jnp.asarray(lengths), (1,))
        if key is not None and dropout == 1.0 and num_layers > 1:
            final, ys = run_dropped(params, x, carry, lengths)
        else:
            final, ys = rnn.apply(params, x, carry=carry, lengths=lengths, key=key)
        finals = jax.tree.map(
            lambda a: a.reshape(num_layers * num_directions, *a.shape[2:]).astype(ys.dtype), final
        )
        if not batched:
            ys, finals = ys[:, 0], jax.tree.map(lambda a: a[:, 0], finals)
        elif batch_first:
            ys = jnp.swapaxes(ys, 0, 1)
        return ys, (tuple(finals) if is_lstm else finals)

    return apply


def _carry_from_torch(
    hx: Any,
    state_sizes: tuple[int, ...],
    num_layers: int,
    num_directions: int,
    batch: int,
    batched: bool,
) -> Any:
    is_lstm = len(state_sizes) == 2
    if is_lstm != isinstance(hx, tuple | list):
        want = "a tuple (h_0, c_0) for an LSTM" if is_lstm else "an array h_0"
        raise TypeError(f"hx: expected {want}, got {type(hx).__name__}")
    names = ("h_0", "c_0") if is_lstm else ("h_0",)
    parts = tuple(hx) if is_lstm else (hx,)
    if len(parts) != len(names):
        raise TypeError(f"hx: expected a tuple (h_0, c_0) for an LSTM, got {len(parts)} arrays")
    out = []
    lead = num_layers * num_directions
    for name, part, size in zip(names, parts, state_sizes, strict=True):
        part = jnp.asarray(part)
        shape = (lead, batch, size) if batched else (lead, size)
        if tuple(part.shape) != shape:
            raise ValueError(f"hx ({name}): expected shape {shape}, got {tuple(part.shape)}")
        if not jnp.issubdtype(part.dtype, jnp.floating):
            raise TypeError(f"hx ({name}): expected a floating dtype, got {part.dtype}")
        part = part.astype(at_least_float32(part.dtype))  # jaxrnn keeps carries in >= float32
        if not batched:
            part = part[:, None]
        out.append(part.reshape(num_layers, num_directions, *part.shape[1:]))
    return LSTMCarry(*out) if is_lstm else out[0]


# --------------------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------------------


def to_torch_state_dict(
    params: Any, *, prefix: str = "", cell: Cell | None = None
) -> OrderedDict[str, Any]:
    """Export params as a PyTorch ``state_dict``, under ``prefix`` for a whole model.

    The inverse of :func:`from_torch`:

    * :class:`jaxrnn.StackParams` of a :func:`jaxrnn.stack` of
      :func:`jaxrnn.elman` (without output layer), :func:`jaxrnn.lstm` or
      :func:`jaxrnn.gru` cells give the keys of ``nn.RNN``, ``nn.LSTM`` or
      ``nn.GRU`` (``weight_ih_l0``, ``bias_hh_l1_reverse``, ``weight_hr_l0``, ...);
    * the params of one such cell (:class:`jaxrnn.ElmanParams`,
      :class:`jaxrnn.LSTMParams` without projection, :class:`jaxrnn.GRUParams`)
      give the keys of ``nn.RNNCell``, ``nn.LSTMCell`` or ``nn.GRUCell``
      (``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh``).

    Every key starts with ``prefix``, so ``model.load_state_dict(
    to_torch_state_dict(params, prefix="encoder.lstm."), strict=False)`` loads
    a submodule of a whole model. Tensors keep the params' dtype (bfloat16,
    float16, float32 or float64). It also names any pytree of that structure,
    e.g. gradients with respect to params.

    PyTorch computes σ and tanh in its LSTM and GRU, and tanh or relu in its
    RNN, which params alone cannot tell: pass the ``cell`` the params are for
    to have a cell with other activations (``gate_fn``, ``activation_fn``,
    another Elman ``activation``) or a replaced step refused, rather than
    exported to a module that computes something else.

    Args:
      params: :class:`jaxrnn.StackParams`, or the params of one cell (see above).
      prefix: prepended to every key; the submodule's name and a dot, such as
        ``"encoder.lstm."``.
      cell: the :class:`jaxrnn.Cell` of the params (of every layer of the stack),
        checked to be one PyTorch computes; None (default) checks nothing.

    Returns:
      An ordered dict from PyTorch's parameter names, in PyTorch's order, to
      CPU torch tensors.

    Raises:
      TypeError: ``params`` are not those of an elman, lstm or gru cell or
        stack; ``cell`` is not a :class:`jaxrnn.Cell`.
      ValueError: an Elman output layer, a single LSTM cell with a projection,
        or a ``cell`` PyTorch does not compute or that does not match ``params``.

    Example:
      >>> import jax, torch, jaxrnn
      >>> from jaxrnn.interop import to_torch_state_dict
      >>> params = jaxrnn.stack(jaxrnn.gru(8), bidirectional=True).init(jax.random.key(0), 3)
      >>> module = torch.nn.GRU(3, 8, bidirectional=True)
      >>> module.load_state_dict(to_torch_state_dict(params))
      <All keys matched successfully>
      >>> model = torch.nn.Sequential(torch.nn.LSTMCell(3, 8))
      >>> cell = jaxrnn.lstm(8)
      >>> state = to_torch_state_dict(cell.init(jax.random.key(1), 3), prefix="0.", cell=cell)
      >>> list(state)
      ['0.weight_ih', '0.weight_hh', '0.bias_ih', '0.bias_hh']
      >>> model.load_state_dict(state)
      <All keys matched successfully>
    """
    torch = _torch()
    if not isinstance(prefix, str):
        raise TypeError(f"prefix: expected a str such as 'encoder.lstm.', got {prefix!r}")
    params_type = None if cell is None else _exportable_params_type(cell)
    if isinstance(params, StackParams):
        layers = [params.first]
        if params.rest is not None:
            num_rest = len(jax.tree.leaves(params.rest)[0])
            layers += [jax.tree.map(lambda a, i=i: a[i], params.rest) for i in range(num_rest)]
        named = [
            (f"_l{index}{suffix}", cell_params)
            for index, layer in enumerate(layers)
            for suffix, cell_params in (("", layer.forward), ("_reverse", layer.backward))
            if cell_params is not None
        ]
    elif isinstance(params, ElmanParams | LSTMParams | GRUParams):
        if isinstance(params, LSTMParams) and params.w_hr is not None:
            raise ValueError(
                "params: nn.LSTMCell has no proj_size, so LSTM cell params with a projection "
                "(w_hr) have no PyTorch equivalent; a stack of them exports to nn.LSTM"
            )
        named = [("", params)]
    else:
        raise TypeError(
            "params: expected StackParams or the params of one elman, lstm or gru cell, "
            f"got {type(params).__name__}"
        )
    state: OrderedDict[str, Any] = OrderedDict()
    for where, cell_params in named:
        if not isinstance(cell_params, ElmanParams | LSTMParams | GRUParams):
            raise TypeError(
                "params: expected the params of elman, lstm or gru cells, "
                f"got {type(cell_params).__name__}"
            )
        if params_type is not None and not isinstance(cell_params, params_type):
            raise ValueError(
                f"cell: its params are {params_type.__name__}, "
                f"but params hold {type(cell_params).__name__}"
            )
        if isinstance(cell_params, ElmanParams) and cell_params.w_hy is not None:
            raise ValueError(
                "params: an Elman cell with an output layer (w_hy) has no PyTorch equivalent"
            )
        names = dict(_FIELDS)
        if isinstance(cell_params, LSTMParams):
            names["weight_hr"] = "w_hr"
        for torch_name, name in names.items():
            value = getattr(cell_params, name)
            if value is not None:
                state[f"{prefix}{torch_name}{where}"] = _to_tensor(torch, value)
    return state


def _to_tensor(torch: Any, value: Any) -> Any:
    array = np.asarray(value)
    if array.dtype == jnp.bfloat16:  # torch cannot read numpy's bfloat16; the casts are exact
        return torch.from_numpy(array.astype(np.float32)).to(torch.bfloat16)
    return torch.from_numpy(np.array(array, copy=True))


def _exportable_params_type(cell: Any) -> type:
    """The params type of ``cell`` if PyTorch computes it, else raise."""
    if not isinstance(cell, Cell):
        raise TypeError(f"cell: expected a jaxrnn.Cell, got {type(cell).__name__}")
    spec = described_spec(cell)
    if isinstance(spec, LSTMSpec | GRUSpec):
        if not default_activations(spec.gate_fn, spec.activation_fn):
            raise ValueError(
                "cell: PyTorch's LSTM and GRU compute sigmoid gates and tanh; this cell's "
                f"gate_fn={spec.gate_fn!r}, activation_fn={spec.activation_fn!r} have no "
                "PyTorch equivalent"
            )
        return LSTMParams if isinstance(spec, LSTMSpec) else GRUParams
    if isinstance(spec, ElmanSpec):
        if spec.activation is not jnp.tanh and spec.activation is not jax.nn.relu:
            raise ValueError(
                "cell: PyTorch's RNN computes tanh or relu; this Elman cell's activation "
                f"{spec.activation!r} has no PyTorch equivalent"
            )
        if spec.output_activation is not None:
            raise ValueError("cell: an Elman cell with an output layer has no PyTorch equivalent")
        return ElmanParams
    if cell.spec is None:
        got = "a cell of your own"
    elif spec is None:
        got = f"a {type(cell.spec).__name__} cell whose step is replaced or wrapped"
    else:
        got = f"a cell with a {type(spec).__name__}"
    raise ValueError(
        "cell: expected a jaxrnn.elman, lstm or gru cell with its own step (PyTorch's "
        f"modules compute nothing else), got {got}"
    )

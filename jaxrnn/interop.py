"""PyTorch weight import and export for ``nn.RNN``, ``nn.LSTM`` and ``nn.GRU``.

This is the only module of jaxrnn that imports torch, and only when one of its
functions is called; install it with ``pip install jaxrnn[interop]``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn._cell import Array, Cell, PRNGKey
from jaxrnn._elman import ElmanParams, elman
from jaxrnn._gru import GRUParams, gru
from jaxrnn._lstm import LSTMCarry, LSTMParams, lstm
from jaxrnn._stack import LayerParams, Stack, StackParams, stack

__all__ = ["from_torch", "to_torch_state_dict"]

_FIELDS = {"weight_ih": "w_ih", "weight_hh": "w_hh", "bias_ih": "b_ih", "bias_hh": "b_hh"}


def _torch() -> Any:
    try:
        import torch
    except ImportError as e:  # pragma: no cover - exercised only without torch
        raise ImportError("jaxrnn.interop needs PyTorch: pip install 'jaxrnn[interop]'") from e
    return torch


def _cell_for(module: Any) -> Cell:
    torch = _torch()
    if isinstance(module, torch.nn.LSTM):
        proj = module.proj_size or None
        return lstm(module.hidden_size, proj_size=proj, use_bias=module.bias)
    if isinstance(module, torch.nn.GRU):
        return gru(module.hidden_size, use_bias=module.bias)
    if isinstance(module, torch.nn.RNN):
        return elman(module.hidden_size, activation=module.nonlinearity, use_bias=module.bias)
    raise TypeError(
        f"module: expected torch.nn.RNN, torch.nn.LSTM or torch.nn.GRU, got {type(module).__name__}"
    )


def from_torch(module: Any) -> tuple[StackParams, Callable[..., Any]]:
    """Import a PyTorch ``nn.RNN``, ``nn.LSTM`` or ``nn.GRU`` as params and an apply function.

    Every option of the modules is supported: ``num_layers``, ``bidirectional``,
    ``batch_first``, ``bias``, ``nonlinearity``, ``dropout`` and ``proj_size``.

    ``apply(params, x, hx=None, lengths=None, key=None)`` follows the module's
    own call convention: ``x`` is ``[T, B, I]`` (``[B, T, I]`` with
    ``batch_first``) or unbatched ``[T, I]``; ``hx`` is ``h_0`` of shape
    ``[num_layers * num_directions, B, H]`` (a tuple ``(h_0, c_0)`` for an
    LSTM); it returns ``(output, h_n)`` or ``(output, (h_n, c_n))`` with
    PyTorch's shapes. ``lengths`` (shape ``[B]``) gives what a
    ``PackedSequence`` gives: outputs are zero past each length and ``h_n`` is
    taken at each sequence's last valid step. Dropout between layers runs
    only when ``key`` is given (PyTorch's training mode).

    Args:
      module: the PyTorch module.

    Returns:
      ``(params, apply)``: :class:`jaxrnn.StackParams` with the module's
      weights (float32 or float64, as the module's), and the apply function.

    Example:
      >>> import torch, jax.numpy as jnp
      >>> from jaxrnn.interop import from_torch
      >>> module = torch.nn.LSTM(4, 8, num_layers=2, batch_first=True)
      >>> params, apply = from_torch(module)
      >>> out, (h_n, c_n) = apply(params, jnp.ones((3, 5, 4)))
      >>> out.shape, h_n.shape
      ((3, 5, 8), (2, 3, 8))
    """
    cell = _cell_for(module)
    rnn = stack(
        cell,
        num_layers=module.num_layers,
        bidirectional=module.bidirectional,
        dropout=float(module.dropout),
    )
    params = _params_from_state_dict(module)
    state_sizes: tuple[int, ...] = (module.hidden_size,)
    if isinstance(module, _torch().nn.LSTM):
        state_sizes = (module.proj_size or module.hidden_size, module.hidden_size)
    apply = _make_apply(
        rnn, module.num_layers, 2 if module.bidirectional else 1, module.batch_first, state_sizes
    )
    return params, apply


def _params_from_state_dict(module: Any) -> StackParams:
    state = {k: np.asarray(v.detach().cpu().numpy()) for k, v in module.state_dict().items()}
    directions = ["", "_reverse"] if module.bidirectional else [""]
    is_lstm = isinstance(module, _torch().nn.LSTM)
    is_elman = not is_lstm and not isinstance(module, _torch().nn.GRU)
    layers = []
    for layer in range(module.num_layers):
        cells: list[Any] = []
        for suffix in directions:
            fields: dict[str, Any] = {}
            for torch_name, name in _FIELDS.items():
                value = state.get(f"{torch_name}_l{layer}{suffix}")
                fields[name] = None if value is None else jnp.asarray(value)
            if is_lstm:
                w_hr = state.get(f"weight_hr_l{layer}{suffix}")
                cells.append(LSTMParams(**fields, w_hr=None if w_hr is None else jnp.asarray(w_hr)))
            elif is_elman:
                cells.append(ElmanParams(**fields))
            else:
                cells.append(GRUParams(**fields))
        layers.append(LayerParams(cells[0], cells[1] if len(cells) > 1 else None))
    rest = None
    if len(layers) > 1:
        rest = jax.tree.map(lambda *a: jnp.stack(a), *layers[1:])
    return StackParams(layers[0], rest)


def _make_apply(
    rnn: Stack,
    num_layers: int,
    num_directions: int,
    batch_first: bool,
    state_sizes: tuple[int, ...],
) -> Callable[..., Any]:
    is_lstm = len(state_sizes) == 2

    def apply(
        params: StackParams,
        x: Array,
        hx: Any = None,
        lengths: Array | None = None,
        key: PRNGKey | None = None,
    ) -> tuple[Array, Any]:
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
        final, ys = rnn.apply(params, x, carry=carry, lengths=lengths, key=key)
        finals = jax.tree.map(lambda a: a.reshape(num_layers * num_directions, *a.shape[2:]), final)
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
        if not batched:
            part = part[:, None]
        out.append(part.reshape(num_layers, num_directions, *part.shape[1:]))
    return LSTMCarry(*out) if is_lstm else out[0]


def to_torch_state_dict(params: StackParams) -> OrderedDict[str, Any]:
    """Export stack params as a PyTorch ``state_dict`` for ``nn.RNN``, ``nn.LSTM`` or ``nn.GRU``.

    The inverse of :func:`from_torch`: ``module.load_state_dict(
    to_torch_state_dict(params))`` loads params of a :func:`jaxrnn.stack` of
    :func:`jaxrnn.elman` (without output layer), :func:`jaxrnn.lstm` or
    :func:`jaxrnn.gru` cells into a module of the same configuration. It also
    names any pytree of that structure, e.g. gradients with respect to params.

    Args:
      params: :class:`jaxrnn.StackParams` whose cells' params are
        :class:`ElmanParams`, :class:`LSTMParams` or :class:`GRUParams`.

    Returns:
      An ordered dict from PyTorch's parameter names (``weight_ih_l0``,
      ``bias_hh_l1_reverse``, ...) to torch tensors.

    Example:
      >>> import jax, torch, jaxrnn
      >>> from jaxrnn.interop import to_torch_state_dict
      >>> params = jaxrnn.stack(jaxrnn.gru(8), bidirectional=True).init(jax.random.key(0), 3)
      >>> module = torch.nn.GRU(3, 8, bidirectional=True)
      >>> module.load_state_dict(to_torch_state_dict(params))
      <All keys matched successfully>
    """
    torch = _torch()
    if not isinstance(params, StackParams):
        raise TypeError(f"params: expected StackParams, got {type(params).__name__}")
    layers = [params.first]
    if params.rest is not None:
        num_rest = len(jax.tree.leaves(params.rest)[0])
        layers += [jax.tree.map(lambda a, i=i: a[i], params.rest) for i in range(num_rest)]
    state: OrderedDict[str, Any] = OrderedDict()
    for index, layer in enumerate(layers):
        for suffix, cell_params in (("", layer.forward), ("_reverse", layer.backward)):
            if cell_params is None:
                continue
            if not isinstance(cell_params, ElmanParams | LSTMParams | GRUParams):
                raise TypeError(
                    "params: expected the params of elman, lstm or gru cells, "
                    f"got {type(cell_params).__name__}"
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
                    state[f"{torch_name}_l{index}{suffix}"] = torch.from_numpy(
                        np.array(value, copy=True)
                    )
    return state

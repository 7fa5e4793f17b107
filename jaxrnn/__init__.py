"""jaxrnn: recurrent networks in JAX, as pure functions, with BPTT you can see and control.

Example:
  >>> import jax, jax.numpy as jnp, jaxrnn
  >>> cell = jaxrnn.lstm(64)
  >>> params = cell.init(jax.random.key(0), input_size=8)
  >>> carry, ys = jaxrnn.scan(cell, params, jnp.zeros((100, 32, 8)))
  >>> ys.shape
  (100, 32, 64)
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jaxrnn import checkpoint, diagnostics, plots, reference, runlog, tasks, training
    from jaxrnn._cell import (
        Cell,
        InitFn,
        InitialCarryFn,
        LinearCoefficients,
        LinearSpec,
        Spec,
        StepFn,
    )
    from jaxrnn._checks import DEEROptions, ScanOptions
    from jaxrnn._clip import clip_carry_grad
    from jaxrnn._decode import Decoded, decode
    from jaxrnn._dropout import RecurrentDropoutCarry, recurrent_dropout
    from jaxrnn._elman import ElmanParams, ElmanSpec, elman
    from jaxrnn._gates import gates
    from jaxrnn._gru import GRUGates, GRUParams, GRUSpec, gru
    from jaxrnn._layernorm_lstm import LayerNormLSTMParams, LayerNormLSTMSpec, layernorm_lstm
    from jaxrnn._linear import LRUParams, MinGRUParams, MinLSTMParams, lru, mingru, minlstm
    from jaxrnn._lstm import LSTMCarry, LSTMGates, LSTMParams, LSTMSpec, lstm
    from jaxrnn._masks import bidirectional_last, last_valid, length_mask
    from jaxrnn._parallel import DEERInfo, deer
    from jaxrnn._reduce import scan_reduce
    from jaxrnn._scan import scan
    from jaxrnn._stack import LayerParams, Stack, StackParams, concat, stack
    from jaxrnn._tbptt import TBPTT, TBPTTState, tbptt

# Loaded on first use (PEP 562), so that `import jaxrnn` and the command line's
# parsing do not import JAX; `from jaxrnn import scan` works as usual.
_SUBMODULES = frozenset(
    ("checkpoint", "diagnostics", "plots", "reference", "tasks", "training", "runlog")
)
_ATTRIBUTES = {
    "Cell": "jaxrnn._cell",
    "InitFn": "jaxrnn._cell",
    "InitialCarryFn": "jaxrnn._cell",
    "LinearCoefficients": "jaxrnn._cell",
    "LinearSpec": "jaxrnn._cell",
    "Spec": "jaxrnn._cell",
    "StepFn": "jaxrnn._cell",
    "DEEROptions": "jaxrnn._checks",
    "ScanOptions": "jaxrnn._checks",
    "clip_carry_grad": "jaxrnn._clip",
    "Decoded": "jaxrnn._decode",
    "decode": "jaxrnn._decode",
    "RecurrentDropoutCarry": "jaxrnn._dropout",
    "recurrent_dropout": "jaxrnn._dropout",
    "ElmanParams": "jaxrnn._elman",
    "ElmanSpec": "jaxrnn._elman",
    "elman": "jaxrnn._elman",
    "gates": "jaxrnn._gates",
    "GRUGates": "jaxrnn._gru",
    "GRUParams": "jaxrnn._gru",
    "GRUSpec": "jaxrnn._gru",
    "gru": "jaxrnn._gru",
    "LayerNormLSTMParams": "jaxrnn._layernorm_lstm",
    "LayerNormLSTMSpec": "jaxrnn._layernorm_lstm",
    "layernorm_lstm": "jaxrnn._layernorm_lstm",
    "LRUParams": "jaxrnn._linear",
    "MinGRUParams": "jaxrnn._linear",
    "MinLSTMParams": "jaxrnn._linear",
    "lru": "jaxrnn._linear",
    "mingru": "jaxrnn._linear",
    "minlstm": "jaxrnn._linear",
    "LSTMCarry": "jaxrnn._lstm",
    "LSTMGates": "jaxrnn._lstm",
    "LSTMParams": "jaxrnn._lstm",
    "LSTMSpec": "jaxrnn._lstm",
    "lstm": "jaxrnn._lstm",
    "bidirectional_last": "jaxrnn._masks",
    "last_valid": "jaxrnn._masks",
    "length_mask": "jaxrnn._masks",
    "DEERInfo": "jaxrnn._parallel",
    "deer": "jaxrnn._parallel",
    "scan_reduce": "jaxrnn._reduce",
    "scan": "jaxrnn._scan",
    "LayerParams": "jaxrnn._stack",
    "Stack": "jaxrnn._stack",
    "StackParams": "jaxrnn._stack",
    "concat": "jaxrnn._stack",
    "stack": "jaxrnn._stack",
    "TBPTT": "jaxrnn._tbptt",
    "TBPTTState": "jaxrnn._tbptt",
    "tbptt": "jaxrnn._tbptt",
}

__version__ = "0.2.0"

__all__ = [
    "TBPTT",
    "Cell",
    "DEERInfo",
    "DEEROptions",
    "Decoded",
    "ElmanParams",
    "ElmanSpec",
    "GRUGates",
    "GRUParams",
    "GRUSpec",
    "InitFn",
    "InitialCarryFn",
    "LRUParams",
    "LSTMCarry",
    "LSTMGates",
    "LSTMParams",
    "LSTMSpec",
    "LayerNormLSTMParams",
    "LayerNormLSTMSpec",
    "LayerParams",
    "LinearCoefficients",
    "LinearSpec",
    "MinGRUParams",
    "MinLSTMParams",
    "RecurrentDropoutCarry",
    "ScanOptions",
    "Spec",
    "Stack",
    "StackParams",
    "StepFn",
    "TBPTTState",
    "__version__",
    "bidirectional_last",
    "checkpoint",
    "clip_carry_grad",
    "concat",
    "decode",
    "deer",
    "diagnostics",
    "elman",
    "gates",
    "gru",
    "last_valid",
    "layernorm_lstm",
    "length_mask",
    "lru",
    "lstm",
    "mingru",
    "minlstm",
    "plots",
    "recurrent_dropout",
    "reference",
    "runlog",
    "scan",
    "scan_reduce",
    "stack",
    "tasks",
    "tbptt",
    "training",
]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        value = importlib.import_module(f"jaxrnn.{name}")
    elif name in _ATTRIBUTES:
        value = getattr(importlib.import_module(_ATTRIBUTES[name]), name)
    else:
        raise AttributeError(f"module 'jaxrnn' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

"""jaxrnn: recurrent networks in JAX, as pure functions, with BPTT you can see and control.

Example:
  >>> import jax, jax.numpy as jnp, jaxrnn
  >>> cell = jaxrnn.lstm(64)
  >>> params = cell.init(jax.random.key(0), input_size=8)
  >>> carry, ys = jaxrnn.scan(cell, params, jnp.zeros((100, 32, 8)))
  >>> ys.shape
  (100, 32, 64)
"""

from jaxrnn import checkpoint, diagnostics, plots, reference, tasks, training
from jaxrnn._cell import Cell, InitFn, InitialCarryFn, LinearSpec, Spec, StepFn
from jaxrnn._checks import DEEROptions, ScanOptions
from jaxrnn._clip import clip_carry_grad
from jaxrnn._elman import ElmanParams, ElmanSpec, elman
from jaxrnn._gru import GRUParams, GRUSpec, gru
from jaxrnn._linear import LRUParams, MinGRUParams, MinLSTMParams, lru, mingru, minlstm
from jaxrnn._lstm import LSTMCarry, LSTMParams, LSTMSpec, lstm
from jaxrnn._parallel import DEERInfo, deer
from jaxrnn._scan import scan
from jaxrnn._stack import LayerParams, Stack, StackParams, concat, stack
from jaxrnn._tbptt import TBPTT, TBPTTState, tbptt

__version__ = "0.1.0"

__all__ = [
    "TBPTT",
    "Cell",
    "DEERInfo",
    "DEEROptions",
    "ElmanParams",
    "ElmanSpec",
    "GRUParams",
    "GRUSpec",
    "InitFn",
    "InitialCarryFn",
    "LRUParams",
    "LSTMCarry",
    "LSTMParams",
    "LSTMSpec",
    "LayerParams",
    "LinearSpec",
    "MinGRUParams",
    "MinLSTMParams",
    "ScanOptions",
    "Spec",
    "Stack",
    "StackParams",
    "StepFn",
    "TBPTTState",
    "__version__",
    "checkpoint",
    "clip_carry_grad",
    "concat",
    "deer",
    "diagnostics",
    "elman",
    "gru",
    "lru",
    "lstm",
    "mingru",
    "minlstm",
    "plots",
    "reference",
    "scan",
    "stack",
    "tasks",
    "tbptt",
    "training",
]

"""The public surface is pinned, documented, and the core never imports torch."""

import inspect
import re
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import jaxtyping
import pytest

import jaxrnn
import jaxrnn.interop
import jaxrnn.linen
import jaxrnn.nnx

PUBLIC = {
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
    "LSTMCarry",
    "LSTMGates",
    "LSTMParams",
    "LSTMSpec",
    "LRUParams",
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
    "TBPTT",
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
    "length_mask",
    "layernorm_lstm",
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
}


def test_public_names_are_pinned():
    assert set(jaxrnn.__all__) == PUBLIC
    assert set(jaxrnn.interop.__all__) == {"from_torch", "to_torch_state_dict"}
    cells = {"GRUCell", "LRUCell", "LSTMCell", "LayerNormLSTMCell", "MinGRUCell", "MinLSTMCell"}
    modules = {"Elman", "GRU", "LSTM", "LayerNormLSTM"}
    assert set(jaxrnn.nnx.__all__) == modules | cells | {"ElmanCell", "SimpleCell"}
    assert jaxrnn.nnx.SimpleCell is jaxrnn.nnx.ElmanCell
    assert set(jaxrnn.linen.__all__) == modules | cells | {"SimpleCell"}


def test_every_public_callable_has_a_docstring_with_an_example():
    modules = (
        jaxrnn,
        jaxrnn.interop,
        jaxrnn.linen,
        jaxrnn.nnx,
        jaxrnn.tasks,
        jaxrnn.training,
        jaxrnn.diagnostics,
    )
    for module in (*modules, jaxrnn.plots, jaxrnn.checkpoint, jaxrnn.runlog):
        for name in module.__all__:
            obj = getattr(module, name)
            if callable(obj):
                assert ">>>" in (obj.__doc__ or ""), f"{name} has no example"


def test_importing_jaxrnn_does_not_import_torch_or_flax():
    code = (
        "import sys, jax, jaxrnn, jaxrnn.interop; jaxrnn.lstm(2).init(jax.random.key(0), 1); "
        "jaxrnn.training; assert 'torch' not in sys.modules and 'flax' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_readme_examples_run():
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.DOTALL)
    assert len(blocks) >= 3
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)
    assert namespace["out"].shape == (32, 100, 128)  # the PyTorch block
    assert namespace["dxs"].shape == (20, 4, 2)  # the BPTT block


def test_array_annotations_are_checked_under_pytest_and_free_outside():
    cell = jaxrnn.gru(2)
    params = cell.init(jax.random.key(0), 3)
    xs = jnp.ones((4, 5, 3))  # [T, B, I]
    # Integer cotangents: the BPTT itself would run on them; ``dys: Float[...]`` refuses them.
    with pytest.raises(jaxtyping.TypeCheckError, match="parameter 'dys'"):
        jaxrnn.reference.bptt(cell, params, xs, jnp.ones((4, 5, 2), jnp.int32))
    # ``T`` is bound by ``xs``: ``dys`` of 3 steps contradicts it before the body runs.
    with pytest.raises(jaxtyping.TypeCheckError, match="T=4"):
        jaxrnn.reference.bptt(cell, params, xs, jnp.ones((3, 5, 2)))
    assert inspect.unwrap(jaxrnn.reference.bptt) is not jaxrnn.reference.bptt
    # Outside pytest the same functions are the plain ones: no wrapper, no check.
    code = (
        "import jaxrnn\n"
        "assert not hasattr(jaxrnn.reference.bptt, '__wrapped__')\n"
        "assert not hasattr(jaxrnn.gru(2).step, '__wrapped__')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)

"""The notebooks in notebooks/: committed without outputs, and they run top to bottom.

Each notebook is executed with nbclient in a fresh ``python3`` kernel. That
kernelspec is the one ipykernel's wheel installs into the environment
(``sys.prefix/share/jupyter/kernels/python3``, argv ``python -m
ipykernel_launcher``), and jupyter_client starts a spec whose argv begins
with ``python`` with ``sys.executable``, so the kernel runs in the very
interpreter that runs pytest: no ``ipykernel install`` step is needed, in a
fresh CI venv either. ``JUPYTER_PREFER_ENV_PATH=1`` makes that spec win over
a ``python3`` kernelspec in the user's own Jupyter directory.

The kernel is a separate process: this file's ``conftest.py`` settings (x64,
rank promotion "raise", XLA optimisations off) do not reach it, so the
notebooks run with JAX's defaults, as their readers will.
"""

import sys
from pathlib import Path

import nbclient
import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
COLAB = "https://colab.research.google.com/github/jaxrnn/jaxrnn/blob/main/notebooks"
CELL_TIMEOUT_S = 240  # per cell; every notebook runs in well under a minute on 2 CPU cores


def test_notebooks_exist():
    assert NOTEBOOKS, f"no notebooks in {NOTEBOOK_DIR}: the tests below would test nothing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"cell {i} has outputs: strip them before committing"
            assert cell.execution_count is None, f"cell {i} has an execution count"
        assert "execution" not in cell.metadata, f"cell {i} has execution timing metadata"
    assert nb.metadata["kernelspec"]["name"] == "python3"
    first = nb.cells[0]
    assert first.cell_type == "markdown" and f"{COLAB}/{path.name})" in first.source, (
        "the first cell should be the Open-in-Colab badge linking to this notebook"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_runs_top_to_bottom(path, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")  # the notebooks plot; the `plots` extra
    monkeypatch.setenv("JUPYTER_PREFER_ENV_PATH", "1")
    argv = KernelSpecManager().get_kernel_spec("python3").argv
    assert argv[0] in ("python", "python3", sys.executable), (
        f"the python3 kernelspec starts {argv[0]!r}, not this interpreter ({sys.executable})"
    )
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        kernel_name="python3",
        timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(tmp_path)}},  # the kernel's working directory
    )
    client.execute()  # raises CellExecutionError, with the traceback, at the first failing cell

"""The notebooks in notebooks/: pinned to this release, stripped, and they run top to bottom.

Every URL of the project in the notebooks and in notebooks/README.md is
pyproject.toml's (``[project.urls] Repository``), and every notebook opens in
Colab at the tag of this version (``v`` + ``jaxrnn.__version__``) and installs
that version, so that a change in one place without the others fails here.
Committed without outputs means what ``nbstripout --verify --keep-id`` checks
(the command notebooks/README.md gives to strip them).

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

import importlib.metadata
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import jaxrnn

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
REPOSITORY = PROJECT["urls"]["Repository"]
TAG = f"v{jaxrnn.__version__}"
COLAB = f"https://colab.research.google.com/github/{REPOSITORY.removeprefix('https://github.com/')}"
REQUIREMENT = f"jaxrnn[plots] @ git+{REPOSITORY}@{TAG}"
CELL_TIMEOUT_S = 240  # per cell; every notebook runs in well under a minute on 2 CPU cores
URL = re.compile(r"https?://[^\s)\]\"'<>`]+")


def _sources(path):
    return [
        "".join(cell["source"]) for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]
    ]


def _badge(name):
    return f"{COLAB}/blob/{TAG}/notebooks/{name}"


def _check_urls(text, where):
    """The project's URLs in ``text`` are pyproject's; each Colab link is a notebook's badge."""
    for url in URL.findall(text):
        if url.startswith("https://colab.research.google.com/github/"):
            name = url.rsplit("/", 1)[-1]
            assert url == _badge(name), f"{where}: {url} is not {_badge(name)}"
        elif "github.com" in url:
            base = url.split("@", 1)[0]  # a pip requirement's git+URL@ref: the ref is checked below
            assert base == REPOSITORY or base.startswith(REPOSITORY + "/"), (
                f"{where}: {url} is not under pyproject.toml's Repository, {REPOSITORY}"
            )
    pinned = re.compile(rf"jaxrnn(\[[a-z,]+\])? @ git\+{re.escape(REPOSITORY)}@{re.escape(TAG)}")
    for requirement in re.findall(r"jaxrnn\S* @ git\+[^\s\"'`]+", text):
        assert pinned.fullmatch(requirement), f"{where}: {requirement} is not pinned to {TAG}"


def test_notebooks_exist():
    assert NOTEBOOKS, f"no notebooks in {NOTEBOOK_DIR}: the tests below would test nothing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_without_outputs(path):
    import nbformat  # the `test` extra; imported here so that the smoke test needs only jaxrnn

    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"cell {i} has outputs: strip them before committing"
            assert cell.execution_count is None, f"cell {i} has an execution count"
        assert "execution" not in cell.metadata, f"cell {i} has execution timing metadata"
    assert nb.metadata["kernelspec"]["name"] == "python3"
    first = nb.cells[0]
    assert first.cell_type == "markdown" and f"]({_badge(path.name)})" in first.source, (
        "the first cell should be the Open-in-Colab badge linking to this notebook at " + TAG
    )


def test_nbstripout_would_change_nothing():
    """notebooks/README.md's command to strip the notebooks leaves them as they are."""
    command = [sys.executable, "-m", "nbstripout", "--verify", "--keep-id", *map(str, NOTEBOOKS)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"strip the notebooks: nbstripout --keep-id\n{result.stdout}"
    readme = (NOTEBOOK_DIR / "README.md").read_text(encoding="utf-8")
    assert "nbstripout --keep-id notebooks/*.ipynb" in readme


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_url_is_pyprojects_and_the_install_pins_this_version(path):
    sources = _sources(path)
    for i, source in enumerate(sources):
        _check_urls(source, f"{path.name} cell {i}")
    install = sources[1]
    assert install.count(f'"{REQUIREMENT}"') == 1, f"cell 1 should install {REQUIREMENT}"
    assert re.search(r'"(-q|--quiet)"', install) is None, "pip's output must not be hidden"


def test_every_url_in_the_readme_is_pyprojects():
    readme = (NOTEBOOK_DIR / "README.md").read_text(encoding="utf-8")
    _check_urls(readme, "notebooks/README.md")
    for path in NOTEBOOKS:
        assert f"]({_badge(path.name)})" in readme, f"no Colab badge for {path.name} at {TAG}"
    assert REQUIREMENT in readme
    urls = PROJECT["urls"]
    assert urls["Homepage"] == REPOSITORY and urls["Issues"] == f"{REPOSITORY}/issues"
    assert urls["Documentation"].startswith(REPOSITORY)


def _run_install_cell(path, monkeypatch, returncode):
    """Run cell 1 as in Colab, with ``subprocess.run`` answering ``returncode``; its calls."""
    calls = []

    def fake_run(args, **kwargs):
        calls.append((args, kwargs))
        return subprocess.CompletedProcess(args, returncode, "pip's stdout", "ERROR: pip's stderr")

    monkeypatch.setitem(sys.modules, "google.colab", type(sys)("google.colab"))
    monkeypatch.setattr(subprocess, "run", fake_run)
    exec(_sources(path)[1], {"__name__": "__main__"})
    return calls


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_the_install_cell_shows_pips_output_when_it_fails(path, monkeypatch, capsys):
    calls = _run_install_cell(path, monkeypatch, returncode=0)
    assert [args for args, _ in calls] == [[sys.executable, "-m", "pip", "install", REQUIREMENT]]
    assert capsys.readouterr().out == ""  # a successful install says nothing
    with pytest.raises(RuntimeError, match=re.escape(REQUIREMENT)):
        _run_install_cell(path, monkeypatch, returncode=1)
    out = capsys.readouterr().out
    assert "pip's stdout" in out and "ERROR: pip's stderr" in out


def test_the_install_cell_does_nothing_outside_colab(monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("pip ran outside Colab"))
    for path in NOTEBOOKS:
        exec(_sources(path)[1], {"__name__": "__main__"})


@pytest.mark.smoke
def test_the_installed_version_is_the_one_in_the_source():
    """``jaxrnn/__init__.py`` holds the version; the installed metadata reads it from there."""
    assert importlib.metadata.version("jaxrnn") == jaxrnn.__version__
    assert "version" not in PROJECT and PROJECT["dynamic"] == ["version"]
    init = Path(jaxrnn.__file__).read_text(encoding="utf-8")
    assert re.findall(r"^__version__ = \"([^\"]+)\"$", init, flags=re.MULTILINE) == [
        jaxrnn.__version__
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_runs_top_to_bottom(path, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")  # the notebooks plot; the `plots` extra
    import nbclient
    import nbformat
    from jupyter_client.kernelspec import KernelSpecManager

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

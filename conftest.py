"""Strict defaults for every test and doctest.

* float64 is available (``jax_enable_x64``), so every test names its dtypes;
* implicit rank promotion raises, as in equinox's test suite;
* XLA's optimisation passes are off (``jax_disable_most_optimizations``): it
  halves the suite's compile-bound run time on 2 cores and leaves the numbers
  the tests compare unchanged up to rounding. Speed is measured by the
  benchmarks, at full optimisation, never here;
* four CPU devices (``--xla_force_host_platform_device_count=4`` in
  ``XLA_FLAGS``, unless a device count is given there already), so that the
  sharded paths (data parallelism, sequences split across devices) run in
  the test process; every computation that does not ask for more runs on
  the first device, as with one;
* a persistent compilation cache for each pytest-xdist worker, in a
  temporary directory deleted at the end: a program compiled by one test (the
  same train step, the same cell over the same shapes) is read back by the
  others instead of compiled again (the command lines and notebooks the tests
  start, whose programs differ, do not use it). One directory per worker: no
  process reads an entry another is still writing, and JAX needs no locks.
  ``JAXRNN_TEST_COMPILATION_CACHE=off`` turns it off; a directory given there
  is used and kept;
* JAX's in-memory caches are cleared whenever the process holds more than
  30 000 memory mappings (checked after each test, on Linux): every compiled
  CPU executable maps a few regions of code, jit's caches keep them all, and
  a worker of the full suite passed the kernel's limit (``vm.max_map_count``,
  65 530): the next ``mmap`` inside XLA's compiler failed and the worker died
  with a segmentation fault. Clearing unmaps them (measured: 1 400 mappings
  to 520 after 300 small programs); what is needed again is recompiled or
  read back from the persistent cache;
* the array annotations of jaxrnn are checked at runtime (STYLE.md point 4):
  jaxtyping's import hook decorates every function of the package with
  ``jaxtyped``, so arrays that contradict the shapes of a signature
  (``xs: Float[Array, "T *batch I"]`` with ``dys: Float[Array, "T *batch O"]``)
  raise ``jaxtyping.TypeCheckError``. Outside pytest nothing is decorated:
  the annotations cost nothing in use. ``--no-shape-checks`` turns the hook off.

The checker is beartype restricted to the jaxtyping array annotations: every
other part of a hint (``bool``, ``Literal[...]``, ``LSTMCarry``, a Protocol)
is read as ``Any``. Those are mypy's to check; the library validates such
arguments itself, with errors naming them that the tests assert, and a
runtime check of them would only pre-empt those errors.
"""

import gc
import os
import shutil
import sys
import tempfile
import types
import typing
from collections.abc import Callable
from typing import Any

import jax
import jaxtyping
import pytest

if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
    ).strip()
jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_disable_most_optimizations", True)


def _is_array_type(hint: Any) -> bool:
    return isinstance(hint, type) and issubclass(hint, jaxtyping.AbstractArray)


def _arrays_only(hint: Any) -> Any:
    """``hint`` with every part that is not a jaxtyping array type read as ``Any``."""
    if _is_array_type(hint):
        return hint
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        # ``Float[Array, "..."] | None``, and ``Shaped[ArrayLike, "..."]``: a union of array
        # types and of the scalar types of ``ArrayLike``.
        return hint if any(_is_array_type(a) for a in args) else Any
    if origin is tuple and args and Ellipsis not in args:
        kept = tuple(_arrays_only(a) for a in args)
        if any(k is not Any for k in kept):
            return tuple[kept]  # type: ignore[valid-type]
    return Any


def check_shapes(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The type checker of the import hook: beartype on the array annotations only."""
    # Imported here: `--no-shape-checks` runs without beartype (a GPU machine may lack it).
    import beartype

    fn.__annotations__ = {name: _arrays_only(h) for name, h in fn.__annotations__.items()}
    return beartype.beartype(fn)


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--no-shape-checks``."""
    parser.addoption(
        "--no-shape-checks",
        action="store_true",
        help="do not check jaxrnn's array annotations at runtime (see conftest.py)",
    )


_CACHE_VARIABLE = "JAXRNN_TEST_COMPILATION_CACHE"


def _share_compilations(config: pytest.Config) -> None:
    """Point JAX's persistent compilation cache at this session's directory."""
    path = os.environ.get(_CACHE_VARIABLE)
    if path == "off":
        return
    if path is None:  # the controlling process: its xdist workers inherit the variable
        path = tempfile.mkdtemp(prefix="jaxrnn-test-compilations-")
        os.environ[_CACHE_VARIABLE] = path
        config.add_cleanup(lambda: shutil.rmtree(path, ignore_errors=True))
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    jax.config.update("jax_compilation_cache_dir", os.path.join(path, worker))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


_MAPS = "/proc/self/maps"
_MAX_MAPPINGS = 30_000


@pytest.fixture(autouse=True)
def _bounded_mappings() -> Any:
    """After each test, clear JAX's caches if the process nears the kernel's mapping limit."""
    yield
    try:
        with open(_MAPS, "rb") as maps:
            count = sum(1 for _ in maps)
    except OSError:  # not Linux
        return
    if count > _MAX_MAPPINGS:
        jax.clear_caches()
        gc.collect()


def pytest_configure(config: pytest.Config) -> None:
    """Share compilations; install the jaxtyping hook before anything imports jaxrnn."""
    _share_compilations(config)
    if config.getoption("no_shape_checks"):
        return
    # The import hook instruments only the modules imported after it is installed.
    if "jaxrnn" in sys.modules:
        raise RuntimeError("conftest.py: jaxrnn was imported before the jaxtyping hook")
    jaxtyping.install_import_hook("jaxrnn", f"{__name__}.check_shapes")

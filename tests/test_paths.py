"""Every cell run every way, against the Python loop of that cell's own step.

The cells: each built-in (Elman with and without output layer, LSTM with and
without projection, GRU, minGRU, minLSTM, LRU) and the same cell with its
step wrapped by a user (``cell._replace(step=wrapped)``, the input scaled by
0.5 before the built-in step). The ways: every ``backward``, ``checkpoint``,
``truncate``, ``unroll`` and ``method`` of :func:`jaxrnn.scan`. The
specification: the loop of ``jaxrnn.scan``'s docstring, one sequence at a
time over its valid steps (:func:`tests.helpers.reference_scan`), so the
expected result of a wrapped cell is the loop of the wrapped step.

Compared: outputs, final carry and the VJP with a random cotangent for both
(equinox's ``test_scan``), with respect to params, inputs and the initial
carry, with lengths (a full one, a partial one and a 0) in both directions,
in float64. The core of the matrix runs again in the users' default
configuration, float32 with x64 off, and with
``jax_numpy_dtype_promotion="strict"``: the built-in cells' paths must not
rely on implicit promotion, with x64 off or on (int32 and int64 lengths, float64 cells).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn
from tests.helpers import random_carry, reference_scan, vjp_all, wrap_step

T, B, H, I = 7, 3, 4, 3
LENGTHS = (7, 4, 0)
CHUNK = 3  # divides neither T nor the length 4

BUILT_IN = {
    "elman": lambda: jaxrnn.elman(H),
    "elman_output": lambda: jaxrnn.elman(H, output_size=2, output_activation="sigmoid"),
    "lstm": lambda: jaxrnn.lstm(H),
    "lstm_proj": lambda: jaxrnn.lstm(H, proj_size=2),
    "gru": lambda: jaxrnn.gru(H),
    "mingru": lambda: jaxrnn.mingru(H),
    "minlstm": lambda: jaxrnn.minlstm(H),
    "lru": lambda: jaxrnn.lru(H, r_min=0.5),
}
LINEAR = ("mingru", "minlstm", "lru")
CELL_NAMES = [*BUILT_IN, *(f"wrapped_{name}" for name in BUILT_IN)]

PATHS: dict[str, dict] = {
    "fused": {},
    "autodiff": {"backward": "autodiff"},
    "fused_checkpoint": {"checkpoint": CHUNK},
    "autodiff_checkpoint": {"backward": "autodiff", "checkpoint": CHUNK},
    "truncate": {"truncate": CHUNK},
    "unroll2": {"unroll": 2},
    "associative": {"method": "associative"},
    "deer": {"method": "deer"},
    "quasi_deer": {"method": "quasi-deer", "method_options": jaxrnn.DEEROptions()},
}
TOL = {"deer": 1e-8, "quasi_deer": 1e-8}


# Each pair below costs ~2 s of compilation, so no computation runs twice: the built-in
# cells without fused rules already run backward="fused" by autodiff, and a wrapped step
# is run by autodiff on every sequential path. What a wrapped step tests is that each
# fast path steps aside: every wrapped cell runs the default path, and one other in turn
# (test_edges has wrapped steps through backward="autodiff", and associative refusing them).
NO_FUSED_RULE = ("lstm_proj", "mingru", "minlstm", "lru")
WRAPPED_EXTRA = ("fused_checkpoint", "unroll2", "deer")


def _paths(index: int, name: str) -> list[str]:
    if name.startswith("wrapped_"):
        return ["fused", WRAPPED_EXTRA[index % len(WRAPPED_EXTRA)]]
    return [
        path
        for path in PATHS
        if (path != "associative" or name in LINEAR)
        and not (name in NO_FUSED_RULE and path.startswith("autodiff"))
    ]


# Each pair runs in one direction, alternating along a cell's paths and from one cell to
# the next, so that every cell and every path runs both forward and in reverse (checked
# by a test below).
MATRIX = [
    (name, path, (i + j) % 2 == 1)
    for i, name in enumerate(CELL_NAMES)
    for j, path in enumerate(_paths(i, name))
]


def _make(name: str) -> jaxrnn.Cell:
    if name.startswith("wrapped_"):
        return wrap_step(BUILT_IN[name.removeprefix("wrapped_")]())
    return BUILT_IN[name]()


@functools.cache
def _setup(name: str, dtype=jnp.float64):
    """One cell object per name (the jitted cores are cached on it), its params and inputs."""
    cell = _make(name)
    k_params, k_carry, k_x = jax.random.split(jax.random.key(0), 3)
    params = cell.init(k_params, I, dtype)
    carry = random_carry(cell, k_carry, (B,), dtype)
    xs = jax.random.normal(k_x, (T, B, I), dtype)
    return cell, params, xs, carry


@functools.cache
def _expected(name: str, reverse: bool, truncate: int | None, dtype=jnp.float64):
    """The loop of the cell's own step: outputs and random-cotangent VJP."""
    cell, params, xs, carry = _setup(name, dtype)

    one_step = cell._replace(step=jax.jit(cell.step))  # the same step, compiled once

    def loop(p, x, c):
        return reference_scan(
            one_step, p, x, carry=c, lengths=LENGTHS, reverse=reverse, truncate=truncate
        )

    return vjp_all(loop, (params, xs, carry))


def _assert_close(got, want, tol):
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for u, v in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert u.shape == v.shape and u.dtype == v.dtype
        np.testing.assert_allclose(u, v, rtol=tol, atol=tol)


def _check(name: str, path: str, dtype, tol: float, reverse: bool) -> None:
    cell, params, xs, carry = _setup(name, dtype)
    options = PATHS[path]

    def run(p, x, c):
        return jaxrnn.scan(
            cell, p, x, carry=c, lengths=jnp.array(LENGTHS), reverse=reverse, **options
        )

    want = _expected(name, reverse, options.get("truncate"), dtype)
    _assert_close(vjp_all(run, (params, xs, carry)), want, tol)


@pytest.mark.parametrize(
    ("name", "path", "reverse"),
    MATRIX,
    ids=[f"{n}-{p}-{'reverse' if r else 'forward'}" for n, p, r in MATRIX],
)
def test_every_path_equals_the_loop_of_the_cells_own_step(name, path, reverse):
    _check(name, path, jnp.float64, TOL.get(path, 1e-10), reverse)


def test_the_matrix_runs_every_cell_and_every_path_in_both_directions():
    for key, values in ((0, CELL_NAMES), (1, PATHS)):
        for value in values:
            assert {r for *pair, r in MATRIX if pair[key] == value} == {False, True}, value


def test_the_wrapped_step_is_not_the_built_in_step():
    """The wrapped cells' expected results differ from the built-in cells': the matrix can fail."""
    for name in BUILT_IN:
        (_, ys), _ = _expected(name, False, None)
        (_, ys_wrapped), _ = _expected(f"wrapped_{name}", False, None)
        assert float(jnp.abs(ys - ys_wrapped).max()) > 1e-3, name


def test_truncation_changes_the_gradient_and_not_the_forward():
    """The reference with stop_gradient at the cut points is not the full BPTT one."""
    (out_full, grads_full), (out_cut, grads_cut) = (
        _expected("gru", False, None),
        _expected("gru", False, CHUNK),
    )
    _assert_close(out_cut, out_full, 0)
    d_full, d_cut = grads_full[0].w_hh, grads_cut[0].w_hh
    assert float(jnp.abs(d_full - d_cut).max()) > 1e-6


# The core of the matrix, in the users' default configuration.
CORE = [
    ("elman_output", "fused"),
    ("lstm", "fused"),
    ("lstm_proj", "fused"),
    ("gru", "fused_checkpoint"),
    ("minlstm", "fused"),
    ("lru", "associative"),
    ("wrapped_gru", "fused"),
]


@pytest.mark.parametrize(("name", "path"), CORE, ids=[f"{n}-{p}" for n, p in CORE])
def test_float32_with_x64_off_and_strict_promotion(name, path):
    """x64 off (float32 and int32 everywhere) and no implicit promotion, to float32 rounding."""
    with jax.enable_x64(False), jax.numpy_dtype_promotion("strict"):
        _check(name, path, jnp.float32, 2e-5, reverse=True)


# With x64 on, jnp.arange and jnp.array of Python ints are int64; lengths may be either.
STRICT = [
    *(
        pytest.param(path, jnp.int64, id=f"{path}-int64")
        for path in ("fused", "truncate", "associative")
    ),
    *(
        pytest.param(path, jnp.int32, id=f"{path}-int32")
        for path in ("autodiff_checkpoint", "deer")
    ),
]


@pytest.mark.parametrize(("path", "lengths_dtype"), STRICT)
def test_strict_promotion_with_x64_on(path, lengths_dtype):
    """float32 cells with x64 on: nothing may promote int32 against int64 lengths."""
    name = "mingru" if path == "associative" else "gru"
    cell, params, xs, carry = _setup(name, jnp.float32)
    lengths = jnp.array(LENGTHS, lengths_dtype)
    with jax.numpy_dtype_promotion("strict"):
        got = vjp_all(
            lambda p, x, c: jaxrnn.scan(cell, p, x, carry=c, lengths=lengths, **PATHS[path]),
            (params, xs, carry),
        )
    _assert_close(got, _expected(name, False, PATHS[path].get("truncate"), jnp.float32), 2e-5)


@pytest.mark.parametrize("name", BUILT_IN)
def test_float64_cells_with_strict_promotion(name):
    cell = BUILT_IN[name]()
    with jax.numpy_dtype_promotion("strict"):
        params = cell.init(jax.random.key(0), I, jnp.float64)
        carry = cell.initial_carry((B,), jnp.float64)
        xs = jnp.ones((T, B, I), jnp.float64)
        final, ys = jaxrnn.scan(cell, params, xs, carry=carry)
    assert {a.dtype for a in jax.tree.leaves((params, carry, final, ys))} == {
        jnp.dtype(jnp.float64)
    }

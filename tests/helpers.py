"""Shared test helpers: the cells under test and independent reference implementations."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import jaxrnn


class CellCase(NamedTuple):
    name: str
    make: Callable[[], jaxrnn.Cell]
    numpy_step: Callable[[Any, Any, np.ndarray], tuple[Any, np.ndarray]]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _affine(x: np.ndarray, w: Any, b: Any) -> np.ndarray:
    out = x @ np.asarray(w, np.float64).T
    return out if b is None else out + np.asarray(b, np.float64)


def numpy_elman(activation: Callable[[np.ndarray], np.ndarray], out_activation=None):
    """h = f(W_ih x + b_ih + W_hh h + b_hh), y = g(W_hy h + b_y), written in numpy."""

    def step(params, h, x):
        h = activation(_affine(x, params.w_ih, params.b_ih) + _affine(h, params.w_hh, params.b_hh))
        if params.w_hy is None:
            return h, h
        return h, out_activation(_affine(h, params.w_hy, params.b_y))

    return step


def numpy_lstm(params, carry, x):
    """PyTorch's LSTM equations, gate order i, f, g, o, written in numpy."""
    h, c = carry
    gates = _affine(x, params.w_ih, params.b_ih) + _affine(h, params.w_hh, params.b_hh)
    i, f, g, o = np.split(gates, 4, axis=-1)
    c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
    h = _sigmoid(o) * np.tanh(c)
    if params.w_hr is not None:
        h = _affine(h, params.w_hr, None)
    return jaxrnn.LSTMCarry(h, c), h


def numpy_gru(params, h, x):
    """PyTorch's GRU equations (reset after the recurrent matmul), written in numpy."""
    gi = _affine(x, params.w_ih, params.b_ih)
    gh = _affine(h, params.w_hh, params.b_hh)
    i_r, i_z, i_n = np.split(gi, 3, axis=-1)
    h_r, h_z, h_n = np.split(gh, 3, axis=-1)
    r, z = _sigmoid(i_r + h_r), _sigmoid(i_z + h_z)
    n = np.tanh(i_n + r * h_n)
    h = (1 - z) * n + z * h
    return h, h


def _input_gates(params, x, parts):
    g = _affine(x, params.w_ih, params.b_ih)
    return np.split(g, parts, axis=-1)


def numpy_mingru(params, h, x):
    """minGRU (Feng et al. 2024): z = σ(W_z x + b_z), h = (1 - z) h + z (W_h x + b_h)."""
    g_z, g_h = _input_gates(params, x, 2)
    z = _sigmoid(g_z)
    h = (1 - z) * h + z * g_h
    return h, h


def numpy_minlstm(params, h, x):
    """minLSTM (Feng et al. 2024): h = f/(f+i) h + i/(f+i) (W_h x + b_h), f, i sigmoids of x."""
    g_f, g_i, g_h = _input_gates(params, x, 3)
    f, i = _sigmoid(g_f), _sigmoid(g_i)
    h = f / (f + i) * h + i / (f + i) * g_h
    return h, h


def numpy_lru(params, carry, x):
    """LRU (Orvieto et al. 2023) with complex numpy: h = Λ h + γ B x, y = Re(C h) + D x.

    The carry is ``[Re h, Im h]``.
    """
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    size = p.nu_log.shape[0]
    h = carry[..., :size] + 1j * carry[..., size:]
    lam = np.exp(-np.exp(p.nu_log) + 1j * np.exp(p.theta_log))
    h = lam * h + np.exp(p.gamma_log) * (x @ (p.w_ih + 1j * p.w_ih_im).T)
    y = np.real(h @ (p.w_out + 1j * p.w_out_im).T) + p.d * x
    return np.concatenate([h.real, h.imag], axis=-1), y


_identity = lambda x: x  # noqa: E731

CELLS = [
    CellCase("elman_tanh", lambda: jaxrnn.elman(5), numpy_elman(np.tanh)),
    CellCase(
        "elman_relu_orthogonal",
        lambda: jaxrnn.elman(5, activation="relu", recurrent_init="orthogonal"),
        numpy_elman(lambda x: np.maximum(x, 0)),
    ),
    CellCase(
        "elman_output_layer",
        lambda: jaxrnn.elman(5, output_size=2, output_activation="sigmoid"),
        numpy_elman(np.tanh, _sigmoid),
    ),
    CellCase(
        "elman_irnn_nobias",
        lambda: jaxrnn.elman(5, activation="identity", recurrent_init="identity", use_bias=False),
        numpy_elman(_identity),
    ),
    CellCase("lstm", lambda: jaxrnn.lstm(5), numpy_lstm),
    CellCase("lstm_chrono", lambda: jaxrnn.lstm(5, chrono=20), numpy_lstm),
    CellCase("lstm_proj", lambda: jaxrnn.lstm(5, proj_size=3), numpy_lstm),
    CellCase("gru", lambda: jaxrnn.gru(5), numpy_gru),
    CellCase("gru_orthogonal", lambda: jaxrnn.gru(5, recurrent_init="orthogonal"), numpy_gru),
]
CELL_IDS = [case.name for case in CELLS]
# The cells linear in their carry (method="associative"); not in CELLS, whose cells
# every fused-path and reference-BPTT test takes.
LINEAR_CELLS = [
    CellCase("mingru", lambda: jaxrnn.mingru(5), numpy_mingru),
    CellCase("minlstm", lambda: jaxrnn.minlstm(5), numpy_minlstm),
    CellCase("lru", lambda: jaxrnn.lru(5, r_min=0.5), numpy_lru),
]
LINEAR_IDS = [case.name for case in LINEAR_CELLS]
INPUT_SIZE = 3


def wrap_step(cell: jaxrnn.Cell, scale: float = 0.5) -> jaxrnn.Cell:
    """``cell`` whose step is a user's wrapper: the input scaled by ``scale``, then the step."""
    step = cell.step

    def wrapped(params, carry, x):
        return step(params, carry, scale * x)

    return cell._replace(step=wrapped)


def random_carry(cell: jaxrnn.Cell, key: jax.Array, batch_shape=(), dtype=jnp.float32):
    """A random carry with the structure of ``cell.initial_carry(batch_shape, dtype)``."""
    template = cell.initial_carry(batch_shape, dtype)
    leaves, treedef = jax.tree.flatten(template)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(
        treedef,
        [jax.random.normal(k, a.shape, a.dtype) for k, a in zip(keys, leaves, strict=True)],
    )


def reference_scan(cell, params, xs, *, carry, lengths=None, reverse=False, truncate=None):
    """``jaxrnn.scan`` written as the specification: one Python loop per sequence.

    ``xs`` is time-major ``[T, B, I]``; each sequence is run on its own valid
    steps only, reversed within its length when ``reverse``; outputs past a
    length are zero. With ``truncate=k`` the carry's gradient is stopped
    before every k-th step of each sequence's processing order (BPTT(k)).
    """
    num_steps, batch = xs.shape[0], xs.shape[1]
    lengths = np.full(batch, num_steps) if lengths is None else np.asarray(lengths)
    ys, finals = [], []
    for b in range(batch):
        c = jax.tree.map(lambda a, b=b: a[b], carry)
        steps = range(int(lengths[b]))
        out = [None] * num_steps
        for i, t in enumerate(reversed(steps) if reverse else steps):
            if truncate is not None and i > 0 and i % truncate == 0:
                c = jax.lax.stop_gradient(c)
            c, out[t] = cell.step(params, c, xs[t, b])
        y_size = jax.eval_shape(cell.step, params, c, xs[0, b])[1].shape
        ys.append(jnp.stack([jnp.zeros(y_size, xs.dtype) if o is None else o for o in out]))
        finals.append(c)
    return jax.tree.map(lambda *a: jnp.stack(a), *finals), jnp.stack(ys, axis=1)


def vjp_all(fn, primals):
    """The outputs of ``fn`` and its VJP with one random cotangent for every output."""
    out, vjp = jax.vjp(fn, *primals)
    leaves, treedef = jax.tree.flatten(out)
    keys = jax.random.split(jax.random.key(9), len(leaves))
    cot = jax.tree.unflatten(
        treedef, [jax.random.normal(k, a.shape, a.dtype) for k, a in zip(keys, leaves, strict=True)]
    )
    return out, vjp(cot)


def exit_code(argv):
    """``jaxrnn``'s exit status for ``argv``, returned by ``main`` or raised by argparse."""
    from jaxrnn._cli import main

    try:
        return main(argv)
    except SystemExit as e:
        return e.code

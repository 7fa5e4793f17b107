"""``kernel="cudnn"``: an LSTM, or a stack of LSTMs, run by cuDNN (:mod:`jax.experimental.rnn`).

cuDNN computes a whole sequence, every layer and direction of a stack, forward
and backward in its own kernels (:func:`jax.experimental.rnn.lstm`, a custom
VJP around cuDNN's ``cudnnRNNForward`` and backward). This module lays
jaxrnn's arrays out for it and back, and refuses, naming the argument or the
option, every case whose semantics cuDNN does not share: it never runs XLA in
cuDNN's place. :mod:`jax.experimental.rnn` has cuDNN's LSTM only (no GRU, no
Elman RNN), in float32, with two biases and without a projection.

Flat weights (the layout of :func:`jax.experimental.rnn.unpack_lstm_weights`,
cuDNN's ``cudnnGetRNNWeightParams``): the pseudo-layers in the order forward
0, backward 0, forward 1, …; first every pseudo-layer's ``W_ih`` then its
``W_hh`` (row-major), then every pseudo-layer's ``b_ih`` then its ``b_hh``.
The gate order is i, f, g, o in every block, PyTorch's and jaxrnn's, so no
gate block moves.

Sequence lengths: cuDNN zeroes the outputs past each length (padding fill 0),
returns the carry at each sequence's last valid step and runs the backward
direction from that step back to step 0, as :func:`jaxrnn.scan` does. A
sequence of length 0, whose result is its initial carry and zero outputs,
is given to cuDNN as a sequence of length 1 and its results are replaced by
those (the lengths are clipped to [1, T] first): what cuDNN does with a zero
length is then never relied on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.experimental.rnn
import jax.extend.backend
import jax.numpy as jnp

from jaxrnn._cell import Array, Carry, Cell, Params, described_spec
from jaxrnn._checks import ScanOptions
from jaxrnn._flax_conventions import flip
from jaxrnn._lstm import LSTMCarry, LSTMParams

# What the dispatch calls: cuDNN's LSTM. The tests put jax.experimental.rnn's reference
# implementation (lstm_ref) in its place to run the whole dispatch on a CPU.
_cudnn_lstm: Callable[..., tuple[Array, Array, Array]] = jax.experimental.rnn.lstm

Layers = Sequence[Sequence[LSTMParams]]
"""``layers[l][d]``: the :class:`LSTMParams` of layer ``l``, direction ``d`` (0 forward)."""


# ------------------------------------------------------------------------------- weights


def pack(layers: Layers) -> Array:
    """The flat cuDNN LSTM weights of jaxrnn's params ``layers[l][d]`` (layer l, direction d).

    The inverse of :func:`unpack`. Every layer has the same number of
    directions (1, or 2 for a bidirectional stack); layer 0 reads the input
    ``[4H, I]``, every other layer the previous layer's concatenated
    directions ``[4H, D·H]``. A cell without biases (``use_bias=False``)
    packs zeros in their place. The result has
    ``jax.experimental.rnn.get_num_params_in_lstm(I, H, L, D == 2)`` entries.

    Raises:
      ValueError: naming ``layers[l][d].<field>`` when a layer has a
        projection or another shape than the layout needs, or when the
        layers have different numbers of directions.

    Example:
      >>> import jax, jaxrnn
      >>> from jaxrnn._cudnn import pack, unpack
      >>> cell = jaxrnn.lstm(4)
      >>> p = cell.init(jax.random.key(0), input_size=3)
      >>> flat = pack([[p]])
      >>> flat.shape  # 16·3 + 16·4 + 16 + 16
      (144,)
      >>> back = unpack(flat, input_size=3, hidden_size=4, num_layers=1, bidirectional=False)
      >>> bool((back[0][0].w_hh == p.w_hh).all())
      True
    """
    if not layers or not all(layers):
        raise ValueError("layers: expected at least one layer of one or two directions")
    num_directions = len(layers[0])
    first = layers[0][0]
    hidden = int(first.w_hh.shape[0]) // 4
    input_size = int(first.w_ih.shape[-1])
    weights: list[Array] = []
    biases: list[Array] = []
    for l, layer in enumerate(layers):
        if len(layer) != num_directions or num_directions not in (1, 2):
            raise ValueError(
                f"layers[{l}]: expected {num_directions} direction(s) like layer 0 (1 or 2), "
                f"got {len(layer)}"
            )
        in_size = input_size if l == 0 else num_directions * hidden
        for d, p in enumerate(layer):
            where = f"layers[{l}][{d}]"
            w_hr = getattr(p, "w_hr", None)
            if w_hr is not None:
                raise ValueError(
                    f"{where}.w_hr: cuDNN's LSTM through jax.experimental.rnn has no projection "
                    f"(jaxrnn.lstm's proj_size); got w_hr of shape {tuple(w_hr.shape)}"
                )
            _check_shape(p.w_ih, (4 * hidden, in_size), f"{where}.w_ih")
            _check_shape(p.w_hh, (4 * hidden, hidden), f"{where}.w_hh")
            weights += [p.w_ih.reshape(-1), p.w_hh.reshape(-1)]
            for name in ("b_ih", "b_hh"):
                b = getattr(p, name)
                if b is None:
                    b = jnp.zeros((4 * hidden,), p.w_ih.dtype)
                _check_shape(b, (4 * hidden,), f"{where}.{name}")
                biases.append(b)
    return jnp.concatenate(weights + biases)


def unpack(
    weights: Array, input_size: int, hidden_size: int, num_layers: int, bidirectional: bool
) -> list[list[LSTMParams]]:
    """The jaxrnn params ``layers[l][d]`` in flat cuDNN LSTM weights: :func:`pack` inverted.

    Every :class:`LSTMParams` has both biases and no projection.

    Raises:
      ValueError: naming ``weights`` when its shape is not
        ``[get_num_params_in_lstm(input_size, hidden_size, num_layers, bidirectional)]``.
    """
    num_directions = 2 if bidirectional else 1
    expected = jax.experimental.rnn.get_num_params_in_lstm(
        input_size, hidden_size, num_layers, bidirectional
    )
    if tuple(weights.shape) != (expected,):
        raise ValueError(
            f"weights: expected shape ({expected},) for input_size={input_size}, "
            f"hidden_size={hidden_size}, num_layers={num_layers}, "
            f"bidirectional={bidirectional}, got shape {tuple(weights.shape)}"
        )
    gates = 4 * hidden_size
    offset = 0

    def take(shape: tuple[int, ...]) -> Array:
        nonlocal offset
        size = math.prod(shape)
        part = weights[offset : offset + size].reshape(shape)
        offset += size
        return part

    matrices = []
    for l in range(num_layers):
        in_size = input_size if l == 0 else num_directions * hidden_size
        for _ in range(num_directions):
            matrices.append((take((gates, in_size)), take((gates, hidden_size))))
    vectors = [(take((gates,)), take((gates,))) for _ in matrices]
    params = [
        LSTMParams(w_ih, w_hh, b_ih, b_hh)
        for (w_ih, w_hh), (b_ih, b_hh) in zip(matrices, vectors, strict=True)
    ]
    return [params[l * num_directions : (l + 1) * num_directions] for l in range(num_layers)]


def _check_shape(a: Any, shape: tuple[int, ...], name: str) -> None:
    got = tuple(getattr(a, "shape", ()))
    if got != shape:
        raise ValueError(f"{name}: expected shape {shape} (cuDNN's LSTM layout), got shape {got}")


# ------------------------------------------------------------------------------- dispatch


def platform() -> str:
    """The platform ``kernel="cudnn"`` would run on: :func:`jax.default_backend`.

    A GPU backend is told apart as ``"cuda"`` (NVIDIA) or ``"rocm"`` (AMD)
    by its platform version.
    """
    name = jax.default_backend()
    if name in ("gpu", "cuda"):
        version = str(jax.extend.backend.get_backend().platform_version).lower()
        return "rocm" if "rocm" in version else "cuda"
    return name


def check_platform() -> None:
    """Raise unless the default backend is an NVIDIA GPU, where cuDNN's LSTM lowers."""
    name = platform()
    if name != "cuda":
        raise ValueError(
            f"kernel='cudnn': cuDNN runs on an NVIDIA GPU only; this computation runs on "
            f"{name!r} (jax.default_backend()); use kernel='xla'"
        )


def scan(
    cell: Cell,
    params: Params,
    xs: Array,
    carry: Carry,
    lengths: Array | None,
    reverse: bool,
    options: ScanOptions,
    num_feature_axes: int,
    resets: Array | None,
) -> tuple[Carry, Array]:
    """:func:`jaxrnn.scan` with ``kernel="cudnn"`` (checked, time-major, padding zeroed).

    ``reverse`` flips each sequence within its length, runs cuDNN forward
    and flips the outputs back: the definition of a reverse scan with lengths.
    """
    _check_options(options, resets, num_feature_axes)
    _check_cell(cell, [[params]])
    if xs.shape[0] > 0:  # the cell's own step checks the inputs, the carry and the params
        jax.eval_shape(cell.step, params, carry, xs[0])
    _check_float32(params, xs, carry)
    check_platform()
    if reverse:
        xs = flip(xs, lengths)
    final, ys = _lstm([[params]], xs, jax.tree.map(lambda a: a[None], carry), lengths, False)
    if reverse:
        ys = flip(ys, lengths)
    return jax.tree.map(lambda a: a[0], final), ys


def stack(
    cell: Cell,
    params: Any,
    xs: Array,
    carry: Carry,
    lengths: Array | None,
    options: ScanOptions,
    resets: Array | None,
    *,
    merge: Callable[[Array, Array], Array] | None,
    dropout: float,
    key: Array | None,
) -> tuple[Carry, Array]:
    """``Stack.apply`` with ``kernel="cudnn"``: every layer and direction in one cuDNN call.

    ``params`` are :class:`jaxrnn.StackParams`; ``xs`` is time-major and
    checked; ``carry`` has leaves ``[num_layers, num_directions, *batch, H]``;
    ``merge`` is None for concatenation (what cuDNN does between layers).
    Returns the carry in that layout and the last layer's merged outputs.
    """
    layers = _layers(params)
    num_layers, num_directions = len(layers), len(layers[0])
    _check_options(options, resets, 1)
    _check_cell(cell, layers)
    if merge is not None and num_directions == 2 and num_layers > 1:
        raise ValueError(
            f"merge: cuDNN feeds each layer the concatenated directions of the one below "
            f"(jaxrnn.concat); kernel='cudnn' takes another merge for one layer only, got "
            f"merge={merge!r} with num_layers={num_layers}"
        )
    if dropout > 0 and key is not None:
        raise ValueError(
            f"dropout: jax.experimental.rnn runs cuDNN's dropout from a fixed seed and no "
            f"key, not the stack's dropout drawn from key; kernel='cudnn' runs a stack with "
            f"dropout only without a key (evaluation), got dropout={dropout} and a key"
        )
    if xs.shape[0] > 0:
        step_carry = jax.tree.map(lambda a: a[0, 0], carry)
        jax.eval_shape(cell.step, layers[0][0], step_carry, xs[0])
    _check_float32(params, xs, carry)
    check_platform()
    lead = (num_layers * num_directions,)
    flat_carry = jax.tree.map(lambda a: a.reshape(lead + a.shape[2:]), carry)
    final, ys = _lstm(layers, xs, flat_carry, lengths, num_directions == 2)
    final = jax.tree.map(lambda a, c: a.reshape(c.shape), final, carry)
    if merge is not None and num_directions == 2:
        hidden = ys.shape[-1] // 2
        ys = merge(ys[..., :hidden], ys[..., hidden:])
    return final, ys


def _layers(params: Any) -> list[list[LSTMParams]]:
    """``layers[l][d]`` of :class:`jaxrnn.StackParams` (``rest`` has a leading layer axis)."""

    def directions(layer: Any) -> list[LSTMParams]:
        return [layer.forward] + ([] if layer.backward is None else [layer.backward])

    layers = [directions(params.first)]
    if params.rest is not None:
        count = jax.tree.leaves(params.rest)[0].shape[0]
        for l in range(count):
            layers.append(directions(jax.tree.map(lambda a, l=l: a[l], params.rest)))
    return layers


def _lstm(
    layers: Layers, xs: Array, carry: LSTMCarry, lengths: Array | None, bidirectional: bool
) -> tuple[LSTMCarry, Array]:
    """One cuDNN call: ``xs`` ``[T, *batch, I]``, carry leaves ``[L·D, *batch, H]``.

    Returns the carry in that layout and the outputs ``[T, *batch, D·H]``,
    the directions concatenated, zero past each length.
    """
    num_steps, batch_shape, input_size = xs.shape[0], xs.shape[1:-1], xs.shape[-1]
    hidden = carry.c.shape[-1]
    rows = math.prod(batch_shape)
    out_size = (2 if bidirectional else 1) * hidden
    if num_steps == 0 or rows == 0:  # nothing for cuDNN to compute
        return carry, jnp.zeros((num_steps, *batch_shape, out_size), xs.dtype)
    x = jnp.swapaxes(xs.reshape(num_steps, rows, input_size), 0, 1)  # batch-major [N, T, I]
    h0 = carry.h.reshape(-1, rows, hidden)
    c0 = carry.c.reshape(-1, rows, hidden)
    if lengths is None:
        seq_lengths = jnp.full((rows,), num_steps, jnp.int32)
    else:
        flat = jnp.clip(lengths.reshape(rows), 0, num_steps).astype(jnp.int32)
        seq_lengths = jnp.maximum(flat, 1)  # a length-0 sequence: see the module docstring
    y, h_n, c_n = _cudnn_lstm(
        x,
        h0,
        c0,
        pack(layers),
        seq_lengths,
        input_size=input_size,
        hidden_size=hidden,
        num_layers=len(layers),
        dropout=0.0,
        bidirectional=bidirectional,
    )
    ys = jnp.swapaxes(y, 0, 1)  # time-major [T, N, D·H]
    if lengths is not None:
        valid = jnp.arange(num_steps, dtype=jnp.int32)[:, None] < flat[None, :]
        ys = jnp.where(valid[..., None], ys, 0)
        empty = (flat == 0)[None, :, None]
        h_n, c_n = jnp.where(empty, h0, h_n), jnp.where(empty, c0, c_n)
    final = LSTMCarry(h_n.reshape(carry.h.shape), c_n.reshape(carry.c.shape))
    return final, ys.reshape(num_steps, *batch_shape, out_size)


# --------------------------------------------------------------------------------- checks


def _check_options(options: ScanOptions, resets: Array | None, num_feature_axes: int) -> None:
    """Raise naming the first option cuDNN's whole-sequence LSTM does not have."""
    if options.method != "sequential":
        raise ValueError(
            f"method: kernel='cudnn' runs the LSTM's steps one after another in cuDNN; "
            f"expected method='sequential', got method={options.method!r}"
        )
    if options.truncate is not None:
        raise ValueError(
            f"truncate: cuDNN differentiates the whole sequence; kernel='cudnn' has no "
            f"truncated BPTT, got truncate={options.truncate} (use kernel='xla')"
        )
    if options.checkpoint is not None:
        raise ValueError(
            f"checkpoint: cuDNN keeps its own reserve space for the backward pass; "
            f"kernel='cudnn' has no checkpointing through time, got "
            f"checkpoint={options.checkpoint} (use kernel='xla')"
        )
    if options.backward != "fused":
        raise ValueError(
            f"backward: kernel='cudnn' differentiates by cuDNN's own backward pass; expected "
            f"backward='fused' (the default), got backward={options.backward!r} (use "
            f"kernel='xla' for autodiff through jax.lax.scan, forward mode included)"
        )
    if resets is not None:
        raise ValueError(
            "resets: cuDNN's LSTM has no segment resets; kernel='cudnn' needs resets=None "
            "(use kernel='xla')"
        )
    if num_feature_axes != 1:
        raise ValueError(
            f"num_feature_axes: cuDNN's LSTM reads one input vector per step; expected 1, "
            f"got {num_feature_axes}"
        )


def _check_cell(cell: Cell, layers: Layers) -> None:
    """Raise unless ``cell`` is a :func:`jaxrnn.lstm` that cuDNN computes exactly."""
    spec = described_spec(cell)
    if spec is None and cell.spec is not None:
        raise ValueError(
            "cell: kernel='cudnn' runs jaxrnn.lstm's own step; this cell's step was replaced "
            "(cell.step is not cell.spec.step), so cuDNN would not compute it; use kernel='xla'"
        )
    if spec is None:
        raise ValueError(
            "cell: kernel='cudnn' runs jaxrnn.lstm's own step; got a cell without a spec (a "
            "user's cell, or one wrapped by jaxrnn.clip_carry_grad or "
            "jaxrnn.recurrent_dropout), whose step cuDNN would not compute; use kernel='xla'"
        )
    if (why := spec.cudnn_mismatch()) is not None:
        raise ValueError(f"cell: {why}; use kernel='xla'")
    for l, layer in enumerate(layers):
        for d, p in enumerate(layer):
            w_hr = getattr(p, "w_hr", None)
            if w_hr is not None:
                where = "params" if len(layers) == len(layer) == 1 else f"layer {l} direction {d}"
                raise ValueError(
                    f"params.w_hr: cuDNN's LSTM through jax.experimental.rnn has no projection "
                    f"(jaxrnn.lstm's proj_size); {where} has w_hr of shape "
                    f"{tuple(w_hr.shape)}; use kernel='xla'"
                )


def _check_float32(params: Params, xs: Array, carry: Carry) -> None:
    """Raise naming the first argument that is not float32, the one dtype cuDNN runs here."""
    for name, tree in (("xs", xs), ("params", params), ("carry", carry)):
        dtypes = sorted({str(a.dtype) for a in jax.tree.leaves(tree)} - {"float32"})
        if dtypes:
            raise ValueError(
                f"{name}: cuDNN's LSTM through jax.experimental.rnn computes in float32 only; "
                f"got {', '.join(dtypes)} (use kernel='xla', or float32 arrays)"
            )

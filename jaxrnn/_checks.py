"""Argument checks, the time-axis layout and the options record of every driver.

The bottom layer of the execution stack: :mod:`jaxrnn._sequential`,
:mod:`jaxrnn._fused`, :mod:`jaxrnn._parallel` and the dispatcher
:func:`jaxrnn.scan` import from here, never the other way round.
"""

from __future__ import annotations

import functools
from collections.abc import Hashable, Mapping
from typing import Any, Literal, NamedTuple, TypedDict, cast

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn._cell import Array, Carry, Cell, Params, Shape, check_positive_int, described_spec
from jaxrnn._time_axis import TimeAxis

Backward = Literal["fused", "autodiff"]
Method = Literal["sequential", "associative", "deer", "quasi-deer"]
METHODS: tuple[str, ...] = ("sequential", "associative", "deer", "quasi-deer")
Kernel = Literal["xla", "cudnn"]
KERNELS: tuple[str, ...] = ("xla", "cudnn")


class DEEROptions(NamedTuple):
    """Options of ``jaxrnn.scan(..., method="deer" | "quasi-deer", method_options=...)``.

    The fields are the keyword arguments of :func:`jaxrnn.deer` of the same names.

    Attributes:
      tol: a sequence has converged once its trajectory solves the recurrence
        to ``tol``: max_t |f(h_{t-1}, x_t) − h_t| ≤ tol · max(1, max_t |h_t|),
        judged for each sequence on its own (a NaN or Inf residual is never
        converged). A sequence that passes the test on an iterate takes one
        more iteration and is then left alone; the iterations end when every
        sequence has converged or after ``max_iters``. Default 1e-10 for a
        float64 carry, 1e-5 otherwise. The adjoint iterations of
        quasi-DEER's backward pass use the same test.
      max_iters: at most this many iterations, and never more than T (the
        default), the number in which an undamped iteration reaches the
        sequential trajectory exactly.
      damping: λ ≥ 0 of ELK (Gonzalez et al. 2024): each iteration minimises
        the linearised residual plus λ·|state − previous state|² (over the
        valid steps) by a parallel Kalman filter and smoother. 0 (the
        default) is plain (quasi-)DEER; larger values take shorter, safer
        steps for unstable dynamics, at the price of more iterations on
        stable ones and of the guarantee of reaching the sequential
        trajectory in T iterations (``max_iters`` is still at most T, and
        a run that has not converged by then raises, or with
        ``throw=False`` says so in ``DEERInfo.converged``).
      throw: when some sequence has not converged after ``max_iters``
        iterations, raise a ``RuntimeError`` saying so (True, the default,
        as optimistix's ``throw``); under ``jit``, ``vmap`` or ``grad`` the
        error is raised when the computation runs, as a
        ``jax.errors.JaxRuntimeError`` (a ``RuntimeError``) whose message
        contains the same text (the check is a host callback,
        :func:`jax.pure_callback`: where callbacks cannot run, as in
        ``jax.export``, pass False). False: no check, the result is returned
        as it is, and :func:`jaxrnn.deer`'s ``DEERInfo.converged`` says
        which sequences converged.

    Example:
      >>> import jax, jax.numpy as jnp, jaxrnn
      >>> cell = jaxrnn.gru(4)
      >>> params = cell.init(jax.random.key(0), input_size=2)
      >>> opts = jaxrnn.DEEROptions(tol=1e-4, max_iters=20)
      >>> carry, ys = jaxrnn.scan(cell, params, jnp.ones((20, 2)), method="quasi-deer",
      ...                         method_options=opts)
      >>> ys.shape
      (20, 4)
    """

    tol: float | None = None
    max_iters: int | None = None
    damping: float = 0.0
    throw: bool = True


class ScanOptions(NamedTuple):
    """How :func:`jaxrnn.scan` computes: one record that every layer forwards unchanged.

    :func:`jaxrnn.scan`, ``Stack.apply``, :func:`jaxrnn.training.readout`, the
    :mod:`jaxrnn.nnx` modules and the diagnostics take ``options=ScanOptions(...)``
    and the same fields as keywords (a keyword overrides the record's field).
    The fields are documented in :func:`jaxrnn.scan`.

    Attributes:
      unroll: passed to :func:`jax.lax.scan`.
      truncate: BPTT(k): the carry's gradient is stopped every k steps.
      checkpoint: checkpointing through time in chunks of k steps.
      backward: ``"fused"`` or ``"autodiff"``.
      method: ``"sequential"``, ``"associative"``, ``"deer"`` or ``"quasi-deer"``.
      method_options: a :class:`DEEROptions` for the DEER methods, or None.
      sequence_axis: the name of a mesh axis the time axis is split across
        (sequence parallelism, for the parallel-in-time methods), or None.
      kernel: ``"xla"`` (default) or ``"cudnn"`` (an LSTM run by cuDNN on an
        NVIDIA GPU).

    Example:
      >>> import jax, jax.numpy as jnp, jaxrnn
      >>> opts = jaxrnn.ScanOptions(method="associative")
      >>> rnn = jaxrnn.stack(jaxrnn.mingru(8), num_layers=2)
      >>> params = rnn.init(jax.random.key(0), input_size=3)
      >>> carry, ys = rnn.apply(params, jnp.ones((10, 2, 3)), options=opts)
      >>> ys.shape
      (10, 2, 8)
    """

    unroll: int | bool = 1
    truncate: int | None = None
    checkpoint: int | None = None
    backward: Backward = "fused"
    method: Method = "sequential"
    method_options: DEEROptions | None = None
    sequence_axis: str | None = None
    kernel: Kernel = "xla"


class ScanKwargs(TypedDict, total=False):
    """The fields of :class:`ScanOptions` as keyword arguments (for ``**kwargs`` typing)."""

    unroll: int | bool
    truncate: int | None
    checkpoint: int | None
    backward: Backward
    method: Method
    method_options: DEEROptions | None
    sequence_axis: str | None
    kernel: Kernel


def scan_options(options: ScanOptions | None, overrides: dict[str, Any]) -> ScanOptions:
    """``options`` (defaults when None) with the keyword ``overrides``, checked.

    Raises a TypeError naming any keyword that is not a :class:`ScanOptions` field.
    """
    if options is None:
        options = ScanOptions()
    elif not isinstance(options, ScanOptions):
        raise TypeError(f"options: expected a jaxrnn.ScanOptions or None, got {options!r}")
    unknown = sorted(set(overrides) - set(ScanOptions._fields))
    if unknown:
        raise TypeError(
            f"{', '.join(unknown)}: not an option of jaxrnn.scan; expected keywords among "
            f"{list(ScanOptions._fields)} (the fields of jaxrnn.ScanOptions)"
        )
    options = options._replace(**overrides)
    _check_option_values(options)
    return options


def _check_option_values(options: ScanOptions) -> None:
    unroll = options.unroll
    if not (isinstance(unroll, bool) or (isinstance(unroll, int) and unroll >= 1)):
        raise ValueError(f"unroll: expected a positive integer or a bool, got {unroll!r}")
    for name in ("truncate", "checkpoint"):
        value = getattr(options, name)
        if value is not None:
            check_positive_int(value, name)
    if options.backward not in ("fused", "autodiff"):
        raise ValueError(f"backward: expected 'fused' or 'autodiff', got {options.backward!r}")
    if options.method not in METHODS:
        raise ValueError(f"method: expected one of {list(METHODS)}, got {options.method!r}")
    if not isinstance(options.kernel, str) or options.kernel not in KERNELS:
        raise ValueError(f"kernel: expected 'xla' or 'cudnn', got {options.kernel!r}")
    mopts = options.method_options
    if mopts is not None and not isinstance(mopts, DEEROptions):
        raise TypeError(f"method_options: expected a jaxrnn.DEEROptions or None, got {mopts!r}")
    method = options.method
    deer_like = method in ("deer", "quasi-deer")
    if mopts is not None and not deer_like:
        raise ValueError(
            f"method_options: only for method='deer' or 'quasi-deer', got method={method!r}"
        )
    if method != "sequential":
        for name in ("truncate", "checkpoint"):
            if getattr(options, name) is not None:
                raise ValueError(
                    f"{name}: only for method='sequential'; the {method!r} method has no "
                    f"step-by-step backward pass to truncate or checkpoint"
                )
    axis = options.sequence_axis
    if axis is not None and not isinstance(axis, str):
        raise TypeError(f"sequence_axis: expected the name of a mesh axis or None, got {axis!r}")
    if axis is not None and method == "sequential":
        raise ValueError(
            f"sequence_axis: only for method='associative', 'deer' or 'quasi-deer' (the "
            f"parallel-in-time methods split the time axis across devices), got "
            f"method='sequential' with sequence_axis={axis!r}"
        )
    if deer_like and options.backward != "fused":
        raise ValueError(
            f"backward: only for method='sequential'; method={method!r} always differentiates "
            f"implicitly at the fixed point, got backward={options.backward!r}"
        )


class ScanArgs(NamedTuple):
    """The checked arguments of :func:`jaxrnn.scan` and :func:`jaxrnn.scan_reduce`.

    ``xs`` is time-major; ``num_steps`` counts the steps of the whole
    sequence, of which ``xs`` holds the chunk that starts at step
    ``time.first_step(xs.shape[0])`` when ``time`` is split across devices.
    """

    xs: Array
    batch_shape: Shape
    carry: Carry
    lengths: Array | None
    options: ScanOptions
    time: TimeAxis
    num_steps: int
    resets: Array | None = None


def check_scan_args(
    cell: Cell,
    params: Params,
    xs: Any,
    carry: Carry | None,
    lengths: Any,
    reverse: Any,
    time_major: bool,
    num_feature_axes: int,
    options: ScanOptions | None,
    overrides: Mapping[str, object],
    resets: Any = None,
    *,
    cudnn: bool = False,
) -> ScanArgs:
    """Check the arguments every scan driver shares; ``xs`` and ``resets`` laid out time-major.

    ``cudnn``: whether the caller runs ``kernel="cudnn"`` (:func:`jaxrnn.scan`
    does); the other drivers raise for it rather than run XLA in its place.
    """
    options = scan_options(options, dict(overrides))
    if options.kernel == "cudnn" and not cudnn:
        raise ValueError(
            "kernel: 'cudnn' runs in jaxrnn.scan and Stack.apply only (cuDNN computes whole "
            "sequences and returns every output); this function runs on XLA: expected "
            "kernel='xla', got kernel='cudnn'"
        )
    xs, batch_shape = to_time_major(xs, time_major, num_feature_axes)
    time = sequence_time(options.sequence_axis, xs.shape[0])
    num_steps = xs.shape[0] * time.shards()
    check_params(cell, params)
    carry = check_carry(cell, carry, batch_shape, default_dtype(params, xs))
    lengths = check_lengths(lengths, batch_shape, num_steps)
    if not isinstance(reverse, bool):
        raise TypeError(f"reverse: expected a bool, got {reverse!r}")
    resets = check_resets(resets, xs.shape[0], batch_shape, time_major)
    options = whole_sequence(options, num_steps)
    return ScanArgs(xs, batch_shape, carry, lengths, options, time, num_steps, resets)


def sequence_time(axis: str | None, num_steps: int) -> TimeAxis:
    """The time axis as this call sees it: split when ``axis`` is a ``shard_map`` axis here.

    Outside ``shard_map``, ``axis`` must be an axis of the current mesh
    (:func:`jax.set_mesh`) that divides the T steps; the parallel methods
    then split the sequence themselves, and the time axis is whole here.
    """
    if axis is None:
        return TimeAxis()
    mesh = jax.sharding.get_abstract_mesh()
    if axis in mesh.manual_axes:
        return TimeAxis(axis)
    if axis not in mesh.axis_names:
        where = (
            f"the current mesh has axes {mesh.axis_names}" if mesh.axis_names else "no mesh is set"
        )
        raise ValueError(
            f"sequence_axis: expected the name of an axis of a jax.shard_map around this call "
            f"or of the current mesh (with jax.set_mesh(mesh): ...), got {axis!r}; {where}"
        )
    devices = mesh.shape[axis]
    if num_steps % devices:
        raise ValueError(
            f"xs: expected a number of steps divisible by the {devices} devices of "
            f"sequence_axis={axis!r} (each holds an equal chunk of the time axis), got "
            f"T={num_steps}; pad the sequences and pass lengths"
        )
    return TimeAxis()


def whole_sequence(options: ScanOptions, num_steps: int) -> ScanOptions:
    """``truncate`` and ``checkpoint`` of T steps or more mean the whole sequence: None."""
    truncate, checkpoint = options.truncate, options.checkpoint
    return options._replace(
        truncate=None if truncate is not None and truncate >= num_steps else truncate,
        checkpoint=None if checkpoint is not None and checkpoint >= num_steps else checkpoint,
    )


# ------------------------------------------------------------------------------------ layout


def check_num_feature_axes(num_feature_axes: Any) -> int:
    """Raise unless ``num_feature_axes`` is a positive integer."""
    return check_positive_int(num_feature_axes, "num_feature_axes")


def to_time_major(
    xs: Any, time_major: bool, num_feature_axes: int = 1, name: str = "xs"
) -> tuple[Array, Shape]:
    """Check ``xs`` and return it time-major ``[T, *batch, *features]``, with its batch shape.

    Batch-major input is ``[*batch, T, *features]`` with ``num_feature_axes``
    feature axes (one for an input vector, three for a ConvLSTM's ``H, W, C``).
    """
    if not isinstance(time_major, bool):
        raise TypeError(f"time_major: expected a bool, got {time_major!r}")
    check_num_feature_axes(num_feature_axes)
    xs = check_xs(xs, name, num_feature_axes)
    if not time_major:
        xs = jnp.moveaxis(xs, -1 - num_feature_axes, 0)
    return xs, tuple(xs.shape[1 : xs.ndim - num_feature_axes])


def from_time_major(ys: Any, time_major: bool, batch_ndim: int) -> Any:
    """Move the leading time axis of every leaf of ``ys`` back where the input had it."""
    if time_major:
        return ys
    return jax.tree.map(lambda y: jnp.moveaxis(y, 0, batch_ndim), ys)


# ------------------------------------------------------------------------------------ checks


def check_xs(xs: Any, name: str = "xs", num_feature_axes: int = 1) -> Array:
    """Return ``xs`` as a floating array with a time axis, or raise naming ``name``."""
    if not hasattr(xs, "shape"):
        xs = jnp.asarray(xs)
    if xs.ndim < 1 + num_feature_axes:
        want = "[T, *batch, input_size]" if num_feature_axes == 1 else "[T, *batch, *features]"
        raise ValueError(
            f"{name}: expected shape {want} (rank >= {1 + num_feature_axes}, with "
            f"{num_feature_axes} feature axis{'es' if num_feature_axes > 1 else ''}), "
            f"got shape {tuple(xs.shape)}"
        )
    if not jnp.issubdtype(xs.dtype, jnp.floating):
        raise TypeError(f"{name}: expected a floating dtype, got {xs.dtype}")
    return jnp.asarray(xs)


def default_dtype(params: Params, xs: Array) -> Any:
    """The dtype of a default carry: the result type of ``xs`` and the params."""
    return jnp.result_type(xs, *jax.tree.leaves(params))


def check_carry(
    cell: Cell, carry: Carry | None, batch_shape: Shape, dtype: Any, name: str = "carry"
) -> Carry:
    """Return ``carry`` (zeros when None) after checking it against ``cell.initial_carry``."""
    expected = jax.eval_shape(lambda: cell.initial_carry(batch_shape, dtype))
    if carry is None:
        return cell.initial_carry(batch_shape, dtype)
    check_like(carry, expected, name)
    return jax.tree.map(jnp.asarray, carry)


def check_like(tree: Any, expected: Any, name: str) -> None:
    """Raise unless ``tree`` has the structure and leaf shapes of ``expected``."""
    got_def: Any = jax.tree.structure(tree)
    want_def: Any = jax.tree.structure(expected)
    if got_def != want_def:
        raise TypeError(f"{name}: expected a pytree of structure {want_def}, got {got_def}")
    got = jax.tree_util.tree_flatten_with_path(tree)[0]
    for (path, leaf), want in zip(got, jax.tree.leaves(expected), strict=True):
        where = name + jax.tree_util.keystr(path)
        if not hasattr(leaf, "shape") or tuple(leaf.shape) != tuple(want.shape):
            shape = tuple(leaf.shape) if hasattr(leaf, "shape") else type(leaf).__name__
            raise ValueError(f"{where}: expected shape {tuple(want.shape)}, got {shape}")
        if not jnp.issubdtype(leaf.dtype, jnp.floating):
            raise TypeError(f"{where}: expected a floating dtype, got {leaf.dtype}")


def check_lengths(lengths: Any, batch_shape: Shape, num_steps: int) -> Array | None:
    """Return ``lengths`` as an integer array of shape ``batch_shape``, or raise.

    Concrete values outside [0, T] raise; traced ones are clipped to [0, T],
    so that under ``jit`` they act as the nearest end of that range on every path.
    """
    if lengths is None:
        return None
    if not hasattr(lengths, "dtype"):
        lengths = np.asarray(lengths)
    if not jnp.issubdtype(lengths.dtype, jnp.integer):
        raise TypeError(f"lengths: expected an integer dtype, got {lengths.dtype}")
    if tuple(lengths.shape) != tuple(batch_shape):
        raise ValueError(
            f"lengths: expected one length per sequence, shape {tuple(batch_shape)}, "
            f"got shape {tuple(lengths.shape)}"
        )
    try:
        values = np.asarray(lengths)
    except jax.errors.TracerArrayConversionError:
        return jnp.clip(lengths, 0, num_steps)
    if values.size and (values.min() < 0 or values.max() > num_steps):
        raise ValueError(
            f"lengths: expected values in [0, T={num_steps}], "
            f"got values in [{values.min()}, {values.max()}]"
        )
    return jnp.asarray(lengths)


def check_resets(resets: Any, num_steps: int, batch_shape: Shape, time_major: bool) -> Array | None:
    """Return ``resets`` as a time-major boolean array ``[T, *batch]``, or raise naming it.

    ``resets`` is laid out like ``xs`` without its feature axes: ``[T, *batch]``,
    or ``[*batch, T]`` with ``time_major=False`` (``T`` is this device's
    number of steps when the time axis is split across devices).
    """
    if resets is None:
        return None
    if not hasattr(resets, "dtype"):
        resets = np.asarray(resets)
    if resets.dtype != jnp.bool_:
        raise TypeError(
            f"resets: expected a bool array (True where a step starts a new segment), got "
            f"dtype {resets.dtype}"
        )
    want = (num_steps, *batch_shape) if time_major else (*batch_shape, num_steps)
    if tuple(resets.shape) != want:
        layout = "[T, *batch]" if time_major else "[*batch, T]"
        raise ValueError(
            f"resets: expected shape {layout} = {want} (xs without its feature axes), got "
            f"shape {tuple(resets.shape)}"
        )
    resets = jnp.asarray(resets)
    return resets if time_major else jnp.moveaxis(resets, len(batch_shape), 0)


def check_params(cell: Cell, params: Params, name: str = "params") -> None:
    """Raise unless ``params`` fit a built-in cell: its fields, their shapes, floating dtypes.

    The reference is ``cell.init(key, input_size)``, evaluated abstractly,
    with the input size the params were built for (``spec.input_size``), so
    that a bias of the wrong length or params of another hidden size are
    named by their field; an input of the wrong size is the step's to name.
    Only for a cell whose spec describes its step (a user's step may read
    params of any form, and its own checks judge them); integer leaves are
    refused for every cell with a spec.
    """
    if not isinstance(cell, Cell):
        hint = ": a Stack runs itself, stack.apply(params, xs)" if hasattr(cell, "apply") else ""
        raise TypeError(f"cell: expected a jaxrnn.Cell, got {type(cell).__name__}{hint}")
    if cell.spec is None:
        return
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        dtype = getattr(leaf, "dtype", None)
        if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(
                f"{name}{jax.tree_util.keystr(path)}: expected a floating array, got "
                f"{'dtype ' + str(dtype) if dtype is not None else type(leaf).__name__}"
            )
    spec = described_spec(cell)
    if spec is None:
        return
    want_type = type(_init_shapes(cast(Hashable, cell.init), 1))
    if type(params) is not want_type:
        raise TypeError(
            f"{name}: expected {want_type.__name__} (the params of this cell, from cell.init), "
            f"got {type(params).__name__}"
        )
    input_size = spec.input_size(params)
    expected = _init_shapes(cast(Hashable, cell.init), input_size)
    fields = getattr(want_type, "_fields", None)
    if fields is None:
        check_like(params, expected, name)
        return
    for field in fields:
        want, got = getattr(expected, field), getattr(params, field)
        where = f"{name}.{field}"
        if want is None and got is not None:
            raise ValueError(f"{where}: expected None for this cell, got an array")
        if want is None:
            continue
        if got is None or tuple(got.shape) != tuple(want.shape):
            got_shape = None if got is None else tuple(got.shape)
            raise ValueError(
                f"{where}: expected shape {tuple(want.shape)} (what this cell's init gives "
                f"for input_size={input_size}), got {got_shape}"
            )


@functools.lru_cache(maxsize=256)
def _init_shapes(init: Any, input_size: int) -> Any:
    return jax.eval_shape(lambda: init(jax.random.key(0), input_size))

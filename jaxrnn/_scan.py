"""`jaxrnn.scan`: run a cell over a sequence — a thin dispatcher over the execution paths.

Layers, bottom up: :mod:`jaxrnn._checks` (arguments, layout, options),
:mod:`jaxrnn._sequential` (the masked loop over ``cell.step``),
:mod:`jaxrnn._fused` and :mod:`jaxrnn._parallel` (the fast paths, each used
only where it computes exactly what ``cell.step`` computes),
:mod:`jaxrnn._cudnn` (``kernel="cudnn"``, which refuses what cuDNN does not
compute exactly), and this module, which checks once and picks one.
"""

from __future__ import annotations

from typing import Unpack

import jax
from jax.typing import ArrayLike
from jaxtyping import Float, Shaped

from jaxrnn import _cudnn, _fused, _parallel
from jaxrnn._cell import Array, Carry, Cell, Params
from jaxrnn._checks import ScanKwargs, ScanOptions, check_scan_args, from_time_major
from jaxrnn._sequential import fresh_steps, sequential_scan, zero_padding


def scan(
    cell: Cell,
    params: Params,
    xs: Shaped[ArrayLike, "..."],
    *,
    carry: Carry | None = None,
    lengths: Array | None = None,
    reverse: bool = False,
    time_major: bool = True,
    num_feature_axes: int = 1,
    options: ScanOptions | None = None,
    resets: Shaped[ArrayLike, "..."] | None = None,
    **kwargs: Unpack[ScanKwargs],
) -> tuple[Carry, Float[Array, "..."]]:
    """Run ``cell`` over the time axis of ``xs``.

    Without ``lengths`` this is exactly::

      for t in range(T):                      # t = T-1 … 0 with reverse=True
          carry, ys[t] = cell.step(params, carry, xs[t])

    With ``lengths`` (sequences right-padded), step ``t`` of sequence ``b`` is
    skipped when ``t >= lengths[b]``: its carry is left unchanged and its
    output is exactly zero. The final carry is therefore each sequence's carry
    after its last valid step, and ``reverse=True`` walks each sequence from
    its own last valid step back to step 0, so padding stays at the end (the
    semantics of flax's ``flip_sequences`` and PyTorch's ``PackedSequence``).
    Padded inputs are never read: they are set to zero before any step runs,
    so NaN or Inf in the padding reaches neither the outputs nor any gradient.
    With T = 0 the result is the initial carry and empty outputs, on every
    path.

    With ``resets`` (Haiku's ``ResetCore``: episodes of a reinforcement
    learning rollout, documents concatenated into one sequence),
    ``resets[t, b]`` True says that step t of sequence b starts a new
    segment: the carry before step t is replaced by the initial carry
    ``carry``. The result equals running each segment on its own from the
    initial carry: the same outputs, the final carry that of the last valid
    step (in the last segment), and no gradient across a reset (the initial
    carry's gradient sums every segment's use of it). With ``reverse=True``
    the segments are the same and each runs backwards from its own last
    valid step, as each segment run alone with ``reverse=True`` (what a
    bidirectional layer over concatenated documents needs); the final carry
    is then the one after step 0, the first segment's. Resets at padded
    steps are ignored, a reset at step 0 changes nothing, and ``truncate``
    counts each segment's steps from where it starts. Every path and method
    honours ``resets``.

    Every path — fused, checkpointed, associative, DEER — computes what this
    loop over ``cell.step`` computes: equal to rounding (the fused path
    computes the same equations in another order of floating-point
    operations, so it is not bitwise equal to the loop), or to the tolerance
    of DEER. A fast path runs only when the cell's spec describes its own
    step; a step replaced with ``cell._replace(step=...)`` or wrapped (e.g.
    by :func:`jaxrnn.clip_carry_grad`) runs through that step by autodiff.

    Args:
      cell: the :class:`Cell` to run.
      params: the cell's params, from ``cell.init``.
      xs: inputs ``[T, *batch, I]``, or ``[*batch, T, I]`` with ``time_major=False``
        (with ``num_feature_axes=k``, the last k axes are the features:
        ``[T, *batch, H, W, C]`` for a ConvLSTM-style step).
      carry: the initial carry for ``batch`` (zeros when None), structured like
        ``cell.initial_carry(batch)``.
      lengths: integer array of shape ``batch`` with values in [0, T]: the
        number of valid steps of each sequence. Values are checked when they
        are concrete; under ``jit`` they are not, and values outside [0, T]
        act as the nearest end of that range, with every option.
      reverse: run from the last valid step to the first; outputs keep the
        input's time order.
      time_major: whether the time axis of ``xs`` (and of the outputs) is the
        first axis or the one before the features.
      num_feature_axes: how many trailing axes of ``xs`` are one step's
        input (Flax's name); 1 for the built-in cells. It says where the time
        axis of batch-major input is, and which axes are the batch.
      resets: bool array ``[T, *batch]`` (``[*batch, T]`` with
        ``time_major=False``: ``xs`` without its feature axes), True where a
        step starts a new segment (see above); None for one segment per sequence.
        With ``sequence_axis`` inside a ``shard_map``, this device's chunk of it, like ``xs``.
      options: a :class:`jaxrnn.ScanOptions` holding the options below, the
        one value that stacks, readouts, modules and diagnostics forward
        unchanged; the keywords below override its fields.
      unroll: passed to :func:`jax.lax.scan`.
      truncate: truncated BPTT, BPTT(k) of Williams & Peng 1990: the gradient
        through the carry is stopped every ``truncate`` steps of each
        sequence (counted from where it starts, its last valid step when
        ``reverse``), so each chunk of k steps is differentiated on its own
        while the forward pass carries the state across. The initial carry
        still gets the first chunk's gradient. ``truncate >= T`` is full BPTT
        (and takes the fused path).
      checkpoint: checkpointing through time: only every ``checkpoint``-th
        carry is kept for the backward pass, which recomputes each chunk of
        steps from its first carry. Memory for the backward pass grows like
        T/k + k instead of T, for about one more forward pass of compute;
        gradients are unchanged. When k does not divide T the last chunk is
        shorter (no step is padded); ``checkpoint >= T`` is the whole
        sequence in one piece, that is no checkpointing.
      backward: how gradients are computed. ``"fused"`` (default): for the
        built-in cells (LSTM without projection) whose step is their own, in
        bfloat16, float16, float32 or float64 (bfloat16 matmuls accumulate in
        float32, as the step's), without ``truncate``, one sequence-level custom VJP
        with the input projection hoisted out of the loop, one recurrent
        matmul per step each way, and every weight gradient computed as one
        matmul after the loop (cuDNN's structure); every other case (user
        cells, replaced or wrapped steps, params of mixed dtypes, ``truncate``) uses
        autodiff. With ``checkpoint``, each chunk of steps is one fused
        custom VJP under :func:`jax.checkpoint`.
        ``"autodiff"``: plain autodiff through :func:`jax.lax.scan`. Both give
        the same outputs and gradients, equal to rounding and both support reverse-over-reverse
        (e.g. Hessian-vector products by ``jax.grad`` of ``jax.grad``).
        Forward mode (``jax.jvp``, ``jax.jacfwd``, RTRL) needs
        ``backward="autodiff"``: JAX raises a ``TypeError`` for forward mode
        through a custom VJP.
      kernel: who computes the sequence. ``"xla"`` (default): the paths
        above, compiled by XLA, on any backend. ``"cudnn"``: NVIDIA's cuDNN
        LSTM through :func:`jax.experimental.rnn.lstm`, forward and backward
        over the whole sequence in cuDNN's kernels, for a
        :func:`jaxrnn.lstm` cell (σ and tanh, no ``proj_size``, its own
        step) in float32, with ``method="sequential"`` and the default
        ``backward``, without ``truncate``, ``checkpoint`` or ``resets``;
        ``lengths`` and ``reverse`` keep their meaning above, ``unroll``
        has no effect, and cuDNN's float32 matmuls follow
        ``jax_default_matmul_precision`` as XLA's do (TF32 tensor cores
        unless it asks for ``"highest"``). Anything else raises a ValueError naming the argument
        that stops it: cuDNN is never silently replaced by XLA. It runs on
        an NVIDIA GPU only, decided at trace time by
        :func:`jax.default_backend` (a computation placed on another device
        by ``jax.default_device`` is not seen): on a CPU or TPU backend it
        raises. Not faster everywhere: measure before choosing it.
        :meth:`Stack.apply <jaxrnn.Stack>` sends a whole stack of such
        layers, both directions included, to cuDNN in one call.
      method: how the T steps are computed; every method gives the same
        carry, outputs and gradients (to rounding, or to the tolerance of
        DEER), with ``lengths`` and ``reverse``. ``"sequential"`` (default):
        one step after another, as above. ``"associative"``: for a cell whose
        recurrence is linear in its carry (:func:`jaxrnn.mingru`,
        :func:`jaxrnn.minlstm`, :func:`jaxrnn.lru`, any cell with a
        :class:`jaxrnn.LinearSpec` of its own step), all steps at once by
        :func:`jax.lax.associative_scan`, O(log T) sequential depth; a
        ValueError for any other cell. ``"deer"``: any cell, by Newton
        iterations on the whole trajectory; ``"quasi-deer"``: the same with
        diagonal Jacobians. See :func:`jaxrnn.deer`, which also returns the
        convergence information. ``truncate`` and ``checkpoint`` are for
        ``"sequential"`` only, and ``unroll`` has no effect on the other
        methods. Their gradients are autodiff for ``"associative"`` (with
        either ``backward``) and implicit at the fixed point for DEER, which
        supports first-order reverse mode only (``backward="autodiff"`` is
        an error there).
      method_options: a :class:`jaxrnn.DEEROptions` (tolerance, maximum
        number of iterations, damping, what to do when the iterations do
        not converge) for ``"deer"`` and ``"quasi-deer"``; None for the defaults.
      sequence_axis: sequence parallelism for the methods ``"associative"``,
        ``"deer"`` and ``"quasi-deer"``: the name of a mesh axis whose
        devices each take a contiguous chunk of the time axis. Outside
        :func:`jax.shard_map`, with a mesh that has this axis set (``with
        jax.set_mesh(mesh):``), ``scan`` splits ``xs`` along time itself (T
        must be a multiple of the axis size) and returns what one device
        returns, the outputs split along time. Inside a ``shard_map`` over
        the axis, ``xs`` is this device's chunk (chunks in the order of the
        devices along the axis); ``carry`` and ``lengths`` are those of the
        whole sequences, the same on every device; the result is the whole
        sequences' final carry, the same on every device, and this chunk's
        outputs. Each chunk is scanned on its device, the chunks' totals are
        gathered and each device corrects its chunk with the total before it
        (DEER does so in each Newton iteration, and sends one state to each
        neighbour): the devices exchange O(devices × batch × state) numbers
        per scan (and the params' gradient), never O(T). Outputs, carry and
        gradients equal one device's to rounding.

    Returns:
      ``(final_carry, ys)`` with ``ys`` of shape ``[T, *batch, O]`` (or
      ``[*batch, T, O]``).

    Example:
      >>> import jax, jax.numpy as jnp, jaxrnn
      >>> cell = jaxrnn.lstm(16)
      >>> params = cell.init(jax.random.key(0), input_size=3)
      >>> xs = jnp.ones((4, 10, 3))  # [B, T, I]
      >>> carry, ys = jaxrnn.scan(cell, params, xs, lengths=jnp.array([10, 7, 1, 0]),
      ...                         time_major=False)
      >>> ys.shape, carry.h.shape
      ((4, 10, 16), (4, 16))
      >>> bool((ys[1, 7:] == 0).all()), bool((carry.h[3] == 0).all())
      (True, True)

      Long sequences: truncated BPTT in chunks of 50 steps, storing only every
      100th carry for the backward pass.

      >>> loss = lambda p, xs: jaxrnn.scan(cell, p, xs, truncate=50, checkpoint=100)[1].sum()
      >>> grads = jax.grad(loss)(params, jnp.ones((1000, 2, 3)))

      The same function, computed in parallel over time by Newton's method (DEER):

      >>> _, ys_deer = jaxrnn.scan(cell, params, xs, lengths=jnp.array([10, 7, 1, 0]),
      ...                          time_major=False, method="deer")
      >>> bool(jnp.allclose(ys_deer, ys, atol=1e-4))
      True

      Two episodes in one rollout: the carry restarts at step 4, so the
      outputs from there on are those of the second episode run alone:

      >>> rollout = jax.random.normal(jax.random.key(2), (7, 1, 3))  # [T, B, I]
      >>> resets = jnp.zeros((7, 1), bool).at[4].set(True)
      >>> _, ys_both = jaxrnn.scan(cell, params, rollout, resets=resets)
      >>> _, ys_second = jaxrnn.scan(cell, params, rollout[4:])
      >>> bool(jnp.allclose(ys_both[4:], ys_second, atol=1e-6))
      True

      Every strategy option travels as one :class:`jaxrnn.ScanOptions` value:

      >>> opts = jaxrnn.ScanOptions(checkpoint=5, backward="autodiff")
      >>> _, ys_ckpt = jaxrnn.scan(cell, params, xs, time_major=False, options=opts)
      >>> bool(jnp.allclose(ys_ckpt, jaxrnn.scan(cell, params, xs, time_major=False)[1],
      ...                   atol=1e-6))
      True

      One long sequence split along time across the devices of a mesh axis
      (each device scans its chunk; T=4096 here, on however many devices
      there are):

      >>> mesh = jax.make_mesh((len(jax.devices()),), ("time",))
      >>> fast = jaxrnn.mingru(8)
      >>> p_fast = fast.init(jax.random.key(0), input_size=3)
      >>> long_xs = jax.random.normal(jax.random.key(1), (4096, 2, 3))
      >>> split = jax.jit(lambda p, x: jaxrnn.scan(fast, p, x, method="associative",
      ...                                          sequence_axis="time"))
      >>> with jax.set_mesh(mesh):
      ...     _, ys_split = split(p_fast, long_xs)
      >>> _, ys_one = jaxrnn.scan(fast, p_fast, long_xs, method="associative")
      >>> bool(jnp.allclose(ys_split, ys_one, atol=1e-5))
      True

    Raises:
      ValueError, TypeError: at trace time, naming the argument: ``xs`` not
        floating or of too low rank; params that do not fit the cell
        (``params.b_hh``, ``params.w_hr``, …, with the expected shape) or
        are not floating; a carry of another structure or shape; ``lengths``
        of the wrong shape, dtype or (when concrete) range; ``resets`` not
        bool or not of the shape ``[T, *batch]``; an unknown or
        unsupported option; ``kernel="cudnn"`` for what cuDNN does not
        compute, or on a backend other than an NVIDIA GPU; a
        ``sequence_axis`` that is no axis of the current mesh or of a
        ``shard_map`` here, or that does not divide T.
    """
    args = check_scan_args(
        cell,
        params,
        xs,
        carry,
        lengths,
        reverse,
        time_major,
        num_feature_axes,
        options,
        kwargs,
        resets,
        cudnn=True,
    )
    first_step = args.time.first_step(args.xs.shape[0])
    xs = zero_padding(args.xs, args.lengths, first_step)
    if args.options.kernel == "cudnn":
        final, ys = _cudnn.scan(
            cell,
            params,
            xs,
            args.carry,
            args.lengths,
            reverse,
            args.options,
            num_feature_axes,
            args.resets,
        )
        return final, from_time_major(ys, time_major, len(args.batch_shape))
    fresh = fresh_steps(args.resets, args.lengths, reverse, first_step, args.time)
    try:
        final, ys = _run(
            cell,
            params,
            xs,
            args.carry,
            args.lengths,
            reverse,
            args.options,
            num_feature_axes,
            fresh,
        )
    except (ValueError, TypeError) as e:
        e.add_note(f"(raised by cell.step on one time step of xs, of shape {xs.shape[1:]})")
        raise
    return final, from_time_major(ys, time_major, len(args.batch_shape))


def _run(
    cell: Cell,
    params: Params,
    xs: Array,
    carry: Carry,
    lengths: Array | None,
    reverse: bool,
    options: ScanOptions,
    num_feature_axes: int,
    fresh: Array | None = None,
) -> tuple[Carry, Array]:
    """Pick the path: every one computes what the sequential masked loop over ``cell.step`` does.

    ``fresh`` (:func:`jaxrnn._sequential.fresh_steps`): the steps that start
    from the initial carry ``carry``.
    """
    if options.method != "sequential" or options.method_options is not None:
        return _parallel.parallel_scan(
            cell,
            params,
            xs,
            carry,
            lengths,
            reverse,
            options,
            num_feature_axes=num_feature_axes,
            fresh=fresh,
        )
    if _fused.takes(cell, params, xs, carry, options, num_feature_axes):
        # The cell's own step checks its inputs; the fused path does not call it.
        jax.eval_shape(cell.step, params, carry, xs[0])
        return _fused.fused_scan(
            cell, params, xs, carry, lengths, reverse, options.unroll, options.checkpoint, fresh
        )
    return sequential_scan(
        cell.step,
        params,
        xs,
        carry,
        lengths,
        reverse,
        unroll=options.unroll,
        truncate=options.truncate,
        checkpoint=options.checkpoint if xs.shape[0] > 0 else None,
        fresh=fresh,
    )

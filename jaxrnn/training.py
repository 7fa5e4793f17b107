"""Training recurrent networks with optax: clipping, skipped non-finite updates, checkpoints.

The pieces, each usable on its own:

* :func:`readout` puts a linear layer on any :class:`~jaxrnn.Cell` or
  :class:`~jaxrnn.Stack`, giving a :class:`Model` whose outputs a
  :class:`jaxrnn.tasks.Task` scores;
* :func:`optimizer` builds the optax chain: the literature's clipping
  strategies, then Adam, RMSprop or SGD under a learning-rate schedule, and
  ``optax.apply_if_finite`` around it all so a non-finite gradient skips its
  update (and is counted) instead of destroying the params;
* :func:`fit` is the loop: one jitted train step compiled once, held-out
  evaluation, metrics as JSON lines, atomic checkpoints and bit-identical
  resumption (see :mod:`jaxrnn.checkpoint`).

The data of step ``s`` is ``task.sample(fold_in(data_key, s), batch_size)``,
so the step number is the data position and a resumed run sees the very
batches the uninterrupted one would have.

Example:
  >>> import jax, jaxrnn
  >>> from jaxrnn import tasks, training
  >>> task = tasks.adding(20)
  >>> model = training.readout(jaxrnn.lstm(16, forget_bias=1.0), task.output_size)
  >>> result = training.fit(model, task, training.optimizer(1e-2, clip=1.0), steps=30,
  ...                       batch_size=16, key=jax.random.key(0), progress=False)
  >>> result.summary["steps"], result.summary["compiles"]
  (30, 1)
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, NamedTuple, TextIO, Unpack

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Float

from jaxrnn import checkpoint as ckpt
from jaxrnn._cell import Array, Cell, Params, PRNGKey, check_positive_int
from jaxrnn._checks import ScanKwargs, ScanOptions, scan_options
from jaxrnn._scan import scan
from jaxrnn._stack import Stack
from jaxrnn.tasks import Batch, Task

__all__ = [
    "FitResult",
    "Model",
    "ReadoutParams",
    "TrainState",
    "fit",
    "optimizer",
    "readout",
]

ClipMode = Literal["norm", "value", "adaptive"]
Schedule = Literal["constant", "cosine", "warmup-cosine"]


class ReadoutParams(NamedTuple):
    """Params of a :func:`readout` model.

    Attributes:
      rnn: the cell's or stack's params.
      w_out: ``[O, H]`` readout weights.
      b_out: ``[O]`` readout bias.

    Example:
      >>> import jax, jaxrnn
      >>> params = jaxrnn.training.readout(jaxrnn.lstm(8), 2).init(jax.random.key(0), 3)
      >>> params.rnn.w_hh.shape, params.w_out.shape, params.b_out.shape
      ((32, 8), (2, 8), (2,))
    """

    rnn: Params
    w_out: Array
    b_out: Array


class Model(NamedTuple):
    """A sequence model as two pure functions.

    Attributes:
      init: ``init(key, input_size, dtype=float32) -> params``.
      apply: ``apply(params, xs, lengths=None, key=None) -> outputs`` for
        batch-major ``xs`` ``[B, T, I]``, giving ``[B, T, O]``; ``key``
        enables the stack's dropout (training only).

    Example:
      >>> import jax, jax.numpy as jnp, jaxrnn
      >>> model = jaxrnn.training.readout(jaxrnn.gru(8), output_size=3)
      >>> params = model.init(jax.random.key(0), input_size=2)
      >>> model.apply(params, jnp.ones((4, 10, 2))).shape
      (4, 10, 3)
    """

    init: Callable[..., Params]
    apply: Callable[..., Array]


def readout(
    rnn: Cell | Stack,
    output_size: int,
    *,
    compute_dtype: Any = None,
    options: ScanOptions | None = None,
    **kwargs: Unpack[ScanKwargs],
) -> Model:
    r"""A :class:`Model`: ``rnn`` over time, then ``y_t = W_out h_t + b_out`` at every step.

    ``W_out`` is initialised U(±1/√H) like PyTorch's ``nn.Linear``, ``b_out``
    at zero.

    Mixed precision: with ``compute_dtype=jnp.bfloat16`` the params stay in
    the dtype they were created in (float32: the optimizer updates float32
    weights) and are cast to bfloat16 for the forward pass together with the
    inputs; the cells then multiply in bfloat16 with float32 accumulation,
    keep their gate math and carry in float32, and the outputs come back in
    float32 for the loss. Gradients flow through the casts to the float32
    params.

    Args:
      rnn: a :class:`~jaxrnn.Cell` (run by :func:`jaxrnn.scan`) or a
        :class:`~jaxrnn.Stack` (run by its ``apply``).
      output_size: O, the size of the outputs.
      compute_dtype: the dtype of the forward computation (e.g.
        ``jnp.bfloat16``); None computes in the params' dtype.
      options: a :class:`jaxrnn.ScanOptions`, passed on unchanged to
        :func:`jaxrnn.scan` or ``Stack.apply``.
      **kwargs: its fields as keywords (``truncate``, ``checkpoint``,
        ``backward``, ``unroll``, ``method``, ``method_options``), which
        override the record's.

    Returns:
      A :class:`Model` with :class:`ReadoutParams`.

    Example:
      >>> import jax, jax.numpy as jnp, jaxrnn
      >>> rnn = jaxrnn.stack(jaxrnn.lstm(8), num_layers=2, bidirectional=True)
      >>> model = jaxrnn.training.readout(rnn, output_size=1, checkpoint=50)
      >>> params = model.init(jax.random.key(0), input_size=2)
      >>> params.w_out.shape  # two directions of 8 features each
      (1, 16)
      >>> mixed = jaxrnn.training.readout(jaxrnn.lstm(8), 1, compute_dtype=jnp.bfloat16)
      >>> mixed.apply(mixed.init(jax.random.key(0), 2), jnp.ones((3, 5, 2))).dtype
      dtype('float32')
    """
    check_positive_int(output_size, "output_size")
    if not isinstance(rnn, Cell | Stack):
        raise TypeError(f"rnn: expected a jaxrnn.Cell or jaxrnn.Stack, got {type(rnn).__name__}")

    scan_opts = scan_options(options, dict(kwargs))

    def run(params: Params, xs: Array, lengths: Array | None, key: PRNGKey | None) -> Array:
        if isinstance(rnn, Stack):
            return rnn.apply(
                params, xs, lengths=lengths, key=key, time_major=False, options=scan_opts
            )[1]
        return scan(rnn, params, xs, lengths=lengths, time_major=False, options=scan_opts)[1]

    def init(key: PRNGKey, input_size: int, dtype: Any = jnp.float32) -> ReadoutParams:
        k_rnn, k_out = jax.random.split(key)
        params = rnn.init(k_rnn, input_size, dtype)
        probe = jnp.zeros((1, 1, input_size), dtype)
        hidden = jax.eval_shape(lambda: run(params, probe, None, None)).shape[-1]
        bound = 1 / math.sqrt(hidden)
        w_out = jax.random.uniform(k_out, (output_size, hidden), dtype, -bound, bound)
        return ReadoutParams(params, w_out, jnp.zeros((output_size,), dtype))

    def apply(
        params: ReadoutParams,
        xs: Float[Array, "B T I"],
        lengths: Array | None = None,
        key: PRNGKey | None = None,
    ) -> Float[Array, "B T O"]:
        out_dtype = jnp.result_type(params.w_out, jnp.float32)
        if compute_dtype is not None:
            params = jax.tree.map(lambda a: a.astype(compute_dtype), params)
            xs = xs.astype(compute_dtype)
        hs = run(params.rnn, xs, lengths, key)
        ys = jnp.einsum("bth,oh->bto", hs.astype(params.w_out.dtype), params.w_out)
        return (ys + params.b_out[None, None, :]).astype(out_dtype)

    return Model(init, apply)


def optimizer(
    learning_rate: float,
    *,
    name: Literal["adam", "rmsprop", "sgd"] = "adam",
    clip: float | None = None,
    clip_mode: ClipMode = "norm",
    schedule: Schedule = "constant",
    steps: int | None = None,
) -> optax.GradientTransformation:
    r"""The optax chain: clipping, then the update rule under a learning-rate schedule.

    Clipping strategies (``clip`` is the threshold; None disables clipping):

    * ``"norm"``: ``optax.clip_by_global_norm`` — Pascanu et al.'s
      Algorithm 1: if ‖g‖ ≥ c then g ← c·g/‖g‖, the norm over all params;
    * ``"value"``: ``optax.clip`` — element-wise to [−c, c], as Mikolov and
      Arjovsky et al. (element-wise clip 1 with RMSprop) used;
    * ``"adaptive"``: ``optax.adaptive_grad_clip`` — each unit's gradient
      clipped relative to its weights' norm (Brock et al. 2021).

    Update rules: ``"adam"``, ``"rmsprop"`` (decay 0.9, Arjovsky et al.'s
    setting), ``"sgd"`` (momentum 0.9). Schedules: ``"constant"``,
    ``"cosine"`` (decay to 0 over ``steps``), ``"warmup-cosine"`` (linear
    warm-up over the first 5% of ``steps``, then cosine). :func:`fit` wraps
    the result in ``optax.apply_if_finite``.

    Args:
      learning_rate: the peak learning rate.
      name: the update rule.
      clip: the clipping threshold, or None.
      clip_mode: ``"norm"``, ``"value"`` or ``"adaptive"``.
      schedule: the learning-rate schedule.
      steps: the number of training steps (needed by the decaying schedules).

    Returns:
      An ``optax.GradientTransformation``; its learning rate is injected as a
      hyper-parameter (``opt_state[-1].hyperparams["learning_rate"]``).

    Example:
      >>> import jax.numpy as jnp, jaxrnn
      >>> opt = jaxrnn.training.optimizer(1e-3, clip=1.0, clip_mode="value")
      >>> params = {"w": jnp.zeros(2)}
      >>> updates, _ = opt.update({"w": jnp.array([5.0, -0.5])}, opt.init(params), params)
      >>> updates["w"].round(4).tolist()  # Adam's first step: -lr·sign(g) after clipping
      [-0.001, 0.001]

    References:
      Pascanu, Mikolov & Bengio, "On the difficulty of training recurrent
      neural networks", ICML 2013. Arjovsky, Shah & Bengio, "Unitary evolution
      recurrent neural networks", ICML 2016. Brock et al., "High-performance
      large-scale image recognition without normalization", ICML 2021.
    """
    if not (isinstance(learning_rate, int | float) and learning_rate > 0):
        raise ValueError(f"learning_rate: expected a positive number, got {learning_rate!r}")
    rules = {
        "adam": optax.adam,
        "rmsprop": lambda learning_rate: optax.rmsprop(learning_rate, decay=0.9),
        "sgd": lambda learning_rate: optax.sgd(learning_rate, momentum=0.9),
    }
    if name not in rules:
        raise ValueError(f"name: expected one of {sorted(rules)}, got {name!r}")
    clippers = {
        "norm": optax.clip_by_global_norm,
        "value": optax.clip,
        "adaptive": optax.adaptive_grad_clip,
    }
    if clip_mode not in clippers:
        raise ValueError(f"clip_mode: expected one of {sorted(clippers)}, got {clip_mode!r}")
    if clip is not None and not (isinstance(clip, int | float) and clip > 0):
        raise ValueError(f"clip: expected a positive number or None, got {clip!r}")
    lr: Any
    if schedule == "constant":
        lr = learning_rate
    elif schedule in ("cosine", "warmup-cosine"):
        if steps is None:
            raise ValueError(f"steps: schedule {schedule!r} needs the number of steps, got None")
        check_positive_int(steps, "steps")
        if schedule == "cosine":
            lr = optax.cosine_decay_schedule(learning_rate, steps)
        else:
            warmup = max(1, steps // 20)
            lr = optax.warmup_cosine_decay_schedule(0.0, learning_rate, warmup, max(steps, warmup))
    else:
        raise ValueError(
            f"schedule: expected one of ['constant', 'cosine', 'warmup-cosine'], got {schedule!r}"
        )
    chain = [clippers[clip_mode](clip)] if clip is not None else []
    return optax.chain(*chain, optax.inject_hyperparams(rules[name])(learning_rate=lr))


class TrainState(NamedTuple):
    """Everything a training run carries from step to step.

    Attributes:
      params: the model's params.
      opt_state: the optimizer's state (inside ``optax.apply_if_finite``).
      step: int32 scalar, the number of updates attempted so far (skipped
        non-finite ones included): the data position.

    Example:
      >>> import jax, jaxrnn
      >>> from jaxrnn import tasks, training
      >>> result = training.fit(training.readout(jaxrnn.gru(4), 1), tasks.adding(5),
      ...                       training.optimizer(1e-2), steps=3, batch_size=2,
      ...                       key=jax.random.key(0), progress=False)
      >>> int(result.state.step), int(result.state.opt_state.total_notfinite)
      (3, 0)
    """

    params: Params
    opt_state: optax.OptState
    step: Array


class FitResult(NamedTuple):
    """What :func:`fit` returns.

    Attributes:
      state: the final :class:`TrainState`.
      summary: the dict also written to ``summary.json``.
      history: the logged metrics, one dict per logged step (the lines of
        ``metrics.jsonl``).

    Example:
      >>> import jax, jaxrnn
      >>> from jaxrnn import tasks, training
      >>> result = training.fit(training.readout(jaxrnn.elman(4), 1), tasks.adding(5),
      ...                       training.optimizer(1e-2), steps=4, batch_size=2, log_every=2,
      ...                       eval_every=4, key=jax.random.key(0), progress=False)
      >>> [line["step"] for line in result.history], result.summary["baseline"]
      ([2, 4], 0.16666666666666666)
    """

    state: TrainState
    summary: dict[str, Any]
    history: list[dict[str, Any]]


def fit(
    model: Model,
    task: Task,
    tx: optax.GradientTransformation,
    *,
    steps: int,
    batch_size: int,
    key: PRNGKey,
    out: str | os.PathLike[str] | None = None,
    eval_every: int | None = None,
    eval_batches: int = 4,
    log_every: int = 10,
    checkpoint_every: int | None = None,
    resume: bool = False,
    config: Mapping[str, Any] | None = None,
    params: Params | None = None,
    extra_metrics: Callable[[Params, Batch], dict[str, Any]] | None = None,
    max_consecutive_skips: int = 100,
    devices: int | None = None,
    progress: bool | TextIO = True,
) -> FitResult:
    """Train ``model`` on ``task`` for ``steps`` updates of ``tx``.

    Each step draws the batch ``task.sample(fold_in(data_key, step),
    batch_size)``, computes the loss and its gradient, records the gradient's
    global norm before clipping, and applies ``tx`` wrapped in
    ``optax.apply_if_finite``: an update whose gradient holds a NaN or Inf is
    skipped and counted (``skipped`` in the metrics). The step function is
    jitted once and compiled once (``summary["compiles"]``).

    Every ``log_every`` steps a line goes to ``out/metrics.jsonl``: ``step``,
    ``loss``, the task metric, ``grad_norm`` (pre-clip), ``lr``,
    ``skipped``, ``steps_per_s``; every ``eval_every`` steps (and at the
    end) also ``eval_loss`` and ``eval_<metric>`` on ``eval_batches``
    held-out batches (the same batches each time; the task's ``"eval"``
    split), plus whatever ``extra_metrics(params, eval_batch)`` returns.
    ``out/summary.json`` gets ``final_eval_loss``, ``final_eval_<metric>``,
    ``baseline``, ``steps``, ``wall_seconds``, ``first_step_seconds``
    (compilation included), ``steps_per_second`` (the training steps after
    the first; time spent evaluating and logging left out),
    ``skipped_updates``, ``compiles``.

    With ``checkpoint_every``, params, optimizer state, the step (the data
    position) and the PRNG key are saved atomically to ``out/checkpoints``
    every that many steps and at the end. ``resume=True`` continues from the
    newest checkpoint there and cuts ``metrics.jsonl`` back to it, so a run
    killed at any moment and resumed ends with bit-identical params and
    metrics to an uninterrupted one (timings aside).

    Args:
      model: a :class:`Model`, e.g. from :func:`readout`.
      task: a :class:`jaxrnn.tasks.Task`.
      tx: an optax transformation, e.g. from :func:`optimizer`.
      steps: total number of updates.
      batch_size: sequences per batch.
      key: the run's PRNG key (init, data, dropout and evaluation keys are
        derived from it).
      out: the output directory (created); None writes nothing.
      eval_every: steps between evaluations (default: ``steps // 10``).
      eval_batches: held-out batches per evaluation.
      log_every: steps between metric lines.
      checkpoint_every: steps between checkpoints (needs ``out``).
      resume: continue from ``out``'s newest checkpoint.
      config: JSON-serialisable description of the run, stored in the
        checkpoints and the summary; a resume checks it matches (``steps``
        may differ).
      params: the initial params; default ``model.init`` with a key derived
        from ``key``.
      extra_metrics: optional ``f(params, batch) -> dict`` of JSON-ready
        values added at each evaluation (e.g. per-step carry-gradient norms).
      max_consecutive_skips: stop with an error after this many non-finite
        gradients in a row (the run has diverged).
      devices: data-parallel training over the first ``devices`` of
        :func:`jax.devices` (all of them, across hosts, after
        :func:`jax.distributed.initialize`): a one-axis mesh ``("data",)``,
        each batch sharded along its batch axis, params and optimizer state
        replicated; the gradient is the same mean over the global batch, so
        the run matches a one-device run to float tolerance. ``batch_size``
        must be divisible by it. None runs on the default device.
      progress: print progress (to stderr, or to the given stream): a line
        rewritten at every logged step on a terminal, else one line per
        evaluation.

    Returns:
      A :class:`FitResult`.

    Example:
      >>> import jax, jaxrnn
      >>> from jaxrnn import tasks, training
      >>> task = tasks.copy_memory(5)
      >>> model = training.readout(jaxrnn.gru(16), task.output_size)
      >>> result = training.fit(model, task, training.optimizer(1e-2), steps=20,
      ...                       batch_size=8, key=jax.random.key(1), progress=False)
      >>> sorted(k for k in result.history[-1] if k.startswith("eval"))
      ['eval_accuracy', 'eval_loss']
    """
    check_positive_int(steps, "steps")
    check_positive_int(batch_size, "batch_size")
    check_positive_int(log_every, "log_every")
    check_positive_int(eval_batches, "eval_batches")
    eval_every = max(1, steps // 10) if eval_every is None else eval_every
    check_positive_int(eval_every, "eval_every")
    if checkpoint_every is not None:
        check_positive_int(checkpoint_every, "checkpoint_every")
        if out is None:
            raise ValueError("checkpoint_every: checkpoints need an output directory, got out=None")
    out_dir = None if out is None else Path(out)
    if resume and (out_dir is None or ckpt.latest(out_dir / "checkpoints") is None):
        where = "no output directory" if out_dir is None else f"no checkpoint in {out_dir}"
        raise ValueError(f"resume: nothing to resume, {where}")
    config = dict(config or {})

    shard = _data_parallel(devices, batch_size)
    k_init, k_data, k_drop, k_eval = jax.random.split(key, 4)
    # Never apply a non-finite update; the loop stops the run after too many in a row.
    tx = optax.apply_if_finite(tx, max_consecutive_errors=2**31 - 1)
    if params is None:
        params = model.init(k_init, task.input_size)
    state = shard.replicate(TrainState(params, tx.init(params), jnp.zeros((), jnp.int32)))
    eval_keys = [jax.random.fold_in(k_eval, i) for i in range(eval_batches)]
    eval_data = [shard.place(task.sample(k, batch_size, "eval")) for k in eval_keys]
    traces = [0]

    def loss_and_metric(params: Params, batch: Batch, dropout_key: Any) -> Any:
        outputs = model.apply(params, batch.xs, batch.lengths, dropout_key)
        return task.loss(outputs, batch), task.metric(outputs, batch)

    def train_step(state: TrainState) -> tuple[TrainState, dict[str, Array]]:
        traces[0] += 1  # runs once per trace: the compile count
        batch = shard.batch(
            task.sample(jax.random.fold_in(k_data, state.step), batch_size, "train")
        )
        grad_fn = jax.value_and_grad(loss_and_metric, has_aux=True)
        (loss, metric), grads = grad_fn(state.params, batch, jax.random.fold_in(k_drop, state.step))
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        stats = {
            "loss": loss,
            task.metric_name: metric,
            "grad_norm": optax.tree.norm(grads),
            "lr": _learning_rate(opt_state),
            "skipped": opt_state.total_notfinite,
            "consecutive_skips": opt_state.notfinite_count,
        }
        return TrainState(params, opt_state, state.step + 1), stats

    @jax.jit
    def evaluate(params: Params, eval_data: list[Batch]) -> dict[str, Array]:
        pairs = [loss_and_metric(params, batch, None) for batch in eval_data]
        return {
            "eval_loss": jnp.mean(jnp.stack([p[0] for p in pairs])),
            f"eval_{task.metric_name}": jnp.mean(jnp.stack([p[1] for p in pairs])),
        }

    step_fn = jax.jit(train_step)
    history: list[dict[str, Any]] = []
    start = 0
    if resume:
        assert out_dir is not None
        state, history = _resume(out_dir, state, key, config)
        state = shard.replicate(state)
        start = int(state.step)
    metrics_file = None
    if out_dir is not None and jax.process_index() != 0:
        out_dir = None  # in a multi-host run, process 0 writes the files
        checkpoint_every = None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        if not resume:  # a fresh run in this directory: its old checkpoints must not be resumed
            shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)
        _write_lines(out_dir / "metrics.jsonl", history)  # cut back to the checkpoint on resume
        metrics_file = open(out_dir / "metrics.jsonl", "a")  # noqa: SIM115
    stream = sys.stderr if progress is True else (progress or None)

    def save_checkpoint(state: TrainState) -> None:
        assert out_dir is not None
        tree = {"state": state, "key": jax.random.key_data(key)}
        meta = {"config": config, "history_length": len(history)}
        ckpt.save(out_dir / "checkpoints", int(state.step), tree, meta=meta)

    # Training throughput leaves out the time spent evaluating and logging.
    timer = {"time": time.perf_counter(), "step": start, "eval_seconds": 0.0}

    def log(step: int, stats: dict[str, Array], params: Params, is_eval: bool) -> dict[str, Any]:
        line: dict[str, Any] = {"step": step}
        line.update({k: v.item() for k, v in jax.device_get(stats).items()})
        now = time.perf_counter()
        line["steps_per_s"] = (step - timer["step"]) / max(now - timer["time"], 1e-9)
        if is_eval:
            line.update({k: v.item() for k, v in evaluate(params, eval_data).items()})
            if extra_metrics is not None:
                line.update(extra_metrics(params, eval_data[0]))
        done = time.perf_counter()
        timer.update(time=done, step=step, eval_seconds=timer["eval_seconds"] + done - now)
        written = {k: v for k, v in line.items() if k != "consecutive_skips"}
        history.append(written)
        if metrics_file is not None:
            metrics_file.write(json.dumps(written) + "\n")
            metrics_file.flush()
        if stream is not None and (is_eval or _isatty(stream)):
            _progress(stream, written, steps, task.metric_name)
        return line

    t_start = time.perf_counter()
    t_compiled = None  # when the first step (compilation included) has finished
    try:
        for step in range(start + 1, steps + 1):
            state, stats = step_fn(state)
            if t_compiled is None:
                jax.block_until_ready(state)
                t_compiled = time.perf_counter()
            is_eval = step % eval_every == 0 or step == steps
            if is_eval or step % log_every == 0:
                line = log(step, stats, state.params, is_eval)
                if line.pop("consecutive_skips") > max_consecutive_skips:
                    raise FloatingPointError(
                        f"training diverged: more than {max_consecutive_skips} non-finite "
                        f"gradients in a row at step {step}; lower the learning rate or clip "
                        "the gradients"
                    )
            if checkpoint_every is not None and (step % checkpoint_every == 0 or step == steps):
                save_checkpoint(state)
    finally:
        if metrics_file is not None:
            metrics_file.close()
        if stream is not None and _isatty(stream):
            stream.write("\n")
            stream.flush()
    t_end = time.perf_counter()
    wall = t_end - t_start
    final = evaluate(state.params, eval_data)
    summary = {
        "final_eval_loss": final["eval_loss"].item(),
        f"final_eval_{task.metric_name}": final[f"eval_{task.metric_name}"].item(),
        "baseline": task.baseline,
        "task": task.name,
        "steps": int(state.step),
        "steps_this_run": int(state.step) - start,
        "wall_seconds": wall,
        "first_step_seconds": None if t_compiled is None else t_compiled - t_start,
        "steps_per_second": (
            None
            if t_compiled is None or state.step <= start + 1
            else (int(state.step) - start - 1)
            / max(t_end - t_compiled - timer["eval_seconds"], 1e-9)
        ),
        "skipped_updates": int(state.opt_state.total_notfinite),
        "compiles": traces[0],
        "resumed_from": start if resume else None,
        "config": config,
    }
    if out_dir is not None:
        _atomic_write(out_dir / "summary.json", json.dumps(summary, indent=1) + "\n")
    return FitResult(state, summary, history)


class _Sharding(NamedTuple):
    """How :func:`fit` places its arrays.

    ``batch`` shards a batch made inside ``jit``, ``place`` one made outside,
    ``replicate`` copies the state to every device.
    """

    batch: Callable[[Batch], Batch]
    place: Callable[[Batch], Batch]
    replicate: Callable[[Any], Any]


def _data_parallel(devices: int | None, batch_size: int) -> _Sharding:
    if devices is None:
        return _Sharding(lambda batch: batch, lambda batch: batch, lambda tree: tree)
    check_positive_int(devices, "devices")
    available = jax.devices()
    if devices > len(available):
        raise ValueError(
            f"devices: expected at most the {len(available)} available device(s), got {devices}"
        )
    if batch_size % devices:
        raise ValueError(
            f"batch_size: expected a multiple of devices={devices} for data parallelism, "
            f"got {batch_size}"
        )
    auto = (jax.sharding.AxisType.Auto,)
    mesh = jax.make_mesh((devices,), ("data",), auto, devices=available[:devices])
    split = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    whole = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())

    def batch(b: Batch) -> Batch:
        return jax.tree.map(lambda a: jax.lax.with_sharding_constraint(a, split), b)

    return _Sharding(
        batch, lambda b: jax.device_put(b, split), lambda tree: jax.device_put(tree, whole)
    )


def _learning_rate(opt_state: Any) -> Array:
    """The injected learning rate inside an ``apply_if_finite``/``chain`` state, else NaN."""
    for s in jax.tree.leaves(opt_state, is_leaf=lambda x: hasattr(x, "hyperparams")):
        if hasattr(s, "hyperparams") and "learning_rate" in s.hyperparams:
            return jnp.asarray(s.hyperparams["learning_rate"], jnp.float32)
    return jnp.asarray(jnp.nan, jnp.float32)


def _resume(
    out_dir: Path, template: TrainState, key: PRNGKey, config: dict[str, Any]
) -> tuple[TrainState, list[dict[str, Any]]]:
    path = ckpt.latest(out_dir / "checkpoints")
    assert path is not None
    tree, meta = ckpt.restore(path, {"state": template, "key": jax.random.key_data(key)})
    saved = {k: v for k, v in meta.get("config", {}).items() if k != "steps"}
    wanted = {k: v for k, v in config.items() if k != "steps"}
    if saved != wanted:
        differ = sorted(k for k in saved.keys() | wanted.keys() if saved.get(k) != wanted.get(k))
        raise ValueError(
            f"resume: the checkpoint in {path} is of another run; it differs in {differ} "
            f"(saved {[saved.get(k) for k in differ]}, given {[wanted.get(k) for k in differ]})"
        )
    if not np.array_equal(tree["key"], jax.random.key_data(key)):
        raise ValueError(f"resume: the checkpoint in {path} was written with another seed")
    history = _read_lines(out_dir / "metrics.jsonl")[: meta["history_length"]]
    return tree["state"], history


def _read_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    lines = []
    for text in path.read_text().splitlines():
        try:
            lines.append(json.loads(text))
        except json.JSONDecodeError:  # a line cut short by a kill
            break
    return lines


def _write_lines(path: Path, lines: list[dict[str, Any]]) -> None:
    _atomic_write(path, "".join(json.dumps(line) + "\n" for line in lines))


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _isatty(stream: TextIO) -> bool:
    return bool(getattr(stream, "isatty", lambda: False)())


def _progress(stream: TextIO, line: dict[str, Any], steps: int, metric_name: str) -> None:
    width = 24
    done = int(width * line["step"] / steps)
    bar = "█" * done + "·" * (width - done)
    text = (
        f"{bar} {line['step']:>{len(str(steps))}}/{steps}  loss {line['loss']:.4g}  "
        f"{metric_name} {line[metric_name]:.3f}  |g| {line['grad_norm']:.3g}  "
        f"{line['steps_per_s']:.1f} steps/s"
    )
    if "eval_loss" in line:
        text += f"  eval {line['eval_loss']:.4g}"
    stream.write(("\r" + text) if _isatty(stream) else (text + "\n"))
    stream.flush()

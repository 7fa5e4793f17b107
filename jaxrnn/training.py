"""Training recurrent networks with optax: clipping, skipped non-finite updates, checkpoints.

The pieces, each usable on its own:

* :func:`readout` puts a linear layer on any :class:`~jaxrnn.Cell` or
  :class:`~jaxrnn.Stack`, giving a :class:`Model` whose outputs a
  :class:`jaxrnn.tasks.Task` scores;
* :func:`optimizer` builds the optax chain: the literature's clipping
  strategies, then Adam, RMSprop or SGD under a learning-rate schedule;
* :func:`make_train_step` is one pure, jittable training step (state in,
  state and stats out) and :func:`evaluate` the held-out loss, for your own
  loop;
* :func:`fit` is a short loop over those two: a task, your arrays or your
  batches; metrics as JSON lines, atomic checkpoints, runs that are never
  overwritten, clean stops on SIGINT/SIGTERM and bit-identical resumption
  (see :mod:`jaxrnn.runlog` and :mod:`jaxrnn.checkpoint`);
* :func:`read_metrics` reads a run's metrics back; :func:`sample_text`
  generates characters from a model trained on the ``text`` task.

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

import contextlib
import functools
import itertools
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple, TextIO, Unpack

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Float

from jaxrnn import _decode, runlog
from jaxrnn import checkpoint as ckpt
from jaxrnn._cell import Array, Cell, Params, PRNGKey, check_positive_float, check_positive_int
from jaxrnn._checks import ScanKwargs, ScanOptions, default_dtype, scan_options
from jaxrnn._reduce import scan_reduce
from jaxrnn._scan import scan
from jaxrnn._stack import Stack
from jaxrnn.runlog import ConfigMismatch, Stopped, read_metrics
from jaxrnn.tasks import Batch, StepLoss, Task, decode, encode, text_vocab

__all__ = [
    "ConfigMismatch",
    "FitResult",
    "Model",
    "ReadoutParams",
    "Stopped",
    "TrainState",
    "evaluate",
    "fit",
    "make_train_step",
    "optimizer",
    "read_metrics",
    "readout",
    "sample_text",
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
    """A sequence model as pure functions.

    Attributes:
      init: ``init(key, input_size, dtype=float32) -> params``.
      apply: ``apply(params, xs, lengths=None, key=None) -> outputs`` for
        batch-major ``xs`` ``[B, T, I]``, giving ``[B, T, O]``; ``key``
        enables the stack's dropout and the masks of a
        :func:`jaxrnn.recurrent_dropout` cell (training only).
      run: ``run(params, xs, carry=None, lengths=None) -> (carry, outputs)``:
        the same computation from a given carry (None: the initial one),
        returning the final carry too, so a sequence can be fed in pieces
        (step by step when generating); None for a model built without it.
      reduce: ``reduce(params, xs, fn, targets, lengths=None, key=None) ->
        totals``: ``fn(outputs_t, targets_t)`` of every step's ``[B, O]``
        outputs summed over the valid steps inside the time loop
        (:func:`jaxrnn.scan_reduce`; ``targets`` ``[B, T, ...]``), so the
        ``[B, T, O]`` outputs are never held; None for a model without it
        (:func:`readout` of a stack, whose layers run one after another).

    Example:
      >>> import jax, jax.numpy as jnp, jaxrnn
      >>> model = jaxrnn.training.readout(jaxrnn.gru(8), output_size=3)
      >>> params = model.init(jax.random.key(0), input_size=2)
      >>> xs = jnp.ones((4, 10, 2))
      >>> model.apply(params, xs).shape
      (4, 10, 3)
      >>> carry, head = model.run(params, xs[:, :6])
      >>> _, tail = model.run(params, xs[:, 6:], carry)
      >>> bool(jnp.allclose(jnp.concatenate([head, tail], 1), model.apply(params, xs), atol=1e-6))
      True
    """

    init: Callable[..., Params]
    apply: Callable[..., Array]
    run: Callable[..., tuple[Any, Array]] | None = None
    reduce: Callable[..., Any] | None = None


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

    def hidden(
        params: Params, xs: Array, carry: Any, lengths: Array | None, key: PRNGKey | None
    ) -> tuple[Any, Array]:
        if isinstance(rnn, Stack):
            return rnn.apply(
                params,
                xs,
                carry=carry,
                lengths=lengths,
                key=key,
                time_major=False,
                options=scan_opts,
            )
        carry = drawn(params, xs, carry, key)
        return scan(
            rnn, params, xs, carry=carry, lengths=lengths, time_major=False, options=scan_opts
        )

    def drawn(params: Params, xs: Array, carry: Any, key: PRNGKey | None) -> Any:
        """A cell's carry with its per-sequence randomness drawn from ``key`` (training)."""
        if key is None or not isinstance(rnn, Cell) or rnn.draw is None:
            return carry
        if carry is None:
            carry = rnn.initial_carry(xs.shape[:1], default_dtype(params, xs))
        return rnn.draw(key, carry)

    def init(key: PRNGKey, input_size: int, dtype: Any = jnp.float32) -> ReadoutParams:
        k_rnn, k_out = jax.random.split(key)
        params = rnn.init(k_rnn, input_size, dtype)
        probe = jnp.zeros((1, 1, input_size), dtype)
        width = jax.eval_shape(lambda: hidden(params, probe, None, None, None)[1]).shape[-1]
        bound = 1 / math.sqrt(width)
        w_out = jax.random.uniform(k_out, (output_size, width), dtype, -bound, bound)
        return ReadoutParams(params, w_out, jnp.zeros((output_size,), dtype))

    def computed(params: ReadoutParams, xs: Array) -> tuple[ReadoutParams, Array, Any]:
        """Params and inputs checked and cast to ``compute_dtype``, and the outputs' dtype."""
        if jnp.ndim(xs) != 3:
            raise ValueError(f"xs: expected batch-major [B, T, I], got shape {jnp.shape(xs)}")
        out_dtype = jnp.result_type(params.w_out, jnp.float32)
        if compute_dtype is not None:
            params = jax.tree.map(lambda a: a.astype(compute_dtype), params)
            xs = xs.astype(compute_dtype)
        return params, xs, out_dtype

    def run(
        params: ReadoutParams,
        xs: Float[Array, "B T I"],
        carry: Any = None,
        lengths: Array | None = None,
        key: PRNGKey | None = None,
    ) -> tuple[Any, Float[Array, "B T O"]]:
        params, xs, out_dtype = computed(params, xs)
        carry, hs = hidden(params.rnn, xs, carry, lengths, key)
        ys = jnp.einsum("bth,oh->bto", hs.astype(params.w_out.dtype), params.w_out)
        return carry, (ys + params.b_out[None, None, :]).astype(out_dtype)

    def apply(
        params: ReadoutParams,
        xs: Float[Array, "B T I"],
        lengths: Array | None = None,
        key: PRNGKey | None = None,
    ) -> Float[Array, "B T O"]:
        return run(params, xs, None, lengths, key)[1]

    def reduce(
        params: ReadoutParams,
        xs: Float[Array, "B T I"],
        fn: Callable[[Array, Any], Any],
        targets: Any,
        lengths: Array | None = None,
        key: PRNGKey | None = None,
    ) -> Any:
        assert isinstance(rnn, Cell)
        params, xs, out_dtype = computed(params, xs)
        carry = drawn(params.rnn, xs, None, key)  # a recurrent_dropout cell's masks

        def per_step(h: Array, target: Any) -> Any:
            y = h.astype(params.w_out.dtype) @ params.w_out.T + params.b_out[None, :]
            return fn(y.astype(out_dtype), target)

        return scan_reduce(
            rnn, params.rnn, xs, per_step, targets, carry=carry, lengths=lengths,
            time_major=False, options=scan_opts,
        )[1]  # fmt: skip

    return Model(init, apply, run, None if isinstance(rnn, Stack) else reduce)


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
    learning_rate = check_positive_float(learning_rate, "learning_rate")  # type: ignore[assignment]
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
    clip = check_positive_float(clip, "clip", none=True)
    lr: Any
    if schedule == "constant":
        lr = learning_rate
    elif schedule in ("cosine", "warmup-cosine"):
        if steps is None:
            raise ValueError(f"steps: schedule {schedule!r} needs the number of steps, got None")
        steps = check_positive_int(steps, "steps")
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
      opt_state: the optimizer's state.
      step: int32 scalar, the number of updates attempted so far (skipped
        non-finite ones included): the data position.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> from jaxrnn.training import TrainState
      >>> state = TrainState.create({"w": jnp.zeros(3)}, optax.adam(1e-3))
      >>> int(state.step)
      0
    """

    params: Params
    opt_state: optax.OptState
    step: Array

    @classmethod
    def create(cls, params: Params, tx: optax.GradientTransformation) -> TrainState:
        """The state at step 0: ``params`` and ``tx.init(params)``."""
        _check_tx(tx)
        return cls(params, tx.init(params), jnp.zeros((), jnp.int32))


LossFn = Callable[[Array, Batch], Array]
"""``loss(outputs, batch) -> scalar`` for the model's ``[B, T, O]`` outputs (as
:attr:`jaxrnn.tasks.Task.loss`)."""


def make_train_step(
    model: Model,
    tx: optax.GradientTransformation,
    loss: LossFn,
    metric: LossFn | None = None,
    *,
    metric_name: str = "metric",
    step_loss: StepLoss | None = None,
) -> Callable[[TrainState, Batch, PRNGKey | None], tuple[TrainState, dict[str, Array]]]:
    """One training step as a pure function, to jit, shard and call in your own loop.

    ``train_step(state, batch, key=None) -> (state, stats)`` computes
    ``loss(model.apply(params, batch.xs, batch.lengths, k), batch)`` and its
    gradient, applies ``tx`` and advances ``state.step``. ``key`` (the same
    key at every step) turns on the model's dropout with the step's key
    ``fold_in(key, state.step)``. ``stats`` holds ``loss``, ``metric_name``
    (if ``metric``), ``grad_norm`` (before clipping), ``lr`` (NaN unless
    the learning rate is injected, as :func:`optimizer` does), ``skipped``
    and ``consecutive_skips`` (non-finite updates, 0 unless ``tx`` is an
    ``optax.apply_if_finite``). :func:`fit` is a loop over this function.

    With ``step_loss`` (a task's :attr:`~jaxrnn.tasks.Task.step_loss`) and a
    model that has :attr:`Model.reduce`, the loss and the metric are computed
    inside the time loop instead, as means over the valid steps: the same
    values, without the ``[B, T, O]`` outputs (with the model's
    ``checkpoint=k``, a gradient's memory no longer grows with T·O).

    Args:
      model: a :class:`Model`.
      tx: an optax transformation.
      loss: ``loss(outputs, batch) -> scalar``.
      metric: optional ``metric(outputs, batch) -> scalar``, reported too.
      metric_name: the metric's key in ``stats``.
      step_loss: ``step_loss(outputs_t, targets_t) -> (loss_t, metric_t)``,
        the per-step form of ``loss`` and ``metric`` (see above).

    Returns:
      ``train_step``.

    Example:
      >>> import jax, jaxrnn
      >>> from jaxrnn import tasks, training
      >>> task = tasks.adding(10)
      >>> model = training.readout(jaxrnn.lstm(8), task.output_size)
      >>> tx = training.optimizer(1e-2)
      >>> step = jax.jit(training.make_train_step(model, tx, task.loss))
      >>> state = training.TrainState.create(model.init(jax.random.key(0), 2), tx)
      >>> for s in range(3):
      ...     state, stats = step(state, task.sample(jax.random.key(s), 16))
      >>> int(state.step), sorted(stats)
      (3, ['consecutive_skips', 'grad_norm', 'loss', 'lr', 'skipped'])
    """

    def loss_and_metric(params: Params, batch: Batch, key: PRNGKey | None) -> Any:
        return _loss_and_metric(model, params, batch, key, loss, metric, step_loss)

    def train_step(
        state: TrainState, batch: Batch, key: PRNGKey | None = None
    ) -> tuple[TrainState, dict[str, Array]]:
        step_key = None if key is None else jax.random.fold_in(key, state.step)
        grad_fn = jax.value_and_grad(loss_and_metric, has_aux=True)
        (value, metric_value), grads = grad_fn(state.params, batch, step_key)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        zero = jnp.zeros((), jnp.int32)
        stats = {
            "loss": value,
            "grad_norm": optax.tree.norm(grads),
            "lr": _learning_rate(opt_state),
            "skipped": getattr(opt_state, "total_notfinite", zero),
            "consecutive_skips": getattr(opt_state, "notfinite_count", zero),
        }
        if metric is not None:
            stats[metric_name] = metric_value
        return TrainState(params, opt_state, state.step + 1), stats

    return train_step


def _loss_and_metric(
    model: Model,
    params: Params,
    batch: Batch,
    key: PRNGKey | None,
    loss: LossFn,
    metric: LossFn | None,
    step_loss: StepLoss | None,
) -> tuple[Array, Array | None]:
    """``loss`` and ``metric`` of the model on ``batch``; in the time loop with ``step_loss``."""
    if step_loss is None or model.reduce is None:
        outputs = model.apply(params, batch.xs, batch.lengths, key)
        value = _scalar(loss(outputs, batch), "loss")
        return value, (None if metric is None else _scalar(metric(outputs, batch), "metric"))
    totals = model.reduce(params, batch.xs, step_loss, batch.targets, batch.lengths, key)
    num_rows, num_steps = batch.xs.shape[:2]
    valid = None if batch.lengths is None else jnp.clip(batch.lengths, 0, num_steps)
    count = num_rows * num_steps if valid is None else jnp.sum(valid)  # as scan reads lengths
    value, hits = (_scalar(jnp.sum(t) / count, "step_loss") for t in totals)
    return value, (None if metric is None else hits)


@functools.partial(jax.jit, static_argnums=(0, 3, 4, 5, 6))
def _evaluate(
    model: Model,
    params: Params,
    batches: list[Batch],
    loss: LossFn,
    metric: LossFn | None,
    metric_name: str,
    step_loss: StepLoss | None,
) -> dict[str, Array]:
    values = [_loss_and_metric(model, params, b, None, loss, metric, step_loss) for b in batches]
    result = {"eval_loss": jnp.mean(jnp.stack([v[0] for v in values]))}
    if metric is not None:
        result[f"eval_{metric_name}"] = jnp.mean(
            jnp.stack([v[1] for v in values if v[1] is not None])
        )
    return result


def evaluate(
    model: Model,
    params: Params,
    batches: Batch | Sequence[Batch],
    loss: LossFn,
    metric: LossFn | None = None,
    *,
    metric_name: str = "metric",
    step_loss: StepLoss | None = None,
) -> dict[str, float]:
    """The mean loss (and metric) of ``model`` over held-out ``batches``, dropout off.

    Compiled once per model, loss and batch shapes (one jitted program for
    all the batches). With ``step_loss`` the loss and metric are computed
    inside the time loop, as in :func:`make_train_step`.

    Args:
      model: a :class:`Model`.
      params: its params.
      batches: one :class:`~jaxrnn.tasks.Batch` or a sequence of them.
      loss: ``loss(outputs, batch) -> scalar``.
      metric: optional ``metric(outputs, batch) -> scalar``.
      metric_name: the metric's key is ``"eval_" + metric_name``.
      step_loss: the per-step form of ``loss`` and ``metric``, or None.

    Returns:
      ``{"eval_loss": float, "eval_<metric_name>": float}``: means over the
      batches (each batch's value weighted equally).

    Example:
      >>> import jax, jaxrnn
      >>> from jaxrnn import tasks, training
      >>> task = tasks.temporal_order(20)
      >>> model = training.readout(jaxrnn.gru(8), task.output_size)
      >>> params = model.init(jax.random.key(0), task.input_size)
      >>> held_out = [task.sample(jax.random.key(i), 32, "eval") for i in range(2)]
      >>> sorted(training.evaluate(model, params, held_out, task.loss, task.metric,
      ...                          metric_name=task.metric_name))
      ['eval_accuracy', 'eval_loss']
    """
    batches = _as_batches(batches, "batches")
    if not batches:
        raise ValueError("batches: expected at least one batch, got none")
    result = _evaluate(model, params, batches, loss, metric, metric_name, step_loss)
    return {k: float(v) for k, v in jax.device_get(result).items()}


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
    data: Task | Batch | Iterable[Batch],
    tx: optax.GradientTransformation,
    *,
    steps: int,
    key: PRNGKey,
    batch_size: int | None = None,
    loss: LossFn | None = None,
    metric: LossFn | None = None,
    metric_name: str = "metric",
    step_loss: StepLoss | None = None,
    eval_data: Batch | Sequence[Batch] | None = None,
    out: str | os.PathLike[str] | runlog.RunDir | None = None,
    resume: bool = False,
    overwrite: bool = False,
    eval_every: int | None = None,
    eval_batches: int = 4,
    log_every: int = 10,
    checkpoint_every: int | None = None,
    config: Mapping[str, Any] | None = None,
    params: Params | None = None,
    extra_metrics: Callable[[Params, Batch], dict[str, Any]] | None = None,
    max_consecutive_skips: int = 100,
    devices: int | None = None,
    progress: bool | TextIO = True,
    handle_signals: bool = True,
) -> FitResult:
    """Train ``model`` on ``data`` for ``steps`` updates of ``tx``, logging to a run directory.

    A loop over :func:`make_train_step` and :func:`evaluate`.

    **Data.** ``data`` is one of:

    * a :class:`jaxrnn.tasks.Task`: step ``s`` trains on
      ``task.sample(fold_in(k_data, s), batch_size)``, so the step number is
      the data position; the loss, metric and baseline are the task's, and
      evaluation uses ``eval_batches`` batches of its ``"eval"`` split; a
      task with a ``step_loss`` (``text``) is scored inside the time loop
      (see :func:`make_train_step`);
    * a :class:`~jaxrnn.tasks.Batch` of arrays holding ``N`` sequences
      (``xs`` ``[N, T, I]``, ``targets`` ``[N, ...]``, ``lengths`` ``[N]``
      or None): step ``s`` trains on ``batch_size`` distinct sequences drawn
      with ``fold_in(k_data, s)``; give ``loss`` (and ``metric``);
    * an iterable of :class:`~jaxrnn.tasks.Batch` (or ``(xs, targets,
      lengths)`` tuples): one per step; the run ends early when it runs out;
      a resume skips the batches already trained on, so a re-iterable,
      deterministic source gives the same run. Give ``loss``.

    The keys: ``k_init, k_data, k_drop, k_eval = jax.random.split(key, 4)``;
    ``k_drop`` is the train step's dropout key. Non-finite gradients skip
    their update (``optax.apply_if_finite`` around ``tx``) and are counted;
    more than ``max_consecutive_skips`` in a row stop the run with a
    FloatingPointError.

    **Logs.** Every ``log_every`` steps a line goes to ``out/metrics.jsonl``:
    ``step``, ``loss``, the metric, ``grad_norm`` (pre-clip), ``lr``,
    ``skipped``, ``steps_per_s``; every ``eval_every`` steps and at the end
    also ``eval_loss`` and ``eval_<metric>`` and ``extra_metrics(params,
    first eval batch)``. ``out/summary.json`` holds ``final_eval_loss``,
    ``final_eval_<metric>`` (None without evaluation data), ``baseline``,
    ``steps``, ``wall_seconds``, ``first_step_seconds`` (with compilation),
    ``steps_per_second`` (after the first step, evaluation excluded),
    ``skipped_updates``, ``compiles``, ``config``.

    **Runs are never lost.** ``out`` is opened as a
    :class:`jaxrnn.runlog.RunDir`: locked against a second process, refused
    if it already holds a run unless ``resume`` (continue it) or
    ``overwrite`` (move it aside). Checkpoints (params, optimizer state,
    step) are written atomically every ``checkpoint_every`` steps and at the
    end. ``resume=True`` first compares ``config`` with the run's (raising
    :class:`ConfigMismatch` before any array is read), then restores the
    newest intact checkpoint (a damaged newer one is skipped with a
    warning and renamed ``<name>.damaged``) and cuts ``metrics.jsonl`` back
    to it: the resumed run ends with bit-identical params and metrics to an
    uninterrupted one. ``steps`` may grow on resume, not shrink.

    **Clean stops.** With ``handle_signals`` (in the main thread of a
    one-process run), SIGINT and SIGTERM let the current step finish, write
    a checkpoint and raise :class:`Stopped`; a second signal acts at once.

    Args:
      model: a :class:`Model`, e.g. from :func:`readout`.
      data: a task, arrays or an iterable of batches (above).
      tx: an optax transformation, e.g. from :func:`optimizer`.
      steps: total number of updates.
      key: the run's PRNG key.
      batch_size: sequences per batch (a task or arrays).
      loss: ``loss(outputs, batch) -> scalar`` (arrays or batches only).
      metric: ``metric(outputs, batch) -> scalar``, higher is better.
      metric_name: the metric's key in the logs.
      step_loss: the per-step form of ``loss`` and ``metric`` (arrays or
        batches only), see :func:`make_train_step`.
      eval_data: held-out batches (arrays or batches only).
      out: the run directory (or a :class:`jaxrnn.runlog.RunDir` already
        opened on it); None writes nothing.
      resume: continue the run in ``out``.
      overwrite: move a run already in ``out`` aside first.
      eval_every: steps between evaluations (default ``steps // 10``).
      eval_batches: held-out batches of a task per evaluation.
      log_every: steps between metric lines.
      checkpoint_every: steps between checkpoints (needs ``out``).
      config: JSON-ready description of the run (NumPy and JAX scalars are
        converted), stored with it and compared on resume (``steps`` may
        differ).
      params: the initial params; default ``model.init(k_init, I)``.
      extra_metrics: ``f(params, batch) -> dict`` of JSON-ready values added
        at each evaluation.
      max_consecutive_skips: see above.
      devices: data-parallel training over the first ``devices`` of
        :func:`jax.devices`: batches sharded along their batch axis, params
        and optimizer state replicated; ``batch_size`` must be divisible by it.
      progress: progress lines with an ETA (to stderr, or the given stream).
      handle_signals: catch SIGINT/SIGTERM as above.

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
    steps = check_positive_int(steps, "steps")
    if steps >= 2**31:
        raise ValueError(
            f"steps: expected fewer than 2**31 (the step counter is int32), got {steps}"
        )
    _check_tx(tx)
    source = _source(
        data, batch_size, loss, metric, metric_name, step_loss, eval_data, eval_batches
    )
    shard = _data_parallel(devices, source.batch_size)
    k_init, k_data, k_drop, k_eval = jax.random.split(key, 4)
    tx = optax.apply_if_finite(tx, max_consecutive_errors=2**31 - 1)
    if params is None:
        params = model.init(k_init, source.input_size)
    train_step = make_train_step(
        model, tx, source.loss, source.metric, metric_name=source.name, step_loss=source.step_loss
    )
    loop = _Loop(
        model,
        source,
        [shard.place(b) for b in source.eval(k_eval)],
        steps=steps,
        eval_every=eval_every,
        log_every=log_every,
        checkpoint_every=checkpoint_every,
        extra_metrics=extra_metrics,
        max_consecutive_skips=max_consecutive_skips,
        progress=progress,
    )
    with loop.open(out, resume, overwrite, _json_config(config), key, handle_signals):
        state = shard.replicate(loop.restore(TrainState.create(params, tx)))
        step_fn = jax.jit(loop.counted(train_step))
        batches = source.batches(k_data, int(state.step))
        for step in range(int(state.step) + 1, steps + 1):
            batch = next(batches, None)
            if batch is None:  # an iterable of batches ran out
                break
            state, stats = step_fn(state, shard.place(batch), k_drop)
            loop.after_step(step, state, stats)
        return loop.finish(state)


def sample_text(
    model: Model,
    params: Params,
    prompt: str,
    length: int,
    key: PRNGKey,
    *,
    temperature: float = 1.0,
) -> str:
    """Characters generated one at a time by a model trained on the ``text`` task.

    The model reads ``prompt`` (one-hot symbols of
    :func:`jaxrnn.tasks.text_vocab`), then ``length`` times draws the next
    character from ``softmax(logits / temperature)`` and feeds it back,
    carrying the recurrent state from step to step (:func:`jaxrnn.decode`
    over :attr:`Model.run` as a step: one compiled loop, each character one
    step; character ``t``'s key is ``fold_in(key, t)``). ``temperature=0``
    takes the most likely character every time.

    Args:
      model: a :class:`Model` with ``run`` and ``V = 97`` outputs, e.g.
        ``readout(rnn, tasks.text(T).output_size)``.
      params: its trained params.
      prompt: at least one character (characters outside the vocabulary
        read as ``"\ufffd"``).
      length: how many characters to generate.
      key: the PRNG key of the draws.
      temperature: ≥ 0; below 1 sharpens, above 1 flattens the distribution.

    Returns:
      ``prompt`` followed by the ``length`` generated characters.

    Example:
      >>> import jax, jaxrnn
      >>> from jaxrnn import tasks, training
      >>> model = training.readout(jaxrnn.lstm(16), tasks.text(8).output_size)
      >>> params = model.init(jax.random.key(0), len(tasks.text_vocab()))
      >>> text = training.sample_text(model, params, "def ", 12, jax.random.key(1))
      >>> text.startswith("def "), len(text)
      (True, 16)
    """
    if model.run is None:
        raise ValueError("model: expected a Model with run (e.g. from training.readout), got None")
    if not isinstance(prompt, str) or not prompt:
        raise ValueError(f"prompt: expected a non-empty string, got {prompt!r}")
    length = check_positive_int(length, "length")
    t = 0.0 if temperature == 0 else check_positive_float(temperature, "temperature")
    vocab = len(text_vocab())
    ids = jnp.asarray(encode(prompt))
    width = jax.eval_shape(lambda: model.run(params, _one_hot(ids[None], vocab))[1]).shape[-1]  # type: ignore[misc]
    if width != vocab:
        raise ValueError(
            f"model: expected {vocab} outputs (a logit per character of text_vocab()), got {width}"
        )
    return prompt + decode(_generate(model, params, ids, key, length, t == 0, t or 1.0))


def _one_hot(ids: Array, vocab: int) -> Array:
    return jax.nn.one_hot(ids, vocab, dtype=jnp.float32)


@functools.partial(jax.jit, static_argnums=(0, 4, 5))
def _generate(
    model: Model,
    params: Params,
    prompt: Array,
    key: PRNGKey,
    length: int,
    greedy: bool,
    temperature: float | Array,
) -> Array:
    run = model.run
    assert run is not None
    vocab = len(text_vocab())

    def initial_carry(batch_shape: Any = (1,), dtype: Any = jnp.float32) -> Any:
        return run(params, jnp.zeros((*batch_shape, 0, vocab), dtype))[0]

    def step(p: Params, carry: Any, x: Array) -> tuple[Any, Array]:
        """One character ``[1, V]`` through the model: ``Model.run`` as a cell's step."""
        carry, out = run(p, x[:, None, :], carry)
        return carry, out[:, 0]

    def scaled(logits: Array) -> Array:
        # Shifted so the largest logit is 0: a tiny temperature then sharpens towards the
        # argmax instead of overflowing to inf - inf.
        return (logits - jnp.max(logits, axis=-1, keepdims=True)) / temperature

    def sample(k: PRNGKey | None, logits: Array) -> Array:
        if greedy or k is None:
            return jnp.argmax(logits, axis=-1)
        return jax.random.categorical(k, logits)

    # The prompt but its last character sets the carry; decoding reads the last one first.
    carry, _ = run(params, _one_hot(prompt[None, :-1], vocab))
    _, out = _decode.decode(
        Cell(model.init, initial_carry, step),
        params,
        carry,
        _one_hot(prompt[-1:], vocab),
        length,
        readout=scaled,
        sample=sample,
        embed=lambda ids: _one_hot(ids, vocab),
        key=key,
    )
    return out.samples[:, 0]


# --------------------------------------------------------------------------- the loop's parts


class _Source(NamedTuple):
    """What :func:`fit` trains and evaluates on, whatever form ``data`` took."""

    batches: Callable[[PRNGKey, int], Iterator[Batch]]  # (k_data, first step) -> batches
    eval: Callable[[PRNGKey], list[Batch]]
    loss: LossFn
    metric: LossFn | None
    step_loss: StepLoss | None
    name: str  # the metric's name
    baseline: float | None
    task: str | None
    input_size: int
    batch_size: int | None


def _source(
    data: Any,
    batch_size: Any,
    loss: LossFn | None,
    metric: LossFn | None,
    metric_name: str,
    step_loss: StepLoss | None,
    eval_data: Any,
    eval_batches: Any,
) -> _Source:
    if step_loss is not None and not callable(step_loss):
        raise TypeError(f"step_loss: expected a function or None, got {step_loss!r}")
    if isinstance(data, Task):
        own = (("loss", loss), ("metric", metric), ("step_loss", step_loss))
        for name, value in (*own, ("eval_data", eval_data)):
            if value is not None:
                raise ValueError(f"{name}: a Task brings its own; expected None, got {value!r}")
        size = check_positive_int(batch_size, "batch_size")
        count = check_positive_int(eval_batches, "eval_batches")

        @jax.jit
        def draw_task(k_data: PRNGKey, step: Array) -> Batch:  # one dispatch per step
            return data.sample(jax.random.fold_in(k_data, step), size, "train")

        def sample(k_data: PRNGKey, start: int) -> Iterator[Batch]:
            for s in itertools.count(start):
                yield draw_task(k_data, s)

        def held_out(k_eval: PRNGKey) -> list[Batch]:
            return [data.sample(jax.random.fold_in(k_eval, i), size, "eval") for i in range(count)]

        return _Source(
            sample, held_out, data.loss, data.metric, data.step_loss, data.metric_name,
            data.baseline, data.name, data.input_size, size,
        )  # fmt: skip
    if loss is None or not callable(loss):
        raise ValueError(
            "loss: expected a function loss(outputs, batch) -> scalar for data given as arrays "
            f"or batches, got {loss!r}"
        )
    held = [] if eval_data is None else _as_batches(eval_data, "eval_data")
    if isinstance(data, Batch):
        xs, size = _check_arrays(data, batch_size)

        @jax.jit
        def draw_rows(k_data: PRNGKey, step: Array, data: Batch) -> Batch:
            rows = jax.random.permutation(jax.random.fold_in(k_data, step), len(xs))[:size]
            return jax.tree.map(lambda a: a[rows], data)

        def draw(k_data: PRNGKey, start: int) -> Iterator[Batch]:
            for s in itertools.count(start):
                yield draw_rows(k_data, s, data)

        return _Source(
            draw,
            lambda k: held,
            loss,
            metric,
            step_loss,
            metric_name,
            None,
            None,
            xs.shape[-1],
            size,
        )
    if isinstance(data, Iterable) and not isinstance(data, Mapping | str | np.ndarray | jax.Array):
        stream = iter(data)
        first = next(stream, None)
        if first is None:
            raise ValueError("data: expected at least one batch, got an empty iterable")
        first = _as_batch(first, "data[0]")
        stream = itertools.chain([first], stream)

        def read(k_data: PRNGKey, start: int) -> Iterator[Batch]:
            for i, batch in enumerate(itertools.islice(stream, start, None), start):
                yield _as_batch(batch, f"data[{i}]")

        given = None if batch_size is None else check_positive_int(batch_size, "batch_size")
        width = np.shape(first.xs)[-1]
        return _Source(
            read, lambda k: held, loss, metric, step_loss, metric_name, None, None, width, given
        )
    raise TypeError(
        "data: expected a jaxrnn.tasks.Task, a Batch of arrays or an iterable of batches, got "
        f"{type(data).__name__}"
    )


def _check_arrays(data: Batch, batch_size: Any) -> tuple[Array, int]:
    xs = data.xs
    if np.ndim(xs) != 3:
        raise ValueError(f"data.xs: expected [N, T, I], got shape {np.shape(xs)}")
    n = np.shape(xs)[0]
    if np.ndim(data.targets) < 1 or np.shape(data.targets)[0] != n:
        raise ValueError(
            f"data.targets: expected {n} rows (one per sequence of xs), got shape "
            f"{np.shape(data.targets)}"
        )
    if data.lengths is not None and np.shape(data.lengths) != (n,):
        raise ValueError(f"data.lengths: expected shape ({n},), got {np.shape(data.lengths)}")
    size = check_positive_int(batch_size, "batch_size")
    if size > n:
        raise ValueError(f"batch_size: expected at most the {n} sequences of data, got {size}")
    return xs, size


def _as_batch(batch: Any, name: str) -> Batch:
    if isinstance(batch, Batch):
        return batch
    if isinstance(batch, tuple | list) and len(batch) in (2, 3):
        return Batch(*batch) if len(batch) == 3 else Batch(batch[0], batch[1], None)  # type: ignore[arg-type]
    raise TypeError(
        f"{name}: expected a jaxrnn.tasks.Batch or an (xs, targets[, lengths]) tuple, got "
        f"{type(batch).__name__}"
    )


def _as_batches(batches: Any, name: str) -> list[Batch]:
    if isinstance(batches, Batch) or (
        isinstance(batches, tuple) and len(batches) in (2, 3) and np.ndim(batches[0]) == 3
    ):
        return [_as_batch(batches, name)]
    if isinstance(batches, Sequence) and not isinstance(batches, str):
        return [_as_batch(b, f"{name}[{i}]") for i, b in enumerate(batches)]
    raise TypeError(
        f"{name}: expected a Batch or a sequence of batches, got {type(batches).__name__}"
    )


def _json_config(config: Any) -> dict[str, Any]:
    """``config`` as JSON data (NumPy/JAX scalars converted); a TypeError names a bad entry."""

    def ready(value: Any, where: str) -> Any:
        if value is None or isinstance(value, bool | int | float | str):
            return value
        if isinstance(value, np.generic | jax.Array) and np.ndim(value) == 0:
            return value.item()
        if isinstance(value, os.PathLike):
            return os.fspath(value)
        if isinstance(value, Mapping):
            for k in value:
                if not isinstance(k, str):
                    raise TypeError(f"{where}: expected string keys, got {k!r}")
            return {k: ready(v, f"{where}[{k!r}]") for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [ready(v, f"{where}[{i}]") for i, v in enumerate(value)]
        raise TypeError(
            f"{where}: expected a JSON value (number, string, bool, None, list or dict), got "
            f"{type(value).__name__} {value!r}"
        )

    if config is not None and not isinstance(config, Mapping):
        raise TypeError(f"config: expected a dict or None, got {type(config).__name__}")
    return json.loads(json.dumps(ready(dict(config or {}), "config")))


class _Loop:
    """The bookkeeping of :func:`fit`.

    Run directory, resume, logs, evaluation, checkpoints, timers, stops, summary.
    """

    def __init__(
        self,
        model: Model,
        source: _Source,
        held_out: list[Batch],
        *,
        steps: int,
        eval_every: Any,
        log_every: Any,
        checkpoint_every: Any,
        extra_metrics: Callable[[Params, Batch], dict[str, Any]] | None,
        max_consecutive_skips: int,
        progress: bool | TextIO,
    ) -> None:
        self.model, self.source, self.held_out, self.steps = model, source, held_out, steps
        self.eval_every = check_positive_int(
            max(1, steps // 10) if eval_every is None else eval_every, "eval_every"
        )
        self.log_every = check_positive_int(log_every, "log_every")
        self.checkpoint_every = (
            None
            if checkpoint_every is None
            else check_positive_int(checkpoint_every, "checkpoint_every")
        )
        self.extra_metrics, self.max_skips = extra_metrics, max_consecutive_skips
        stream = sys.stderr if progress is True else (progress or None)
        self.progress = None if stream is None else runlog.Progress(stream, steps, source.name)
        self.history: list[dict[str, Any]] = []
        self.traces, self.start, self.saved, self.t_step = 0, 0, -1, 0
        self.run: runlog.RunDir | None = None
        self.out: Path | None = None
        self.t_compiled: float | None = None
        self.unlogged: tuple[int, dict[str, Array]] | None = None

    @contextlib.contextmanager
    def open(
        self,
        out: str | os.PathLike[str] | runlog.RunDir | None,
        resume: bool,
        overwrite: bool,
        config: dict[str, Any],
        key: PRNGKey,
        handle_signals: bool,
    ) -> Iterator[None]:
        """Open the run directory (process 0 writes) and catch stop signals while entered."""
        if out is None and (resume or self.checkpoint_every is not None):
            flag = "resume" if resume else "checkpoint_every"
            raise ValueError(f"{flag}: needs an output directory, got out=None")
        owned = not isinstance(out, runlog.RunDir)  # else opened (and closed) by the caller
        self.out = (
            out.path if isinstance(out, runlog.RunDir) else None if out is None else Path(out)
        )
        self.config, self.key_data = config, np.asarray(jax.random.key_data(key))
        self.resume = resume
        if isinstance(out, runlog.RunDir):
            self.run = out
        elif self.out is not None and jax.process_index() == 0:
            self.run = runlog.RunDir(self.out, resume=resume, overwrite=overwrite)
        self.signals = runlog.StopSignals(handle_signals and jax.process_count() == 1)
        try:
            with self.signals:
                self.t_start = self.t_mark = time.perf_counter()
                self.eval_seconds = 0.0
                yield
        finally:
            if self.progress is not None:
                self.progress.close()
            if self.run is not None and owned:
                self.run.close()

    def restore(self, template: TrainState) -> TrainState:
        """``template`` for a fresh run; the newest intact checkpoint's state on resume."""
        if not self.resume:
            return template
        assert self.out is not None
        directory = self.out / runlog.CHECKPOINTS
        if ckpt.latest(directory) is None:
            raise runlog.RunDirError(f"resume: nothing to resume, no checkpoint in {directory}")
        tree, _, used = ckpt.restore_latest(
            directory, {"state": template, "key": self.key_data}, check=self._same_run
        )
        self.start = self.saved = self.t_step = int(tree["state"].step)
        if self.start > self.steps:
            raise ValueError(
                f"steps: the run in {self.out} is at step {self.start}; expected at least that "
                f"many steps to resume it, got {self.steps}"
            )
        if self.run is not None:
            listed = ckpt.checkpoints(directory)
            for damaged in listed[listed.index(used) + 1 :]:  # skipped: out of pruning's way
                os.rename(damaged, damaged.with_name(f"{damaged.name.lstrip('.')}.damaged"))
            self.history = self.run.keep_metrics(self.start)
        else:
            self.history = [x for x in runlog.read_metrics(self.out) if x["step"] <= self.start]
        if not self.history:
            warnings.warn(
                f"{self.out / runlog.METRICS}: no metric lines up to step {self.start}; the "
                "resumed run's metrics start after it",
                stacklevel=4,
            )
        return tree["state"]

    def _same_run(self, meta: dict[str, Any]) -> None:
        saved = {k: v for k, v in meta.get("config", {}).items() if k != "steps"}
        given = {k: v for k, v in self.config.items() if k != "steps"}
        differ = {
            k: (saved.get(k), given.get(k))
            for k in sorted(saved.keys() | given.keys())
            if saved.get(k) != given.get(k)
        }
        if "key" in meta and meta["key"] != self.key_data.tolist():
            differ["key"] = ("another PRNG key", "this one")
        if differ:
            assert self.out is not None
            raise runlog.ConfigMismatch(self.out, differ)

    def counted(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn``, counting its traces (the compile count of ``jax.jit(fn)``)."""

        @functools.wraps(fn)
        def wrapped(*args: Any) -> Any:
            self.traces += 1
            return fn(*args)

        return wrapped

    def after_step(self, step: int, state: TrainState, stats: dict[str, Array]) -> None:
        """Log, evaluate, checkpoint and stop as due after ``step``."""
        if self.t_compiled is None:
            jax.block_until_ready(state)
            self.t_compiled = time.perf_counter()
        is_eval = step % self.eval_every == 0 or step == self.steps
        self.unlogged = (step, stats)
        if is_eval or step % self.log_every == 0:
            self._log(step, stats, state.params, is_eval)
        due = self.checkpoint_every is not None and step % self.checkpoint_every == 0
        if due or (self.checkpoint_every is not None and step == self.steps):
            self._save(state)
        if self.signals.received is not None:
            path = None if self.run is None else self._save(state)
            raise runlog.Stopped(self.signals.received, step, path, state)

    def _evaluate(self, params: Params) -> dict[str, Any]:
        if not self.held_out:
            return {}
        src = self.source
        line: dict[str, Any] = evaluate(
            self.model, params, self.held_out, src.loss, src.metric, metric_name=src.name,
            step_loss=src.step_loss,
        )  # fmt: skip
        if self.extra_metrics is not None:
            line.update(self.extra_metrics(params, self.held_out[0]))
        return line

    def _log(self, step: int, stats: dict[str, Array], params: Params, is_eval: bool) -> None:
        line: dict[str, Any] = {"step": step}
        line.update({k: v.item() for k, v in jax.device_get(stats).items()})
        skips = line.pop("consecutive_skips")
        now = time.perf_counter()
        line["steps_per_s"] = (step - self.t_step) / max(now - self.t_mark, 1e-9)
        if is_eval:
            line.update(self._evaluate(params))
        self.t_mark, self.t_step = time.perf_counter(), step
        self.eval_seconds += self.t_mark - now
        self.history.append(line)
        self.unlogged = None
        if self.run is not None:
            self.run.log(line)
        if self.progress is not None:
            self.progress.show(line, force=is_eval)
        if skips > self.max_skips:
            raise FloatingPointError(
                f"training diverged: more than {self.max_skips} non-finite gradients in a row "
                f"at step {step}; lower the learning rate or clip the gradients"
            )

    def _save(self, state: TrainState) -> Path | None:
        if self.run is None or int(state.step) == self.saved:
            return None if self.run is None else ckpt.latest(self.run.checkpoints)
        self.saved = int(state.step)
        tree = {"state": state, "key": self.key_data}
        meta = {"config": self.config, "key": self.key_data.tolist()}
        return ckpt.save(self.run.checkpoints, self.saved, tree, meta=meta)

    def finish(self, state: TrainState) -> FitResult:
        """Checkpoint a run its data ended early, evaluate, write and return the summary."""
        t_end = time.perf_counter()
        if self.unlogged is not None:  # an iterable of batches ended between two logged steps
            self._log(*self.unlogged, state.params, True)
        if self.checkpoint_every is not None:
            self._save(state)
        last = self.history[-1] if self.history else {}
        if last.get("step") == int(state.step) and "eval_loss" in last:
            final = last  # the last step was evaluated already, with these params
        else:
            final = self._evaluate(state.params)
        done = int(state.step) - self.start
        timed = None if self.t_compiled is None or done < 2 else t_end - self.t_compiled
        name = self.source.name
        summary = {
            "final_eval_loss": final.get("eval_loss"),
            f"final_eval_{name}": final.get(f"eval_{name}"),
            "baseline": self.source.baseline,
            "task": self.source.task,
            "steps": int(state.step),
            "steps_this_run": done,
            "wall_seconds": t_end - self.t_start,
            "first_step_seconds": (
                None if self.t_compiled is None else self.t_compiled - self.t_start
            ),
            "steps_per_second": (
                None if timed is None else (done - 1) / max(timed - self.eval_seconds, 1e-9)
            ),
            "skipped_updates": int(getattr(state.opt_state, "total_notfinite", 0)),
            "compiles": self.traces,
            "resumed_from": self.start if self.resume else None,
            "config": self.config,
        }
        if self.run is not None:
            self.run.write_summary(summary)
        return FitResult(state, summary, self.history)


class _Sharding(NamedTuple):
    """How :func:`fit` places its arrays.

    ``place`` shards a batch along its batch axis, ``replicate`` copies a pytree
    to every device.
    """

    place: Callable[[Batch], Batch]
    replicate: Callable[[Any], Any]


def _data_parallel(devices: int | None, batch_size: int | None) -> _Sharding:
    if devices is None:
        return _Sharding(lambda batch: batch, lambda tree: tree)
    devices = check_positive_int(devices, "devices")
    available = jax.devices()
    if devices > len(available):
        raise ValueError(
            f"devices: expected at most the {len(available)} available device(s), got {devices}"
        )
    if batch_size is not None and batch_size % devices:
        raise ValueError(
            f"batch_size: expected a multiple of devices={devices} for data parallelism, "
            f"got {batch_size}"
        )
    auto = (jax.sharding.AxisType.Auto,)
    mesh = jax.make_mesh((devices,), ("data",), auto, devices=available[:devices])
    split = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    whole = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    return _Sharding(lambda b: jax.device_put(b, split), lambda tree: jax.device_put(tree, whole))


def _check_tx(tx: Any) -> None:
    if not isinstance(tx, optax.GradientTransformation):
        raise TypeError(
            "tx: expected an optax.GradientTransformation (e.g. training.optimizer(1e-3)), got "
            f"{type(tx).__name__} {tx!r:.80}"
        )


def _scalar(value: Any, name: str) -> Array:
    if jnp.shape(value) != ():
        raise ValueError(f"{name}: expected a scalar, got shape {jnp.shape(value)}")
    return value


def _learning_rate(opt_state: Any) -> Array:
    """The injected learning rate inside an ``apply_if_finite``/``chain`` state, else NaN."""
    for s in jax.tree.leaves(opt_state, is_leaf=lambda x: hasattr(x, "hyperparams")):
        if hasattr(s, "hyperparams") and "learning_rate" in s.hyperparams:
            return jnp.asarray(s.hyperparams["learning_rate"], jnp.float32)
    return jnp.asarray(jnp.nan, jnp.float32)

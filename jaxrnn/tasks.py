"""Long-dependency tasks of the RNN literature, and one real dataset that needs no download.

Every task is a :class:`Task`: a ``sample`` function that draws a :class:`Batch`
from a PRNG key, and a ``loss`` and ``metric`` that take the model's output at
*every* step and do the readout themselves (at each sequence's last valid
step, or at every step). ``baseline`` is the exact loss of the best predictor
that has no memory of the inputs, so a model has learned something only once
its loss is clearly below it.

Shape legend: ``B`` — batch size, ``T`` — the padded sequence length
(``Task.seq_len``), ``I`` — ``Task.input_size``, ``O`` — ``Task.output_size``,
``V`` — the size of the text vocabulary. Batches are batch-major: run a model
with ``jaxrnn.scan(..., lengths=batch.lengths, time_major=False)``.

* ``"adding"`` — Arjovsky et al. 2016; MSE at the end; baseline 1/6.
* ``"adding-hs97"`` — Hochreiter & Schmidhuber 1997, Experiment 4; MSE at the
  end; baseline :func:`adding_hs97_baseline`.
* ``"copy"`` — Arjovsky et al. 2016; cross-entropy at every step; baseline
  10 ln 8 / (T + 20).
* ``"temporal-order"`` — Pascanu et al. 2013, or Hochreiter & Schmidhuber
  1997, Experiment 6a; cross-entropy at the end; baseline ln 4.
* ``"text"`` — characters of CPython's bundled help texts; cross-entropy at
  every step; baseline the unigram entropy.

:func:`from_arrays` makes a task of your own sequences.

Example:
  >>> import jax, jaxrnn
  >>> from jaxrnn import tasks
  >>> task = tasks.get("adding", 50)
  >>> batch = task.sample(jax.random.key(0), 16)
  >>> cell = jaxrnn.elman(32, output_size=task.output_size)
  >>> params = cell.init(jax.random.key(1), task.input_size)
  >>> _, ys = jaxrnn.scan(cell, params, batch.xs, lengths=batch.lengths, time_major=False)
  >>> ys.shape, task.loss(ys, batch).shape, round(task.baseline, 4)
  ((16, 50, 1), (), 0.1667)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn._cell import Array, PRNGKey, check_positive_int
from jaxrnn._masks import last_valid, length_mask

__all__ = [
    "NAMES",
    "Batch",
    "Task",
    "adding",
    "adding_baseline",
    "adding_hs97",
    "adding_hs97_baseline",
    "copy_baseline",
    "copy_memory",
    "decode",
    "encode",
    "from_arrays",
    "get",
    "temporal_order",
    "text",
    "text_corpus",
    "text_vocab",
]

NAMES: tuple[str, ...] = ("adding", "adding-hs97", "copy", "temporal-order", "text")
"""The task names :func:`get` accepts."""

_SPLITS = ("train", "eval")
_TOLERANCE = 0.04  # "correct" threshold of the adding problems (Hochreiter & Schmidhuber 1997)


class Batch(NamedTuple):
    """One batch of a task.

    Attributes:
      xs: ``[B, T, I]`` float32 inputs, batch-major, right-padded with zeros to
        the task's ``seq_len``.
      targets: task-specific: ``[B]`` float32 for the adding problems, ``[B]``
        int32 classes for temporal order, ``[B, T]`` int32 symbols for copy and
        text.
      lengths: ``[B]`` int32 number of valid steps of each sequence (``T`` for
        fixed-length tasks).

    Example:
      >>> import jax
      >>> from jaxrnn import tasks
      >>> batch = tasks.adding_hs97(100).sample(jax.random.key(0), 4)
      >>> batch.xs.shape, batch.targets.shape, batch.lengths.shape
      ((4, 110, 2), (4,), (4,))
    """

    xs: Array
    targets: Array
    lengths: Array


class Task(NamedTuple):
    """A supervised sequence task as pure functions.

    Attributes:
      name: the task's name (one of :data:`NAMES`).
      input_size: ``I``, the size of each input vector.
      output_size: ``O``, the size of the model output that ``loss`` expects.
      seq_len: ``T``, the padded length of every batch.
      sample: ``sample(key, batch_size, split="train") -> Batch``; pure and
        deterministic in ``key``, jittable with ``batch_size`` and ``split``
        static (``jax.jit(task.sample, static_argnums=(1, 2))``). ``split`` is
        ``"train"`` or ``"eval"``: for the synthetic tasks it draws from an
        independent stream (the same key gives different train and eval
        batches); for ``text`` it picks the part of the corpus.
      loss: ``loss(outputs, batch) -> scalar`` for ``outputs`` of shape
        ``[B, T, O]``, the model's output at every step (unnormalised logits
        for the classification tasks). A mean: MSE, or cross-entropy in nats.
      metric: ``metric(outputs, batch) -> scalar``, higher is better.
      metric_name: what ``metric`` measures, an identifier usable as a key:
        ``"correct"`` (adding tasks: the fraction with |error| < 0.04) or
        ``"accuracy"``.
      baseline: the exact loss of the best memoryless predictor, in the units
        of ``loss``.
      step_loss: None, or ``loss`` and ``metric`` one step at a time, for a
        task whose loss and metric are both means over every valid step
        (``text``, per-step classes of :func:`from_arrays`):
        ``step_loss(outputs_t, targets_t) -> (loss_t, metric_t)`` for one
        step's ``[B, O]`` outputs and ``[B]`` targets, each ``[B]``; ``loss``
        is the sum of ``loss_t`` over the valid steps divided by their number.
        :func:`jaxrnn.training.fit` then computes the loss inside the time
        loop (:func:`jaxrnn.scan_reduce`), never holding every step's output.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxrnn import tasks
      >>> task = tasks.temporal_order(50)
      >>> batch = jax.jit(task.sample, static_argnums=(1, 2))(jax.random.key(0), 8, "eval")
      >>> uniform = jnp.zeros((8, task.seq_len, task.output_size))
      >>> bool(jnp.isclose(task.loss(uniform, batch), task.baseline)), task.metric_name
      (True, 'accuracy')
    """

    name: str
    input_size: int
    output_size: int
    seq_len: int
    sample: Callable[..., Batch]
    loss: Callable[[Array, Batch], Array]
    metric: Callable[[Array, Batch], Array]
    metric_name: str
    baseline: float
    step_loss: StepLoss | None = None


StepLoss = Callable[[Array, Array], tuple[Array, Array]]
"""``step_loss(outputs_t, targets_t) -> (loss_t, metric_t)``: see :attr:`Task.step_loss`."""


# --------------------------------------------------------------------------- helpers


def _check_seq_len(seq_len: object, minimum: int, why: str) -> int:
    seq_len = check_positive_int(seq_len, "seq_len")
    if seq_len < minimum:
        raise ValueError(f"seq_len: expected an integer >= {minimum} ({why}), got {seq_len}")
    return seq_len


def _task(
    name: str,
    input_size: int,
    output_size: int,
    seq_len: int,
    generate: Callable[[PRNGKey, int, str], Batch],
    loss: Callable[[Array, Batch], Array],
    metric: Callable[[Array, Batch], Array],
    metric_name: str,
    baseline: float,
    fold_split: bool = True,
    step_loss: StepLoss | None = None,
) -> Task:
    """Build a :class:`Task`: checks ``sample``'s arguments, then runs jitted functions.

    ``generate(key, batch_size, split)`` runs under one :func:`jax.jit` with
    ``batch_size`` and ``split`` static; with ``fold_split`` the key is first
    folded with the split, so train and eval batches are independent. The
    jits make an eager call one compiled program instead of dozens of
    dispatched operations; they nest in a user's own ``jax.jit``.
    """

    @functools.partial(jax.jit, static_argnums=(1, 2))
    def run(key: PRNGKey, batch_size: int, split: str) -> Batch:
        if fold_split:
            key = jax.random.fold_in(key, _SPLITS.index(split))
        return generate(key, batch_size, split)

    def sample(key: PRNGKey, batch_size: int, split: str = "train") -> Batch:
        batch_size = check_positive_int(batch_size, "batch_size")
        if split not in _SPLITS:
            raise ValueError(f"split: expected one of {_SPLITS}, got {split!r}")
        return run(key, batch_size, split)

    return Task(
        name,
        input_size,
        output_size,
        seq_len,
        sample,
        jax.jit(loss),
        jax.jit(metric),
        metric_name,
        float(baseline),
        step_loss,
    )


def _randint_columns(key: PRNGKey, batch_size: int, ranges: list[tuple[int, int]]) -> Array:
    """``[B, len(ranges)]`` int32, column ``j`` uniform on ``[lo_j, hi_j)`` for ``ranges[j]``.

    One :func:`jax.random.randint` for all of a batch's integers: each random
    draw compiles separately and they dominate the compile time of these small
    programs (on the 2-core CPU, one draw instead of four took the compile of
    :func:`adding_hs97`'s sampler from about 0.75 s to 0.45 s).
    """
    lo, hi = np.array(ranges, np.int32).T
    return jax.random.randint(key, (batch_size, len(ranges)), lo[None, :], hi[None, :], jnp.int32)


def _check_outputs(outputs: Array, batch: Batch, output_size: int) -> Array:
    """Return ``outputs`` as an array of shape ``[B, T, O]`` matching ``batch``, or raise."""
    outputs = jnp.asarray(outputs)
    expected = (*batch.xs.shape[:2], output_size)
    if outputs.shape != expected:
        hint = ""
        if outputs.shape == (batch.xs.shape[1], batch.xs.shape[0], output_size):
            hint = " (outputs look time-major: use jaxrnn.scan(..., time_major=False))"
        raise ValueError(
            f"outputs: expected shape [B, T, output_size] = {expected}, the model's output at "
            f"every step of batch.xs, got {tuple(outputs.shape)}{hint}"
        )
    if not jnp.issubdtype(outputs.dtype, jnp.floating):
        raise TypeError(f"outputs: expected a floating dtype, got {outputs.dtype}")
    return outputs.astype(jnp.promote_types(outputs.dtype, jnp.float32))


def _at_end(outputs: Array, lengths: Array) -> Array:
    """``outputs[b, lengths[b] - 1]`` for every ``b``: ``[B, T, O] -> [B, O]``."""
    return last_valid(outputs, lengths, time_major=False)


def _valid_steps(lengths: Array, num_steps: int) -> Array:
    """``[B, T]`` float mask of the valid steps."""
    return length_mask(lengths, num_steps, time_major=False).astype(jnp.float32)


def _cross_entropy(logits: Array, labels: Array) -> Array:
    """Cross-entropy in nats of integer ``labels`` ``[...]`` under ``logits`` ``[..., C]``."""
    log_p = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.take_along_axis(log_p, labels.astype(jnp.int32)[..., None], axis=-1)[..., 0]


def _end_regression(output_size: int) -> tuple[Callable, Callable]:
    """MSE and "|error| < 0.04" of the output at each sequence's last valid step."""

    def loss(outputs: Array, batch: Batch) -> Array:
        pred = _at_end(_check_outputs(outputs, batch, output_size), batch.lengths)[:, 0]
        return jnp.mean((pred - batch.targets) ** 2)

    def metric(outputs: Array, batch: Batch) -> Array:
        pred = _at_end(_check_outputs(outputs, batch, output_size), batch.lengths)[:, 0]
        return jnp.mean((jnp.abs(pred - batch.targets) < _TOLERANCE).astype(jnp.float32))

    return loss, metric


def _end_classification(output_size: int) -> tuple[Callable, Callable]:
    """Cross-entropy and accuracy of the logits at each sequence's last valid step."""

    def loss(outputs: Array, batch: Batch) -> Array:
        logits = _at_end(_check_outputs(outputs, batch, output_size), batch.lengths)
        return jnp.mean(_cross_entropy(logits, batch.targets))

    def metric(outputs: Array, batch: Batch) -> Array:
        logits = _at_end(_check_outputs(outputs, batch, output_size), batch.lengths)
        return jnp.mean((jnp.argmax(logits, axis=-1) == batch.targets).astype(jnp.float32))

    return loss, metric


def _every_step_loss(output_size: int) -> Callable:
    """Mean cross-entropy over the valid steps of every sequence."""

    def loss(outputs: Array, batch: Batch) -> Array:
        outputs = _check_outputs(outputs, batch, output_size)
        mask = _valid_steps(batch.lengths, outputs.shape[1])
        return jnp.sum(_cross_entropy(outputs, batch.targets) * mask) / jnp.sum(mask)

    return loss


def _every_step_accuracy(output_size: int) -> Callable:
    """Next-symbol accuracy over the valid steps of every sequence."""

    def metric(outputs: Array, batch: Batch) -> Array:
        outputs = _check_outputs(outputs, batch, output_size)
        mask = _valid_steps(batch.lengths, outputs.shape[1])
        hits = (jnp.argmax(outputs, axis=-1) == batch.targets).astype(jnp.float32)
        return jnp.sum(hits * mask) / jnp.sum(mask)

    return metric


def _classes_step_loss(logits: Array, labels: Array) -> tuple[Array, Array]:
    """Cross-entropy and hits of one step: the per-step form of the two functions above."""
    logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
    hits = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
    return _cross_entropy(logits, labels), hits


# --------------------------------------------------------------------------- adding


def adding_baseline() -> float:
    """MSE of the best constant predictor on :func:`adding`: exactly 1/6.

    The target is the sum of two independent U[0, 1] values; the best constant
    is its mean 1 and its MSE the variance 2 · 1/12 = 1/6.

    Returns:
      ``1/6``.

    Example:
      >>> from jaxrnn import tasks
      >>> tasks.adding_baseline()
      0.16666666666666666
    """
    return 1.0 / 6.0


def adding(seq_len: int) -> Task:
    """The adding problem in the variant of Arjovsky et al. 2016 (uRNN).

    Two input channels of length ``T = seq_len``: channel 0 holds values
    i.i.d. U[0, 1]; channel 1 holds markers, exactly two 1s, one uniform in
    the first half ``[0, T//2)`` and one uniform in the second half
    ``[T//2, T)``, zeros elsewhere. The target, read at the last step, is the
    sum of the two marked values::

      y = Σ_t xs[t, 0] · xs[t, 1]

    Loss: MSE of the output at the last step. Metric: the fraction of
    sequences with ``|error| < 0.04`` (the criterion of Hochreiter &
    Schmidhuber 1997). Baseline: 1/6, the MSE of always predicting 1
    (:func:`adding_baseline`), which scores 0.0784 on the metric.

    Args:
      seq_len: ``T >= 2``.

    Returns:
      A :class:`Task` with ``input_size=2``, ``output_size=1``, ``seq_len=T``;
      ``targets`` of shape ``[B]`` float32.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxrnn import tasks
      >>> task = tasks.adding(100)
      >>> batch = task.sample(jax.random.key(0), 8)
      >>> batch.xs.shape, batch.xs.dtype, batch.targets.dtype
      ((8, 100, 2), dtype('float32'), dtype('float32'))
      >>> [int(n) for n in batch.xs[:, :, 1].sum(axis=1)]
      [2, 2, 2, 2, 2, 2, 2, 2]

    References:
      Arjovsky, Shah & Bengio 2016, "Unitary evolution recurrent neural
      networks", Section 4.2.
    """
    T = _check_seq_len(seq_len, 2, "one marker in each half of the sequence")
    half = T // 2

    def generate(key: PRNGKey, batch_size: int, split: str) -> Batch:
        k_values, k_marks = jax.random.split(key)
        values = jax.random.uniform(k_values, (batch_size, T), jnp.float32)
        first, second = _randint_columns(k_marks, batch_size, [(0, half), (half, T)]).T
        t = jnp.arange(T, dtype=jnp.int32)[None, :]
        markers = ((t == first[:, None]) | (t == second[:, None])).astype(jnp.float32)
        targets = jnp.sum(values * markers, axis=1)
        return Batch(
            jnp.stack([values, markers], axis=-1), targets, jnp.full((batch_size,), T, jnp.int32)
        )

    loss, metric = _end_regression(1)
    return _task("adding", 2, 1, T, generate, loss, metric, "correct", 1 / 6)


def adding_hs97_baseline(seq_len: int) -> float:
    """MSE of the best constant predictor on :func:`adding_hs97`, exactly.

    With ``m = seq_len//2 - 1``, the first mark ``i1`` is uniform on the
    first 10 pairs and the second ``i2`` uniform on the ``m`` other pairs of
    ``[0, m]``, so ``P(i1 = 0) = 1/10`` and ``P(i2 = 0) = (9/10)/m``. A marked
    first pair has value 0, every other value is U[-1, 1] (variance 1/3) and
    independent of the marks, so the two marked values ``X1, X2`` have mean 0,
    are uncorrelated, and ``Var X_k = (1/3) P(i_k ≠ 0)``. The best constant
    is the target's mean 0.5 and its MSE is the target's variance::

      Var(0.5 + (X1 + X2)/4) = (1/16)(1/3)(9/10 + 1 - (9/10)/m)
                             = (19/10 - (9/10)/m) / 48

    which is 0.039201 for ``seq_len=100`` (m = 49), not the 1/24 of two
    unconstrained U[-1, 1] values: zeroing a marked first pair removes
    variance. (The same predictor is "correct", ``|error| < 0.04``, on a
    fraction ``0.1536 (9/10 - (9/10)/m) + 0.16 (1/10 + (9/10)/m)`` of the
    sequences: 0.1544 for ``seq_len=100``.)

    Args:
      seq_len: the minimal length ``T >= 20`` of :func:`adding_hs97`.

    Returns:
      The baseline MSE as a float.

    Example:
      >>> from jaxrnn import tasks
      >>> round(tasks.adding_hs97_baseline(100), 6), round(1 / 24, 6)
      (0.039201, 0.041667)
    """
    T = _check_seq_len(seq_len, 20, "the second mark is among the first T//2 - 1 unmarked pairs")
    m = T // 2 - 1
    return (1.9 - 0.9 / m) / 48.0


def adding_hs97(seq_len: int) -> Task:
    """The adding problem of Hochreiter & Schmidhuber 1997 (Experiment 4).

    Each step is a pair (value, marker). For each sequence, with ``T =
    seq_len``:

    * its length is uniform in ``[T, T + T//10]`` (so batches are
      variable-length, right-padded with zero pairs to ``T + T//10``);
    * values are i.i.d. U[-1, 1];
    * the first mark ``i1`` is uniform among the first 10 pairs; the second
      mark ``i2`` is uniform among the first ``T//2 - 1`` pairs still
      unmarked, i.e. on ``[0, T//2 - 1]`` without ``i1``, so the minimal lag
      to the end is ``T//2``; marked pairs carry marker 1;
    * every unmarked pair carries marker 0 except the first and the last
      (step ``length - 1``), which carry -1;
    * if the first pair is marked, its value is 0 ("we set X1 to zero"). The
      paper states this for the first mark (probability 1/10); the second mark
      lands on the first pair with probability ``(9/10)/(T//2 - 1)``, a case
      the paper leaves open, and we zero it too, so the value of a marked
      first pair is always 0 and the target is always a function of ``xs``.

    The target, read at the last valid step, is ``0.5 + (X1 + X2)/4`` where
    ``X1, X2`` are the marked values. Loss: MSE at the last valid step.
    Metric: the fraction of sequences with ``|error| < 0.04`` (the paper's
    criterion). Baseline: :func:`adding_hs97_baseline` (≈ 0.0392 for
    ``T=100``, below the paper's 1/24 because of the zeroed first pair).

    Args:
      seq_len: the minimal length ``T >= 20`` (so the first 10 pairs lie in
        ``[0, T//2 - 1]``).

    Returns:
      A :class:`Task` with ``input_size=2`` (value, marker), ``output_size=1``,
      ``seq_len=T + T//10``; ``targets`` of shape ``[B]`` float32 and
      ``lengths`` in ``[T, T + T//10]``.

    Example:
      >>> import jax
      >>> from jaxrnn import tasks
      >>> task = tasks.adding_hs97(100)
      >>> batch = task.sample(jax.random.key(0), 512)
      >>> task.seq_len, bool((batch.lengths >= 100).all() and (batch.lengths <= 110).all())
      (110, True)
      >>> [int(n) for n in (batch.xs[:, :, 1] == 1).sum(axis=1)[:4]]
      [2, 2, 2, 2]

    References:
      Hochreiter & Schmidhuber 1997, "Long short-term memory", Section 5.4.
    """
    T = _check_seq_len(seq_len, 20, "the second mark is among the first T//2 - 1 unmarked pairs")
    T_max = T + T // 10
    m = T // 2 - 1

    def generate(key: PRNGKey, batch_size: int, split: str) -> Batch:
        k_values, k_ints = jax.random.split(key)
        values = jax.random.uniform(k_values, (batch_size, T_max), jnp.float32, -1.0, 1.0)
        ranges = [(T, T_max + 1), (0, 10), (0, m)]
        lengths, first, j = _randint_columns(k_ints, batch_size, ranges).T
        second = j + (j >= first).astype(jnp.int32)  # uniform on [0, m] without `first`
        t = jnp.arange(T_max, dtype=jnp.int32)[None, :]
        marked = (t == first[:, None]) | (t == second[:, None])
        valid = length_mask(lengths, T_max, time_major=False)
        ends = (t == 0) | (t == lengths[:, None] - 1)
        markers = jnp.where(marked, 1.0, jnp.where(ends & valid, -1.0, 0.0)).astype(jnp.float32)
        values = jnp.where((marked & (t == 0)) | ~valid, 0.0, values).astype(jnp.float32)
        targets = 0.5 + jnp.sum(jnp.where(marked, values, 0.0), axis=1) / 4
        return Batch(jnp.stack([values, markers], axis=-1), targets.astype(jnp.float32), lengths)

    loss, metric = _end_regression(1)
    baseline = adding_hs97_baseline(T)
    return _task("adding-hs97", 2, 1, T_max, generate, loss, metric, "correct", baseline)


# --------------------------------------------------------------------------- copy memory


def copy_baseline(seq_len: int) -> float:
    """Cross-entropy of the memoryless predictor on :func:`copy_memory`: ``10 ln 8 / (T + 20)``.

    The predictor outputs the blank with certainty for the first ``T + 10``
    steps (cost 0) and a uniform guess over the 8 data symbols for the last 10
    (cost ln 8 each); averaged over the ``T + 20`` steps.

    Args:
      seq_len: ``T >= 1``, the delay of the copy task.

    Returns:
      The baseline in nats per step.

    Example:
      >>> from jaxrnn import tasks
      >>> [round(tasks.copy_baseline(T), 4) for T in (100, 200, 300, 500, 1000)]
      [0.1733, 0.0945, 0.065, 0.04, 0.0204]
    """
    T = _check_seq_len(seq_len, 1, "T - 1 blanks follow the data")
    return 10 * math.log(8) / (T + 20)


def copy_memory(seq_len: int) -> Task:
    """The copy memory task of Arjovsky et al. 2016.

    Ten symbols, one-hot: 0 blank, 1..8 data, 9 delimiter. With ``T =
    seq_len``, the input (length ``T + 20``) is 10 data symbols i.i.d.
    uniform on 1..8, then ``T - 1`` blanks, the delimiter, and 10 blanks; the
    target is ``T + 10`` blanks, then the 10 data symbols::

      xs:      d1 … d10  0 … 0  9  0 … 0
      targets: 0 …                0  d1 … d10

    Loss: mean cross-entropy over all ``T + 20`` steps. Metric: accuracy on
    the 10 recalled data symbols (the last 10 steps). Baseline:
    :func:`copy_baseline`.

    Args:
      seq_len: ``T >= 1``.

    Returns:
      A :class:`Task` with ``input_size=10``, ``output_size=10``,
      ``seq_len=T + 20``; ``targets`` of shape ``[B, T + 20]`` int32.

    Example:
      >>> import jax
      >>> from jaxrnn import tasks
      >>> task = tasks.copy_memory(5)
      >>> batch = task.sample(jax.random.key(0), 2)
      >>> batch.xs.shape, batch.targets.shape
      ((2, 25, 10), (2, 25))
      >>> bool((batch.targets[:, -10:] == batch.xs[:, :10].argmax(-1)).all())
      True

    References:
      Arjovsky, Shah & Bengio 2016, "Unitary evolution recurrent neural
      networks", Section 4.1.
    """
    T = _check_seq_len(seq_len, 1, "T - 1 blanks follow the data")
    length = T + 20

    def generate(key: PRNGKey, batch_size: int, split: str) -> Batch:
        data = jax.random.randint(key, (batch_size, 10), 1, 9, jnp.int32)
        blanks = functools.partial(jnp.zeros, dtype=jnp.int32)
        symbols = jnp.concatenate(
            [
                data,
                blanks((batch_size, T - 1)),
                jnp.full((batch_size, 1), 9, jnp.int32),
                blanks((batch_size, 10)),
            ],
            axis=1,
        )
        targets = jnp.concatenate([blanks((batch_size, T + 10)), data], axis=1)
        xs = jax.nn.one_hot(symbols, 10, dtype=jnp.float32)
        return Batch(xs, targets, jnp.full((batch_size,), length, jnp.int32))

    def metric(outputs: Array, batch: Batch) -> Array:
        outputs = _check_outputs(outputs, batch, 10)
        recalled = jnp.argmax(outputs[:, -10:], axis=-1)
        return jnp.mean((recalled == batch.targets[:, -10:]).astype(jnp.float32))

    return _task(
        "copy",
        10,
        10,
        length,
        generate,
        _every_step_loss(10),
        metric,
        "accuracy",  # on the 10 recalled symbols
        copy_baseline(T),
    )


# --------------------------------------------------------------------------- temporal order

_SYMBOLS = "abcdXYBE"  # one-hot channels of temporal_order
_X, _B, _E = 4, 6, 7


def temporal_order(seq_len: int, variant: str = "pascanu") -> Task:
    """The temporal order problem: classify the order of two widely separated symbols.

    Inputs are one-hot over the 8 symbols ``a, b, c, d, X, Y, B, E`` (channels
    0..7). Two positions hold X or Y, every other one of a..d uniformly; the
    class, read at the last valid step, is ``XX, XY, YX, YY`` = 0, 1, 2, 3
    (``2·[first is Y] + [second is Y]``).

    * ``variant="pascanu"`` (Pascanu et al. 2013): fixed length ``L =
      seq_len``, ``p0`` uniform in ``[L//10, 2·(L//10))`` and ``p1`` uniform
      in ``[L//2, L//2 + L//10)`` — their ``[L/10, 2L/10)`` and ``[5L/10,
      6L/10)`` exactly as their code draws them (the same ranges when 10
      divides L). As in their code there are no start/end symbols: channels
      B and E stay zero.
    * ``variant="hochreiter"`` (Hochreiter & Schmidhuber 1997, Experiment
      6a): the sequence starts with E and ends with B (the trigger); its
      length is uniform in ``[L, L + L//10]``, ``t1`` uniform in ``[L//10,
      L//5]`` and ``t2`` in ``[L//2, 3L//5]`` (0-based, E at index 0). With
      ``seq_len=100`` this is the paper's task exactly: length in [100, 110],
      t1 in [10, 20], t2 in [50, 60]; other ``seq_len`` scale it. Batches are
      right-padded with zero vectors to ``L + L//10``.

    Loss: cross-entropy of the logits at the last valid step. Metric:
    accuracy. Baseline: ln 4 (the classes are equally likely).

    Args:
      seq_len: ``L >= 10``.
      variant: ``"pascanu"`` or ``"hochreiter"``.

    Returns:
      A :class:`Task` with ``input_size=8``, ``output_size=4``, ``seq_len`` ``L``
      (pascanu) or ``L + L//10`` (hochreiter); ``targets`` of shape ``[B]`` int32.

    Example:
      >>> import jax
      >>> from jaxrnn import tasks
      >>> task = tasks.temporal_order(100, variant="hochreiter")
      >>> batch = task.sample(jax.random.key(0), 4)
      >>> task.seq_len, batch.xs.shape, batch.targets.dtype
      (110, (4, 110, 8), dtype('int32'))
      >>> bool((batch.xs[:, 0, 7] == 1).all())  # every sequence starts with E
      True

    References:
      Hochreiter & Schmidhuber 1997, "Long short-term memory", Section 5.6.
      Pascanu, Mikolov & Bengio 2013, "On the difficulty of training recurrent
      neural networks", Section 4.1.
    """
    if variant not in ("pascanu", "hochreiter"):
        raise ValueError(f"variant: expected 'pascanu' or 'hochreiter', got {variant!r}")
    L = _check_seq_len(seq_len, 10, "the first relevant symbol is at position L//10 >= 1")
    if variant == "pascanu":
        T_max = L
        extra = [(L, L + 1), (L // 10, 2 * (L // 10)), (L // 2, L // 2 + L // 10), (0, 2), (0, 2)]
    else:
        T_max = L + L // 10
        extra = [(L, T_max + 1), (L // 10, L // 5 + 1), (L // 2, 3 * L // 5 + 1), (0, 2), (0, 2)]

    def generate(key: PRNGKey, batch_size: int, split: str) -> Batch:
        # Columns: T_max symbols of a..d, then length, p0, p1, and X or Y at p0 and at p1.
        ints = _randint_columns(key, batch_size, [(0, 4)] * T_max + extra)
        symbols, which = ints[:, :T_max], ints[:, -2:]  # which: 0 for X, 1 for Y
        lengths, p0, p1 = ints[:, T_max:-2].T
        t = jnp.arange(T_max, dtype=jnp.int32)[None, :]
        if variant == "hochreiter":
            symbols = jnp.where(t == 0, _E, jnp.where(t == lengths[:, None] - 1, _B, symbols))
        symbols = jnp.where(t == p0[:, None], _X + which[:, :1], symbols)
        symbols = jnp.where(t == p1[:, None], _X + which[:, 1:], symbols)
        valid = length_mask(lengths, T_max, time_major=False)
        symbols = jnp.where(valid, symbols, -1)  # -1: an all-zero vector
        xs = jax.nn.one_hot(symbols, 8, dtype=jnp.float32)
        return Batch(xs, 2 * which[:, 0] + which[:, 1], lengths)

    loss, metric = _end_classification(4)
    return _task("temporal-order", 8, 4, T_max, generate, loss, metric, "accuracy", math.log(4))


# --------------------------------------------------------------------------- text

_UNKNOWN = "\ufffd"
_VOCAB = "\n" + "".join(chr(c) for c in range(32, 127)) + _UNKNOWN
_TRAIN_FRACTION = 0.9


def _read_topics() -> str:
    try:
        from pydoc_data.topics import topics
    except ImportError as e:
        raise ModuleNotFoundError(
            "text: needs pydoc_data.topics, the help texts that ship with CPython's standard "
            "library, and this Python has none (some distributions split it out: install the "
            "full standard library, e.g. the distribution's python3 doc or full package)"
        ) from e
    return "\n".join(topics[name] for name in sorted(topics))


@functools.cache
def text_corpus() -> str:
    """The English text of CPython's bundled help topics, ``pydoc_data.topics``.

    The help texts of ``help("keywords")`` and friends, joined in sorted order
    of their names with a newline between them: about 465k characters with
    Python 3.11, no download needed. The text (and so the numbers of
    :func:`text`) depends on the Python version.

    Returns:
      The corpus as one string.

    Raises:
      ModuleNotFoundError: when this Python build lacks ``pydoc_data``.

    Example:
      >>> from jaxrnn import tasks
      >>> corpus = tasks.text_corpus()
      >>> len(corpus) > 100_000, corpus[:22]
      (True, 'The "assert" statement')
    """
    return _read_topics()


def text_vocab() -> str:
    r"""The character vocabulary of :func:`text`: character ``i`` is symbol ``i``.

    Newline, then printable ASCII (space to ``~``), then ``"\ufffd"``, which
    stands for every other character (0.12% of the corpus with Python 3.11:
    typographic quotes and dashes). ``V = 97``, the same for every Python.

    Returns:
      The ``V``-character string.

    Example:
      >>> from jaxrnn import tasks
      >>> vocab = tasks.text_vocab()
      >>> len(vocab), vocab[:3], vocab.index("a")
      (97, '\n !', 66)
    """
    return _VOCAB


@functools.cache
def _code_table() -> np.ndarray:
    table = np.full(128, len(_VOCAB) - 1, np.int32)
    for i, ch in enumerate(_VOCAB[:-1]):
        table[ord(ch)] = i
    return table


def encode(text: str) -> np.ndarray:
    r"""Characters to symbols of :func:`text_vocab`; characters outside it become ``"\ufffd"``.

    Args:
      text: any string.

    Returns:
      ``[len(text)]`` int32 symbols.

    Example:
      >>> from jaxrnn import tasks
      >>> tasks.encode("def f():")
      array([69, 70, 71,  1, 71,  9, 10, 27], dtype=int32)
      >>> tasks.decode(tasks.encode("naïve")) == "na\ufffdve"
      True
    """
    if not isinstance(text, str):
        raise TypeError(f"text: expected a str, got {type(text).__name__}")
    points = np.frombuffer(text.encode("utf-32-le"), np.uint32)
    unknown = np.int32(len(_VOCAB) - 1)
    return np.where(points < 128, _code_table()[np.minimum(points, 127)], unknown).astype(np.int32)


def decode(ids: Array | np.ndarray) -> str:
    r"""Symbols of :func:`text_vocab` back to text: the inverse of :func:`encode` on the vocabulary.

    Args:
      ids: ``[N]`` integer symbols in ``[0, V)``, e.g. ``outputs[b].argmax(-1)``.
        For a batch ``[B, N]`` use ``[decode(row) for row in ids]``.

    Returns:
      The string of ``N`` characters.

    Example:
      >>> from jaxrnn import tasks
      >>> tasks.decode(tasks.encode("print('hi')\n"))
      "print('hi')\n"
    """
    ids = np.asarray(ids)
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"ids: expected a 1-d integer array, got shape {ids.shape} of {ids.dtype}")
    if ids.size and (ids.min() < 0 or ids.max() >= len(_VOCAB)):
        raise ValueError(
            f"ids: expected symbols in [0, {len(_VOCAB)}), got values in [{ids.min()}, {ids.max()}]"
        )
    return "".join(_VOCAB[i] for i in ids.tolist())


class _TextData(NamedTuple):
    codes: np.ndarray  # [N] uint8 symbols of the whole corpus
    num_train: int  # the train split is codes[:num_train], the eval split the rest
    entropy: float  # unigram entropy of the train split, nats


@functools.cache
def _text_data() -> _TextData:
    codes = encode(text_corpus()).astype(np.uint8)
    num_train = int(len(codes) * _TRAIN_FRACTION)
    counts = np.bincount(codes[:num_train], minlength=len(_VOCAB)).astype(np.float64)
    p = counts[counts > 0] / num_train
    return _TextData(codes, num_train, float(-np.sum(p * np.log(p))))


def text(seq_len: int) -> Task:
    """Character-level language modelling on :func:`text_corpus`.

    The corpus is encoded with :func:`text_vocab` (``V = 97``) and split by
    position: the first 90% is ``"train"``, the last 10% ``"eval"``.
    ``sample(key, B, split)`` draws ``B`` windows of ``T + 1`` characters at
    uniform positions of the split; ``xs`` is the one-hot of the first ``T``,
    ``targets`` the next character at every step. The eval split holds about
    46k characters: an eval batch of a longer ``T`` holds windows of the whole
    split less one character, right-padded to ``T`` (``lengths`` says so).

    Loss: mean cross-entropy in nats per character (bits per character =
    loss / ln 2). Metric: next-character accuracy. Baseline: the entropy of
    the character unigram distribution of the train split, the loss of the
    best predictor that ignores the past (≈ 3.25 nats, 4.69 bits, with Python 3.11).

    Args:
      seq_len: ``T``, from 1 to the size of the train split minus 1 (about 418k).

    Returns:
      A :class:`Task` with ``input_size=output_size=V``, ``seq_len=T``;
      ``targets`` of shape ``[B, T]`` int32.

    Raises:
      ModuleNotFoundError: when this Python build lacks ``pydoc_data``.

    Example:
      >>> import jax
      >>> from jaxrnn import tasks
      >>> task = tasks.text(32)
      >>> batch = task.sample(jax.random.key(0), 4, "eval")
      >>> batch.xs.shape, batch.targets.shape
      ((4, 32, 97), (4, 32))
      >>> tasks.decode(batch.xs[0, 1:].argmax(-1)) == tasks.decode(batch.targets[0, :-1])
      True
    """
    T = check_positive_int(seq_len, "seq_len")
    data = _text_data()
    splits = {"train": (0, data.num_train), "eval": (data.num_train, len(data.codes))}
    if data.num_train <= T:
        raise ValueError(
            f"seq_len: expected at most {data.num_train - 1} (windows of seq_len + 1 characters "
            f"must fit in the train split of {data.num_train} characters), got {T}"
        )
    codes = jnp.asarray(data.codes)
    V = len(_VOCAB)

    def generate(key: PRNGKey, batch_size: int, split: str) -> Batch:
        start, stop = splits[split]
        length = min(T, stop - start - 1)  # eval windows longer than the split are padded
        first = jax.random.randint(key, (batch_size,), start, stop - length, jnp.int32)
        window = codes[first[:, None] + jnp.arange(length + 1, dtype=jnp.int32)[None, :]]
        window = jnp.pad(window.astype(jnp.int32), ((0, 0), (0, T - length)))
        xs = jax.nn.one_hot(window[:, :-1], V, dtype=jnp.float32)
        xs = jnp.where(jnp.arange(T)[None, :, None] < length, xs, 0)
        return Batch(xs, window[:, 1:], jnp.full((batch_size,), length, jnp.int32))

    return _task(
        "text",
        V,
        V,
        T,
        generate,
        _every_step_loss(V),
        _every_step_accuracy(V),
        "accuracy",
        data.entropy,
        fold_split=False,
        step_loss=_classes_step_loss,
    )


# --------------------------------------------------------------------------- your own data


def from_arrays(
    xs: Array | np.ndarray,
    targets: Array | np.ndarray,
    lengths: Array | np.ndarray | None = None,
    *,
    eval_data: tuple[Any, ...] | Batch | None = None,
    eval_fraction: float = 0.1,
    name: str = "data",
) -> Task:
    """A :class:`Task` over your own sequences, with the loss their targets call for.

    The kind of target decides the loss, the metric and the output size:

    * float ``[N]`` or ``[N, O]``: regression of the output at each sequence's
      last valid step; MSE; metric ``r2`` = 1 − MSE / baseline;
    * integer ``[N]``: classification at the last valid step into
      ``C = max + 1`` classes; cross-entropy; metric ``accuracy``;
    * integer ``[N, T]``: a class at every valid step (sequence labelling,
      language modelling); cross-entropy over the valid steps; ``accuracy``.

    ``sample(key, B, split)`` draws ``B`` sequences of the split (without
    replacement when the split has at least ``B``). The eval split is
    ``eval_data`` if given, else a fixed random ``eval_fraction`` of the rows,
    held out from training. ``baseline`` is the eval-split loss of the best
    memoryless predictor fitted on the train split: the train mean
    (regression) or the train class frequencies, add-one smoothed
    (classification).

    Args:
      xs: ``[N, T, I]`` float inputs, batch-major, right-padded.
      targets: as above.
      lengths: ``[N]`` integers in ``[1, T]``; default ``T`` for all.
      eval_data: ``(xs, targets[, lengths])`` or a :class:`Batch` held out.
      eval_fraction: in (0, 1), used when ``eval_data`` is None.
      name: the task's name (in logs and summaries).

    Returns:
      The :class:`Task`.

    Example:
      >>> import jax, numpy as np
      >>> from jaxrnn import tasks
      >>> xs = np.random.default_rng(0).normal(size=(100, 12, 3)).astype(np.float32)
      >>> task = tasks.from_arrays(xs, (xs[:, :, 0].sum(1) > 0).astype(np.int32))
      >>> task.output_size, task.metric_name, task.seq_len, task.input_size
      (2, 'accuracy', 12, 3)
      >>> task.sample(jax.random.key(0), 8, "eval").xs.shape  # from the 10 held-out rows
      (8, 12, 3)
    """
    train = _check_arrays("", xs, targets, lengths)
    if eval_data is not None:
        if not isinstance(eval_data, tuple | list) or len(eval_data) not in (2, 3):
            raise TypeError(
                "eval_data: expected (xs, targets[, lengths]) or a Batch, got "
                f"{type(eval_data).__name__}"
            )
        held = _check_arrays("eval_data.", *eval_data)
        if held.xs.shape[1:] != train.xs.shape[1:] or held.targets.ndim != train.targets.ndim:
            raise ValueError(
                f"eval_data: expected xs [M, {', '.join(map(str, train.xs.shape[1:]))}] and "
                f"targets of rank {train.targets.ndim} like the training data, got xs "
                f"{held.xs.shape} and targets {held.targets.shape}"
            )
    else:
        if not 0 < eval_fraction < 1:
            raise ValueError(f"eval_fraction: expected a number in (0, 1), got {eval_fraction!r}")
        n = train.xs.shape[0]
        count = round(n * eval_fraction)
        if not 1 <= count < n:
            raise ValueError(
                f"xs: {n} sequences are too few to hold out eval_fraction={eval_fraction} of "
                "them; pass eval_data"
            )
        order = np.random.default_rng(0).permutation(n)
        held = Batch(*(None if a is None else a[order[:count]] for a in train))
        train = Batch(*(None if a is None else a[order[count:]] for a in train))
    classify = np.issubdtype(train.targets.dtype, np.integer)
    per_step = classify and train.targets.ndim == 2
    if classify:
        for part, where in ((train, "targets"), (held, "eval_data.targets")):
            low, high = int(part.targets.min()), int(part.targets.max())
            if low < 0 or high >= _MAX_CLASSES:
                raise ValueError(
                    f"{where}: expected class indices in [0, 2**24), got [{low}, {high}] (the "
                    "number of classes is the largest index + 1)"
                )
        size = int(max(train.targets.max(), held.targets.max())) + 1
    else:
        size = 1 if train.targets.ndim == 1 else train.targets.shape[1]
    baseline = _memoryless_loss(train, held, size, classify, per_step)
    splits = {"train": jax.device_put(train), "eval": jax.device_put(held)}

    def generate(key: PRNGKey, batch_size: int, split: str) -> Batch:
        data = splits[split]
        n = data.xs.shape[0]
        rows = jax.random.choice(key, n, (batch_size,), replace=batch_size > n)
        return Batch(data.xs[rows], data.targets[rows], data.lengths[rows])

    if per_step:
        loss, metric = _every_step_loss(size), _every_step_accuracy(size)
    elif classify:
        loss, metric = _end_classification(size)
    else:

        def loss(outputs: Array, batch: Batch) -> Array:
            pred = _at_end(_check_outputs(outputs, batch, size), batch.lengths)
            return jnp.mean((pred - batch.targets.reshape(pred.shape)) ** 2)

        def metric(outputs: Array, batch: Batch) -> Array:
            return 1 - loss(outputs, batch) / baseline

    return _task(
        name,
        train.xs.shape[2],
        size,
        train.xs.shape[1],
        generate,
        loss,
        metric,
        "accuracy" if classify else "r2",
        baseline,
        step_loss=_classes_step_loss if per_step else None,
    )


_MAX_CLASSES = 2**24


def _check_arrays(prefix: str, xs: Any, targets: Any, lengths: Any = None) -> Batch:
    """The arrays of :func:`from_arrays` as NumPy arrays, checked; ``lengths`` filled in."""
    xs, targets = np.asarray(xs), np.asarray(targets)
    if xs.ndim != 3 or not np.issubdtype(xs.dtype, np.floating) or 0 in xs.shape:
        raise ValueError(
            f"{prefix}xs: expected a non-empty float array [N, T, I], got {xs.dtype} {xs.shape}"
        )
    n, t = xs.shape[:2]
    integer = np.issubdtype(targets.dtype, np.integer)
    outputs = targets.shape[-1] if targets.ndim == 2 and targets.shape[-1] > 0 else -1
    allowed = ((n,), (n, t)) if integer else ((n,), (n, outputs))
    if targets.shape not in allowed or not (integer or np.issubdtype(targets.dtype, np.floating)):
        kinds = "float [N] or [N, O], or integer [N] or [N, T]"
        raise ValueError(
            f"{prefix}targets: expected {kinds} with N={n}, T={t}, got {targets.dtype} "
            f"{targets.shape}"
        )
    if lengths is None:
        lengths = np.full((n,), t, np.int32)
    lengths = np.asarray(lengths)
    if lengths.shape != (n,) or not np.issubdtype(lengths.dtype, np.integer):
        raise ValueError(f"{prefix}lengths: expected integers of shape ({n},), got {lengths.shape}")
    if n and not (lengths.min() >= 1 and lengths.max() <= t):
        raise ValueError(
            f"{prefix}lengths: expected values in [1, T={t}], got [{lengths.min()}, "
            f"{lengths.max()}]"
        )
    for name, array in (("xs", xs), ("targets", targets)):
        if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
            raise ValueError(f"{prefix}{name}: expected finite values, got NaN or Inf")
    targets = targets.astype(np.int32 if integer else np.float32)
    return Batch(xs.astype(np.float32), targets, lengths.astype(np.int32))


def _memoryless_loss(train: Batch, held: Batch, size: int, classify: bool, per_step: bool) -> float:
    """The eval loss of the best input-free predictor fitted on the train split."""
    if not classify:
        mean = train.targets.reshape(len(train.targets), -1).mean(axis=0)
        errors = held.targets.reshape(len(held.targets), -1) - mean
        return float(np.mean(errors.astype(np.float64) ** 2))

    def labels(part: Batch) -> np.ndarray:
        if not per_step:
            return np.asarray(part.targets)
        valid = np.arange(part.xs.shape[1])[None, :] < np.asarray(part.lengths)[:, None]
        return np.asarray(part.targets)[valid]

    counts = np.bincount(labels(train), minlength=size) + 1.0
    log_p = np.log(counts / counts.sum())
    return float(-np.mean(log_p[labels(held)]))


# --------------------------------------------------------------------------- registry

_FACTORIES: dict[str, Callable[..., Task]] = {
    "adding": adding,
    "adding-hs97": adding_hs97,
    "copy": copy_memory,
    "temporal-order": temporal_order,
    "text": text,
}


def get(name: str, seq_len: int, **kwargs: object) -> Task:
    """The task called ``name`` (one of :data:`NAMES`) at length ``seq_len``.

    Args:
      name: ``"adding"``, ``"adding-hs97"``, ``"copy"``, ``"temporal-order"``
        or ``"text"``.
      seq_len: passed to the task's factory (see each factory for what it means).
      **kwargs: passed to the factory, e.g. ``variant="hochreiter"`` for
        ``"temporal-order"``.

    Returns:
      The :class:`Task`.

    Example:
      >>> from jaxrnn import tasks
      >>> task = tasks.get("copy", 100)
      >>> task.name, task.seq_len, round(task.baseline, 4)
      ('copy', 120, 0.1733)
    """
    if name not in _FACTORIES:
        raise ValueError(f"name: expected one of {NAMES}, got {name!r}")
    return _FACTORIES[name](seq_len, **kwargs)

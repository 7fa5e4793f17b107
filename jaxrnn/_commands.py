"""What the ``jaxrnn`` commands do: ``showcase``, ``train``, ``plot`` and ``sample``.

:mod:`jaxrnn._cli` parses the command line without importing JAX and calls
these; ``demo`` and ``gradients`` live in :mod:`jaxrnn._demo`.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import math
import os
import statistics
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxrnn
from jaxrnn import _demo, checkpoint, runlog, tasks, training

# --cell NAME -> (hidden, seq_len, init) -> the cell; what a name sets overrides the --init preset.
CELLS: dict[str, Callable[[int, int, Any], jaxrnn.Cell]] = {
    "elman": lambda hidden, seq_len, init: jaxrnn.elman(hidden, init=init),
    "irnn": lambda hidden, seq_len, init: jaxrnn.elman(
        hidden, activation="relu", recurrent_init="identity", init=init
    ),
    "lstm": lambda hidden, seq_len, init: jaxrnn.lstm(hidden, forget_bias=1.0, init=init),
    "lstm-chrono": lambda hidden, seq_len, init: jaxrnn.lstm(hidden, chrono=seq_len, init=init),
    "gru": lambda hidden, seq_len, init: jaxrnn.gru(hidden, init=init),
    "layernorm-lstm": lambda hidden, seq_len, init: jaxrnn.layernorm_lstm(
        hidden, forget_bias=1.0, init=init
    ),
}


class Setup:
    """The task, cell, model and optimizer a ``train`` configuration describes."""

    def __init__(self, config: dict[str, Any], checkpoint: int | None = None) -> None:
        flags = argparse.Namespace(**config)
        if config.get("data") is not None:
            self.task = load_data(Path(flags.data))
        else:
            try:
                self.task = tasks.get(flags.task, flags.seq_len)
            except ValueError as e:
                raise ValueError(f"--seq-len: {e}") from None
        if flags.cell == "lstm-chrono" and self.task.seq_len < 2:
            raise ValueError(
                "--seq-len: lstm-chrono draws its forget-gate biases from log U(1, T - 1) and "
                f"needs T >= 2, got {self.task.seq_len}"
            )
        # --init is absent from the configs of runs made before the flag, and at its default.
        init = config.get("init", "pytorch")
        self.cell = CELLS[flags.cell](flags.hidden, self.task.seq_len, init)
        rate = config.get("recurrent_dropout", 0.0)  # absent from runs made before the flag
        cell = jaxrnn.recurrent_dropout(self.cell, rate) if rate else self.cell
        rnn = cell if flags.layers == 1 else jaxrnn.stack(cell, num_layers=flags.layers)
        options = {"truncate": flags.truncate, "checkpoint": checkpoint}
        compute_dtype = jnp.bfloat16 if flags.dtype == "bfloat16" else None
        self.model = training.readout(
            rnn, self.task.output_size, compute_dtype=compute_dtype, **options
        )
        self.tx = _demo.optimizer_from_flags(flags)


def load_data(path: Path) -> tasks.Task:
    """The task :func:`jaxrnn.tasks.from_arrays` makes of ``--data``'s arrays."""
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise ValueError(f"--data: cannot read {path} as an .npz of arrays: {e}") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ValueError(f"--data: {path} holds one array; expected an .npz (np.savez) of arrays")
    try:
        with data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError, EOFError) as e:
        raise ValueError(f"--data: cannot read {path} as an .npz of arrays: {e}") from None
    missing = {"xs", "targets"} - arrays.keys()
    if missing:
        raise ValueError(
            f"--data: {path} lacks {sorted(missing)} (it holds {sorted(arrays)}); expected xs, "
            "targets and optionally lengths, eval_xs, eval_targets, eval_lengths"
        )
    held = None
    given = {"eval_xs", "eval_targets", "eval_lengths"} & arrays.keys()
    if given:
        if not {"eval_xs", "eval_targets"} <= given:
            raise ValueError(
                f"--data: {path} holds {sorted(given)}; expected eval_xs and eval_targets "
                "together (and optionally eval_lengths)"
            )
        held = (arrays["eval_xs"], arrays["eval_targets"], arrays.get("eval_lengths"))
    try:
        return tasks.from_arrays(
            arrays["xs"], arrays["targets"], arrays.get("lengths"), eval_data=held, name=path.stem
        )
    except (ValueError, TypeError) as e:
        raise ValueError(f"--data: {path}: {e}") from None


def _time(fn: Callable[[], Any], repeats: int) -> tuple[float, float]:
    """(compile + first run, median of later runs) in milliseconds."""
    start = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - start
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        runs.append(time.perf_counter() - start)
    return 1e3 * first, 1e3 * statistics.median(runs)


def showcase(args: argparse.Namespace) -> int:
    """Run an Elman RNN, an LSTM, a GRU and a 2-layer bidirectional LSTM; print what they do."""
    t, b, i, h = args.seq_len, args.batch_size, args.input_size, args.hidden
    k_x, k_len, k_params = jax.random.split(jax.random.key(args.seed), 3)
    xs = jax.random.normal(k_x, (t, b, i))
    lengths = jax.random.randint(k_len, (b,), max(1, t // 2), t + 1)
    device = jax.devices()[0]
    print(f"jaxrnn {jaxrnn.__version__} on jax {jax.__version__}, {device.platform}: {device}")
    print(
        f"inputs xs: [T={t}, B={b}, I={i}], hidden size H={h}; lengths in [{max(1, t // 2)}, {t}]\n"
    )
    print("loss = mean over the batch of ‖y_T‖², read at each sequence's last valid step")
    print("‖∂L/∂x_1‖ / ‖∂L/∂x_T‖ is how much of the loss's gradient reaches the first input\n")

    models: list[tuple[str, jaxrnn.Stack]] = [
        ("Elman tanh + output layer", jaxrnn.stack(jaxrnn.elman(h, output_size=1))),
        ("LSTM, forget bias 1", jaxrnn.stack(jaxrnn.lstm(h, forget_bias=1.0))),
        ("GRU, chrono init", jaxrnn.stack(jaxrnn.gru(h, chrono=max(t, 2)))),
        (
            "2-layer bidirectional LSTM",
            jaxrnn.stack(jaxrnn.lstm(h), num_layers=2, bidirectional=True),
        ),
    ]
    header = (
        f"{'model':<28} {'params':>8} {'ys shape':>15} {'compile ms':>11} "
        f"{'fwd+bwd ms':>11} {'‖∇θ L‖':>9} {'‖∂L/∂x_1‖/‖∂L/∂x_T‖':>20}"
    )
    print(header)
    print("-" * len(header))
    ratios: dict[str, float] = {}
    for name, rnn in models:
        params = rnn.init(k_params, i)

        def loss(params: Any, xs: jax.Array, rnn: jaxrnn.Stack = rnn) -> jax.Array:
            _, ys = rnn.apply(params, xs, lengths=lengths)
            last = jaxrnn.last_valid(ys, lengths)
            return jnp.mean(jnp.sum(last**2, axis=-1))

        grad_fn = jax.jit(jax.grad(loss, argnums=(0, 1)))
        compile_ms, run_ms = _time(lambda: grad_fn(params, xs), args.repeats)  # noqa: B023
        d_params, d_xs = grad_fn(params, xs)
        last_dx = jaxrnn.last_valid(d_xs, lengths)
        ratio = float(jnp.linalg.norm(d_xs[0]) / jnp.linalg.norm(last_dx))
        ratios[name] = ratio
        n_params = sum(leaf.size for leaf in jax.tree.leaves(params))
        ys_shape = str(tuple(jax.eval_shape(rnn.apply, params, xs)[1].shape))
        print(
            f"{name:<28} {n_params:>8} {ys_shape:>15} {compile_ms:>11.0f} {run_ms:>11.2f} "
            f"{float(optax.tree.norm(d_params)):>9.3g} {ratio:>20.2e}"
        )
    elman_ratio, lstm_ratio = ratios[models[0][0]], ratios[models[1][0]]
    more = (
        f"{lstm_ratio / elman_ratio:.1e}x more"
        if elman_ratio > 0
        else "the RNN's share underflowed float32 to 0"
    )
    print(
        f"\nAcross about {t} steps the tanh RNN keeps {elman_ratio:.1e} of its gradient, the "
        f"LSTM {lstm_ratio:.1e}\n({more}): the vanishing gradient that gates were designed "
        "to fix."
    )
    return 0


def train(args: argparse.Namespace, config: dict[str, Any], run: runlog.RunDir | None) -> int:
    """``jaxrnn train``: one model on one task, in a run directory never overwritten.

    ``run`` is ``args.out`` already opened (locked and checked) by the command
    line; None with ``--distributed``: the processes join first, then process 0
    opens it and every process learns whether it could.
    """
    if args.distributed:
        _start_distributed(args)
        if jax.process_index() != 0:
            warnings.simplefilter("ignore")  # process 0 says what every process would say
    _check_devices(args.devices)
    if not args.distributed:
        return _train(args, config, run)
    _same_run_everywhere(config)
    with _open_run_on_process_0(args) as opened:
        return _train(args, config, opened)


def _same_run_everywhere(config: dict[str, Any]) -> None:
    """Raise on every process unless all were started with process 0's run flags.

    Each process contributes the SHA-256 of its run configuration (the flags
    that make the run, launch flags aside); all compare all, so that every
    process stops with the same one-line error instead of some waiting for
    the others inside a step whose shapes differ.
    """
    from jax.experimental import multihost_utils

    text = json.dumps(config, sort_keys=True).encode()
    digest = np.frombuffer(hashlib.sha256(text).digest(), np.uint8)
    every = np.asarray(multihost_utils.process_allgather(digest))
    others = [i for i in range(len(every)) if not np.array_equal(every[i], every[0])]
    if others:
        names = ", ".join(map(str, others))
        raise ValueError(
            f"--distributed: expected every process started with process 0's flags (only "
            f"--process-id differing), got other run flags on process(es) {names}"
        )


def _train(args: argparse.Namespace, config: dict[str, Any], run: runlog.RunDir | None) -> int:
    """``train`` once the processes have joined: ``run`` is None on all but process 0."""
    lead = jax.process_index() == 0
    setup = Setup(config, args.checkpoint_through_time)
    extra = _carry_grad_metric(setup.cell, setup.task) if args.carry_grads else None
    task = setup.task
    if lead:
        print(
            f"training {args.cell} (H={args.hidden}, {args.layers} layer(s)) on {task.name} "
            f"(T={task.seq_len}, baseline loss {task.baseline:.4g}) for {args.steps} steps -> "
            f"{args.out}"
        )
    result = training.fit(
        setup.model,
        task,
        setup.tx,
        steps=args.steps,
        batch_size=args.batch_size,
        key=jax.random.key(args.seed),
        out=run or args.out,
        resume=args.resume,
        overwrite=args.overwrite,
        eval_every=args.eval_every,
        log_every=args.log_every,
        checkpoint_every=args.checkpoint_every or args.eval_every or max(1, args.steps // 10),
        config=config,
        extra_metrics=extra,
        devices=args.devices,
        progress=lead and not args.quiet,
    )
    if not lead:
        return 0
    if args.carry_grads:
        _heatmap(result.history, args.out)
    s = result.summary
    metric = f"final_eval_{task.metric_name}"
    print(
        f"final eval loss {s['final_eval_loss']:.4g} (baseline {s['baseline']:.4g}), "
        f"{task.metric_name} {s[metric]:.3f}; {s['steps_this_run']} steps in "
        f"{s['wall_seconds']:.1f} s ({runlog.format_rate(s['steps_per_second'])} after the first); "
        f"{s['skipped_updates']} non-finite updates skipped. Wrote {args.out}/summary.json"
    )
    return 0


# JAX's own joining deadline comes this much after --distributed-timeout's, so that the
# one-line error of _start_distributed is what a late join ends with: at JAX's deadline the
# process is ended from C++ (SIGABRT and a stack trace), with no Python exception to catch.
_JOIN_MARGIN_SECONDS = 30


def _start_distributed(args: argparse.Namespace) -> None:
    """Join the multi-process run ``args`` describes, or exit 2 with one line.

    ``args.coordinator``, ``args.num_processes`` and ``args.process_id`` (each
    None where neither its flag nor its JAX_ variable was given) go to
    :func:`jax.distributed.initialize`, whose cluster detection (Slurm, Open
    MPI, Kubernetes, Cloud TPU) fills in those left None; that call returns
    once every process has connected. The CPU backend's cross-process
    collectives are turned on (gloo, the default of recent JAX versions)
    unless ``jax_cpu_collectives_implementation`` names one already: without
    them a CPU run of several processes cannot compute. The setting concerns
    only the CPU client, so GPU and TPU runs train as before.

    Raises:
      ValueError: JAX refused the settings, or found no cluster for the
        missing ones. A process still waiting after ``args.distributed_timeout``
        seconds prints one line and exits 2 from a timer thread, since JAX's
        own deadline ends the process from C++.
    """
    collectives = "jax_cpu_collectives_implementation"
    if getattr(jax.config, collectives) is None:  # "mpi", or gloo already: as chosen
        jax.config.update(collectives, "gloo")
    timeout = args.distributed_timeout
    deadline = threading.Timer(timeout, _join_timed_out, (args,))
    deadline.daemon = True
    deadline.start()
    try:
        jax.distributed.initialize(
            args.coordinator,
            args.num_processes,
            args.process_id,
            initialization_timeout=timeout + _JOIN_MARGIN_SECONDS,
        )
    except (ValueError, TypeError, RuntimeError) as e:
        raise ValueError(_join_error(args, e)) from None
    finally:
        deadline.cancel()


# The longest refusal of the run directory process 0 passes on to the others, in UTF-8 bytes.
_MESSAGE_BYTES = 2048


@contextlib.contextmanager
def _open_run_on_process_0(args: argparse.Namespace) -> Iterator[runlog.RunDir | None]:
    """Process 0 opens ``args.out``; every process raises its refusal, or goes on.

    A refused directory (a run there without ``--resume``, another run
    writing to it) would otherwise stop process 0 alone while the others wait
    for it in the first training step. Process 0's verdict, the refusal's text
    or nothing, is broadcast to every process, which raises the same
    :class:`~jaxrnn.runlog.RunDirError`. Yields the opened directory on
    process 0 (closed on exit), None on the others.
    """
    from jax.experimental import multihost_utils

    run, refusal = None, b""
    if jax.process_index() == 0:
        try:
            run = runlog.RunDir(args.out, resume=args.resume, overwrite=args.overwrite)
        except runlog.RunDirError as e:
            refusal = str(e).encode()[:_MESSAGE_BYTES]
    sent = np.zeros(_MESSAGE_BYTES, np.uint8)
    sent[: len(refusal)] = np.frombuffer(refusal, np.uint8)
    received = np.asarray(multihost_utils.broadcast_one_to_all(sent))
    text = received.tobytes().rstrip(b"\0").decode(errors="replace")
    if text:
        raise runlog.RunDirError(text)
    with run or contextlib.nullcontext():
        yield run


def _join_error(args: argparse.Namespace, error: Exception) -> str:
    """What went wrong calling ``jax.distributed.initialize``, in the command line's words."""
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    missing = args.launch_missing  # flags given neither as such nor by their variable
    if missing and isinstance(error, ValueError) and "defined" in first:
        listed = ", ".join(missing[:-1]) + (" and " if len(missing) > 1 else "") + missing[-1]
        return (
            f"--distributed: could not join a multi-process run: missing {listed}; expected "
            "them given, or a cluster JAX detects (Slurm, Open MPI, Kubernetes, Cloud TPU)"
        )
    return f"--distributed: could not join a multi-process run: {first}"


def _join_timed_out(args: argparse.Namespace) -> None:
    """Say that not every process joined in time, and end this process with status 2."""
    where = "the coordinator" if args.coordinator is None else f"the coordinator {args.coordinator}"
    count = "every process" if args.num_processes is None else f"all {args.num_processes} processes"
    print(
        f"jaxrnn train: error: --distributed-timeout: expected {count} to join {where} within "
        f"{args.distributed_timeout} s, got fewer; start the same command for every "
        "--process-id, or allow more time",
        file=sys.stderr,
        flush=True,
    )
    os._exit(2)  # the main thread waits inside JAX, where no exception reaches it


def _check_devices(devices: int | None) -> None:
    """Refuse a ``--devices`` beyond the devices there are, or leaving out a process.

    The mesh of ``--devices`` is the first ``devices`` of :func:`jax.devices`
    (every process's). In a multi-process run each process computes the
    training step on its devices of that mesh: a process with none there would
    have no part in it, and without ``--devices`` every process would train
    alone.
    """
    if devices is not None and devices > len(jax.devices()):
        raise ValueError(f"--devices: expected at most {len(jax.devices())}, got {devices}")
    count = jax.process_count()
    if count == 1:
        return
    every = jax.devices()
    firsts = [next(i for i, d in enumerate(every) if d.process_index == p) for p in range(count)]
    needed = max(firsts) + 1
    if devices is None or devices < needed:
        raise ValueError(
            f"--devices: expected at least {needed} in a run of {count} processes (a device "
            f"of each; all {len(every)} is usual), got {'none' if devices is None else devices}"
        )


def _heatmap(history: list[dict[str, Any]], out: Path) -> Path | None:
    """Write OUT/carry_grad_heatmap.png: ‖∂L/∂h_t‖ per step t across the evaluations."""
    rows = [line["carry_grad_norms"] for line in history if "carry_grad_norms" in line]
    if not rows:
        return None
    try:
        from jaxrnn import plots

        fig = plots.gradient_heatmap(
            rows, ylabel="evaluation", title="‖∂L/∂h_t‖ on a held-out batch during training"
        )
    except ImportError as e:
        print(f"no heatmap: {e}")
        return None
    path = out / "carry_grad_heatmap.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    print(f"wrote {path}")
    return path


def _carry_grad_metric(cell: jaxrnn.Cell, task: tasks.Task) -> Callable[..., dict[str, Any]]:
    """``extra_metrics`` for ``fit``: the batch mean of ‖∂L/∂h_t‖ for every step t."""
    norms = jax.jit(functools.partial(_demo.mean_carry_grad_norms, cell, task=task))

    return lambda params, batch: {"carry_grad_norms": norms(params=params, batch=batch).tolist()}


def plot(args: argparse.Namespace) -> int:
    """``jaxrnn plot RUN_DIR``: learning curves, gradient norms and the heatmap of a run."""
    from jaxrnn import plots

    run = _run_dir(args.run_dir)
    history = runlog.read_metrics(run)
    if not history:
        raise ValueError(f"RUN_DIR: no metric lines in {run / runlog.METRICS}")
    summary = _summary(run)
    out = args.out or run
    fig = plots.run_curves(history, baseline=summary.get("baseline"), title=f"{run.name}: training")
    path = out / "curves.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    print(f"wrote {path}")
    if not any(math.isfinite(line.get("loss", math.nan)) for line in history):
        print("note: no logged loss is finite: the run diverged (see 'skipped' in its metrics)")
    _heatmap(history, out)
    return 0


def _run_dir(path: Path) -> Path:
    if not path.is_dir():
        raise ValueError(f"RUN_DIR: {path} is not a directory")
    return path


def _newest_config(directory: Path) -> dict[str, Any]:
    """The ``train`` configuration in the newest checkpoint whose metadata reads."""
    import warnings

    found = checkpoint.checkpoints(directory)
    if not found:
        raise ValueError(f"RUN_DIR: no checkpoint in {directory}")
    for path in reversed(found):
        try:
            return dict(checkpoint.read_meta(path).get("config", {}))
        except checkpoint.CheckpointError as e:
            warnings.warn(f"skipping {e}", stacklevel=2)
    raise checkpoint.CheckpointError(f"RUN_DIR: no checkpoint in {directory} is intact")


def _summary(run: Path) -> dict[str, Any]:
    import json

    try:
        loaded = json.loads((run / runlog.SUMMARY).read_text())
    except (OSError, ValueError):  # a run still going, or stopped: no summary yet
        return {}
    return loaded if isinstance(loaded, dict) else {}


def sample(args: argparse.Namespace) -> int:
    """``jaxrnn sample RUN_DIR``: text from a character model trained by ``jaxrnn train``."""
    directory = _run_dir(args.run_dir) / runlog.CHECKPOINTS
    config = _newest_config(directory)
    if config.get("task") != "text":
        raise ValueError(
            f"RUN_DIR: sample needs a run of --task text, got a run of {config.get('task')!r}"
        )
    setup = Setup(config)
    tx = optax.apply_if_finite(setup.tx, max_consecutive_errors=2**31 - 1)

    def template() -> dict[str, Any]:
        params = setup.model.init(jax.random.key(0), setup.task.input_size)
        state = training.TrainState.create(params, tx)
        return {"state": state, "key": jax.random.key_data(jax.random.key(0))}

    tree, meta, used = checkpoint.restore_latest(directory, template())
    params = tree["state"].params
    text = training.sample_text(
        setup.model,
        params,
        args.prompt,
        args.length,
        jax.random.key(args.seed),
        temperature=args.temperature,
    )
    print(f"# {used.name} (step {meta['step']}), temperature {args.temperature}")
    print(text)
    return 0

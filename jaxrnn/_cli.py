"""The ``jaxrnn`` command line (``jaxrnn`` console script and ``python -m jaxrnn``)."""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import jax
import jax.numpy as jnp
import optax

import jaxrnn
from jaxrnn import _demo, checkpoint, tasks, training


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line: what is wrong and where to get help."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def _clip(text: str) -> float | None:
    if text.lower() in ("0", "none", "off"):
        return None
    try:
        return _positive_float(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected a positive threshold or 'none', got {text!r}"
        ) from None


CELLS: dict[str, Callable[[int, int], jaxrnn.Cell]] = {
    "elman": lambda hidden, seq_len: jaxrnn.elman(hidden),
    "irnn": lambda hidden, seq_len: jaxrnn.elman(
        hidden, activation="relu", recurrent_init="identity"
    ),
    "lstm": lambda hidden, seq_len: jaxrnn.lstm(hidden, forget_bias=1.0),
    "lstm-chrono": lambda hidden, seq_len: jaxrnn.lstm(hidden, chrono=seq_len),
    "gru": lambda hidden, seq_len: jaxrnn.gru(hidden),
}
CELL_HELP = (
    "elman: tanh Elman RNN; irnn: ReLU Elman with identity init (Le et al. 2015); "
    "lstm: LSTM with forget-gate bias 1; lstm-chrono: LSTM with chrono init "
    "(Tallec & Ollivier 2018); gru: GRU"
)


def _training_flags(parser: argparse.ArgumentParser, defaults: dict[str, Any]) -> None:
    """The flags ``train`` and ``demo`` share."""
    add = parser.add_argument
    add(
        "--seq-len", type=_positive_int, default=defaults["seq_len"], help="T (default %(default)s)"
    )
    add("--hidden", type=_positive_int, default=defaults["hidden"], help="H (default %(default)s)")
    add(
        "--steps",
        type=_positive_int,
        default=defaults["steps"],
        help="updates (default %(default)s)",
    )
    add(
        "--batch-size",
        type=_positive_int,
        default=defaults["batch_size"],
        help="(default %(default)s)",
    )
    add(
        "--lr",
        type=_positive_float,
        default=defaults["lr"],
        help="peak learning rate (default %(default)s)",
    )
    add(
        "--optimizer",
        choices=("adam", "rmsprop", "sgd"),
        default="adam",
        help="(default %(default)s)",
    )
    add(
        "--clip",
        type=_clip,
        default=1.0,
        help="clipping threshold, or 'none' (default %(default)s)",
    )
    add(
        "--clip-mode",
        choices=("norm", "value", "adaptive"),
        default="norm",
        help="norm: global norm (Pascanu et al.); value: element-wise; adaptive: AGC "
        "(default %(default)s)",
    )
    add("--schedule", choices=("constant", "cosine", "warmup-cosine"), default="constant")
    add("--seed", type=int, default=0, help="(default %(default)s)")
    add("--out", type=Path, default=defaults["out"], help="output directory (default %(default)s)")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="jaxrnn", description=jaxrnn.__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser(
        "demo",
        help="train a tanh RNN and an LSTM on the adding problem; compare losses and gradients",
        description=(
            "Train a tanh Elman RNN and an LSTM (forget bias 1) with the same optimizer on the "
            "adding problem (Arjovsky et al. 2016) at a length where the RNN fails; print a "
            "side-by-side table and write learning-curve and gradient-decay plots."
        ),
    )
    _training_flags(
        demo,
        {
            "seq_len": 100,
            "hidden": 64,
            "steps": 2000,
            "batch_size": 32,
            "lr": 3e-3,
            "out": Path("jaxrnn-demo"),
        },
    )

    train = commands.add_parser(
        "train",
        help="train a model on a task, with metrics, checkpoints and resumption",
        description="Train one model on one task; writes OUT/metrics.jsonl, OUT/summary.json "
        "and (with --checkpoint-every) atomic checkpoints under OUT/checkpoints.",
    )
    train.add_argument(
        "--task", choices=tasks.NAMES, default="adding", help="(default %(default)s)"
    )
    train.add_argument("--cell", choices=tuple(CELLS), default="lstm", help=CELL_HELP)
    train.add_argument("--layers", type=_positive_int, default=1, help="stacked layers (default 1)")
    _training_flags(
        train,
        {"seq_len": 100, "hidden": 128, "steps": 2000, "batch_size": 64, "lr": 1e-3, "out": None},
    )
    train.add_argument("--truncate", type=_positive_int, default=None, help="truncated BPTT(k)")
    train.add_argument("--eval-every", type=_positive_int, default=None, help="default steps/10")
    train.add_argument("--log-every", type=_positive_int, default=10, help="(default %(default)s)")
    train.add_argument("--checkpoint-every", type=_positive_int, default=None)
    train.add_argument("--resume", action="store_true", help="continue from OUT's last checkpoint")
    train.add_argument(
        "--carry-grads",
        action="store_true",
        help="log ‖∂L/∂h_t‖ for every step t at each evaluation (one-layer models)",
    )
    train.add_argument(
        "--dtype",
        choices=("float32", "bfloat16"),
        default="float32",
        help="compute dtype; bfloat16 keeps float32 params and accumulation (default float32)",
    )
    train.add_argument(
        "--devices",
        type=_positive_int,
        default=None,
        help="data-parallel over this many devices (batch sharded, params replicated)",
    )
    train.add_argument(
        "--distributed",
        action="store_true",
        help="call jax.distributed.initialize() first: one process per host, all hosts' "
        "devices in one mesh (see the README)",
    )
    train.add_argument("--quiet", action="store_true", help="no progress lines")

    grads = commands.add_parser(
        "gradients",
        help="measure how the gradient decays with the lag for tanh RNN, LSTM and GRU",
        description="At initialisation, on one batch of the adding problem: ‖∂L/∂h_t‖ against "
        "the lag T-1-t for a tanh Elman RNN, an LSTM (forget bias 1) and a GRU, with "
        "Pascanu et al.'s bound for the RNN; prints a table and writes OUT/gradient_decay.png.",
    )
    grads.add_argument("--seq-len", type=_positive_int, default=100, help="T (default 100)")
    grads.add_argument("--hidden", type=_positive_int, default=128, help="H (default 128)")
    grads.add_argument("--batch-size", type=_positive_int, default=64, help="(default 64)")
    grads.add_argument("--seed", type=int, default=0)
    grads.add_argument("--out", type=Path, default=Path("jaxrnn-gradients"))

    show = commands.add_parser(
        "showcase",
        help="run the core cells over a batch of sequences and report shapes, speed, gradients",
    )
    show.add_argument("--seq-len", type=_positive_int, default=100, help="T (default 100)")
    show.add_argument("--batch-size", type=_positive_int, default=32, help="B (default 32)")
    show.add_argument("--input-size", type=_positive_int, default=8, help="I (default 8)")
    show.add_argument("--hidden", type=_positive_int, default=64, help="H (default 64)")
    show.add_argument("--repeats", type=_positive_int, default=5, help="timed runs (default 5)")
    show.add_argument("--seed", type=int, default=0)
    for sub in (demo, train, grads, show):
        sub.set_defaults(parser=sub)  # errors in a command's flags name the command
    return parser


def _writable(parser: argparse.ArgumentParser, out: Path) -> None:
    """Exit with a one-line message unless ``out`` is (or can be made) a writable directory."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out):
            pass
    except OSError as e:
        parser.error(f"--out: cannot write to {out}: {e.strerror or e}")


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
    lengths = jax.random.randint(k_len, (b,), t // 2, t + 1)
    device = jax.devices()[0]
    print(f"jaxrnn {jaxrnn.__version__} on jax {jax.__version__}, {device.platform}: {device}")
    print(f"inputs xs: [T={t}, B={b}, I={i}], hidden size H={h}; lengths in [{t // 2}, {t}]\n")
    print("loss = mean over the batch of ‖y_T‖², read at each sequence's last valid step")
    print("‖∂L/∂x_1‖ / ‖∂L/∂x_T‖ is how much of the loss's gradient reaches the first input\n")

    models: list[tuple[str, jaxrnn.Stack]] = [
        ("Elman tanh + output layer", jaxrnn.stack(jaxrnn.elman(h, output_size=1))),
        ("LSTM, forget bias 1", jaxrnn.stack(jaxrnn.lstm(h, forget_bias=1.0))),
        ("GRU, chrono init", jaxrnn.stack(jaxrnn.gru(h, chrono=t))),
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
            last = jnp.take_along_axis(ys, (lengths - 1)[None, :, None], axis=0)[0]
            return jnp.mean(jnp.sum(last**2, axis=-1))

        grad_fn = jax.jit(jax.grad(loss, argnums=(0, 1)))
        compile_ms, run_ms = _time(lambda: grad_fn(params, xs), args.repeats)  # noqa: B023
        d_params, d_xs = grad_fn(params, xs)
        last_dx = jnp.take_along_axis(d_xs, (lengths - 1)[None, :, None], axis=0)[0]
        ratio = float(jnp.linalg.norm(d_xs[0]) / jnp.linalg.norm(last_dx))
        ratios[name] = ratio
        n_params = sum(leaf.size for leaf in jax.tree.leaves(params))
        ys_shape = str(tuple(jax.eval_shape(rnn.apply, params, xs)[1].shape))
        print(
            f"{name:<28} {n_params:>8} {ys_shape:>15} {compile_ms:>11.0f} {run_ms:>11.2f} "
            f"{float(optax.tree.norm(d_params)):>9.3g} {ratio:>20.2e}"
        )
    elman_ratio, lstm_ratio = ratios[models[0][0]], ratios[models[1][0]]
    print(
        f"\nAcross about {t} steps the tanh RNN keeps {elman_ratio:.1e} of its gradient, the "
        f"LSTM {lstm_ratio:.1e}\n({lstm_ratio / elman_ratio:.1e}x more): the vanishing gradient "
        "that gates were designed to fix."
    )
    return 0


def train(args: argparse.Namespace) -> int:
    """``jaxrnn train``: one model on one task."""
    parser = args.parser
    if args.distributed:
        jax.distributed.initialize()
    if args.devices is not None and args.devices > len(jax.devices()):
        parser.error(f"--devices: expected at most {len(jax.devices())}, got {args.devices}")
    if args.devices is not None and args.batch_size % args.devices:
        parser.error(
            f"--batch-size: expected a multiple of --devices {args.devices}, got {args.batch_size}"
        )
    out = args.out or Path("runs") / f"{args.task}-{args.cell}-T{args.seq_len}-seed{args.seed}"
    if args.resume and checkpoint.latest(out / "checkpoints") is None:
        parser.error(f"--resume: nothing to resume, no checkpoint in {out / 'checkpoints'}")
    if args.carry_grads and args.layers != 1:
        parser.error(f"--carry-grads: needs a one-layer model, got --layers {args.layers}")
    _writable(parser, out)
    config = {
        k: v
        for k, v in vars(args).items()
        if k
        not in ("command", "parser", "out", "resume", "checkpoint_every", "quiet", "distributed")
    }
    try:
        task = tasks.get(args.task, args.seq_len)
    except ValueError as e:
        parser.error(f"--seq-len: {e}")
    cell = CELLS[args.cell](args.hidden, args.seq_len)
    options = {} if args.truncate is None else {"truncate": args.truncate}
    rnn = cell if args.layers == 1 else jaxrnn.stack(cell, num_layers=args.layers)
    compute_dtype = jnp.bfloat16 if args.dtype == "bfloat16" else None
    model = training.readout(rnn, task.output_size, compute_dtype=compute_dtype, **options)
    tx = _demo.optimizer_from_flags(args)
    extra = _carry_grad_metric(cell, task) if args.carry_grads else None
    print(
        f"training {args.cell} (H={args.hidden}, {args.layers} layer(s)) on {task.name} "
        f"(T={args.seq_len}, baseline loss {task.baseline:.4g}) for {args.steps} steps -> {out}"
    )
    try:
        result = training.fit(
            model,
            task,
            tx,
            steps=args.steps,
            batch_size=args.batch_size,
            key=jax.random.key(args.seed),
            out=out,
            eval_every=args.eval_every,
            log_every=args.log_every,
            checkpoint_every=args.checkpoint_every,
            resume=args.resume,
            config=config,
            extra_metrics=extra,
            devices=args.devices,
            progress=not args.quiet,
        )
    except FloatingPointError as e:
        print(f"jaxrnn train: error: {e}", file=sys.stderr)
        return 1
    if args.carry_grads:
        _heatmap(result.history, out)
    s = result.summary
    metric = f"final_eval_{task.metric_name}"
    print(
        f"final eval loss {s['final_eval_loss']:.4g} (baseline {s['baseline']:.4g}), "
        f"{task.metric_name} {s[metric]:.3f}; {s['steps_this_run']} steps in "
        f"{s['wall_seconds']:.1f} s ({_rate(s['steps_per_second'])} steps/s after the first); "
        f"{s['skipped_updates']} non-finite updates skipped. Wrote {out}/summary.json"
    )
    return 0


def _heatmap(history: list[dict[str, Any]], out: Path) -> None:
    """Write OUT/carry_grad_heatmap.png: ‖∂L/∂h_t‖ per step t across the evaluations."""
    rows = [line["carry_grad_norms"] for line in history if "carry_grad_norms" in line]
    try:
        from jaxrnn import plots

        fig = plots.gradient_heatmap(
            rows, ylabel="evaluation", title="‖∂L/∂h_t‖ on a held-out batch during training"
        )
    except ImportError as e:
        print(f"no heatmap: {e}")
        return
    fig.savefig(out / "carry_grad_heatmap.png", dpi=110, bbox_inches="tight")
    print(f"wrote {out / 'carry_grad_heatmap.png'}")


def _rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def _carry_grad_metric(cell: jaxrnn.Cell, task: tasks.Task) -> Callable[..., dict[str, Any]]:
    """``extra_metrics`` for ``fit``: the batch mean of ‖∂L/∂h_t‖ for every step t."""
    norms = jax.jit(functools.partial(_demo.mean_carry_grad_norms, cell, task=task))

    return lambda params, batch: {"carry_grad_norms": norms(params=params, batch=batch).tolist()}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``jaxrnn`` command."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "showcase":
        return showcase(args)
    if args.command == "train":
        return train(args)
    if args.command == "demo":
        _writable(args.parser, args.out)
        return _demo.demo(args)
    if args.command == "gradients":
        _writable(args.parser, args.out)
        return _demo.gradients(args)
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

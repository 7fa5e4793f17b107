"""The ``jaxrnn`` command line (``jaxrnn`` console script and ``python -m jaxrnn``).

Parsing imports neither JAX nor the library's modules (``--help`` and
``--version`` answer at once); each command imports what it runs. Errors are
one line and exit 2 (bad input) or 1 (a failed run); a run stopped by SIGINT
or SIGTERM checkpoints and exits 130 or 143 with the command that resumes it.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import json
import math
import os
import shlex
import socket
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from jaxrnn import __version__, runlog

DESCRIPTION = (
    "jaxrnn: recurrent networks in JAX, as pure functions, with BPTT you can see and control."
)
# `train`'s config leaves these out: where and how a run is written, not what it computes.
NOT_CONFIG = (
    "command",
    "parser",
    "out",
    "resume",
    "overwrite",
    "checkpoint_every",
    "checkpoint_through_time",  # memory, not results: gradients are equal to rounding
    "quiet",
    # How the processes of a multi-process run meet: the same run may resume on another port.
    "distributed",
    "coordinator",
    "num_processes",
    "process_id",
    "distributed_timeout",
    "launch_missing",  # which of the three resolve_launch left to JAX's cluster detection
)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line: what is wrong and where to get help."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parsed(convert: Callable[[str], Any], ok: Callable[[Any], bool], expected: str) -> Any:
    """An argparse ``type``: ``convert(text)``, refused with one line unless ``ok``."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text}")
        return value

    return parse


_positive_int = _parsed(int, lambda v: v > 0, "a positive integer")
_positive_float = _parsed(float, lambda v: 0 < v < math.inf, "a positive number")
_seed = _parsed(int, lambda v: 0 <= v < 2**63, "an integer in [0, 2**63)")
_temperature = _parsed(float, lambda v: 0 <= v < math.inf, "a number >= 0")
_process_id = _parsed(int, lambda v: v >= 0, "an integer >= 0")
_rate = _parsed(float, lambda v: 0 <= v < 1, "a rate in [0, 1)")


def _coordinator(text: str) -> str:
    """``HOST:PORT`` (an IPv6 host in brackets, ``[::1]:1234``), the port in [1, 65535]."""
    host, colon, port = text.rpartition(":")
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if (
        not colon
        or not bare
        or (":" in bare and bare == host)  # an IPv6 address needs its brackets
        or not (port.isascii() and port.isdigit() and 0 < int(port) < 2**16)
    ):
        raise argparse.ArgumentTypeError(
            f"expected HOST:PORT, a port in [1, 65535] and an IPv6 host in [], got {text!r}"
        )
    return text


def _path(text: str) -> Path:
    return Path(text).expanduser()  # `--out=~/runs`: the shell expands no ~ after =


def _clip(text: str) -> float | None:
    if text.lower() in ("0", "none", "off"):
        return None
    try:
        return _positive_float(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected a positive threshold or 'none', got {text!r}"
        ) from None


CELL_NAMES = ("elman", "irnn", "lstm", "lstm-chrono", "gru", "layernorm-lstm")
INIT_NAMES = ("pytorch", "flax", "keras")  # jaxrnn._initializers.PRESETS
TASK_NAMES = ("adding", "adding-hs97", "copy", "temporal-order", "text")  # tasks.NAMES
CELL_HELP = (
    "elman: tanh Elman RNN; irnn: ReLU Elman with identity init (Le et al. 2015); "
    "lstm: LSTM with forget-gate bias 1; lstm-chrono: LSTM with chrono init "
    "(Tallec & Ollivier 2018); gru: GRU; layernorm-lstm: layer-normalised LSTM "
    "(Ba et al. 2016) with forget-gate bias 1"
)
INIT_HELP = (
    "whose default initialisation the cell's params follow: pytorch (U(±1/√H) everywhere), "
    "flax (flax.nnx's cells: lecun_normal input weights, orthogonal recurrent weights, zero "
    "biases) or keras (glorot_uniform input weights, orthogonal recurrent weights, zero "
    "biases, LSTM forget bias 1); what --cell names itself (lstm's forget bias 1, irnn's "
    "identity and zero biases, lstm-chrono's chrono biases) overrides the preset "
    "(default %(default)s)"
)
# `train`'s config leaves these out at their default, so that the runs made before the
# flag keep their directory names and still resume.
OMITTED_AT_DEFAULT = {"recurrent_dropout": 0.0, "init": "pytorch"}


def _training_flags(parser: argparse.ArgumentParser, defaults: dict[str, Any]) -> None:
    """The flags ``train`` and ``demo`` share."""
    add = parser.add_argument
    add(
        "--seq-len",
        type=_positive_int,
        default=defaults["seq_len"],
        help=defaults.get("seq_len_help", "T (default %(default)s)"),
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
    add("--seed", type=_seed, default=0, help="PRNG seed in [0, 2**63) (default %(default)s)")
    add("--out", type=_path, default=defaults["out"], help=defaults["out_help"])


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="jaxrnn", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"jaxrnn {__version__}")
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
            "out_help": "output directory; a previous demo's runs there are moved aside to "
            "OUT/rnn.old-<time> and OUT/lstm.old-<time> (default %(default)s)",
        },
    )

    train = commands.add_parser(
        "train",
        help="train a model on a task, with metrics, checkpoints and resumption",
        description="Train one model on one task; writes OUT/metrics.jsonl, OUT/summary.json "
        "and (with --checkpoint-every) atomic checkpoints under OUT/checkpoints.",
    )
    train.add_argument("--task", choices=TASK_NAMES, default=None, help="(default adding)")
    train.add_argument(
        "--data",
        type=_path,
        default=None,
        metavar="FILE.npz",
        help="train on your own sequences instead of a task: an .npz with xs [N, T, I] "
        "(float), targets (float [N] or [N, O]: regression at the last valid step; int [N]: "
        "a class at the last valid step; int [N, T]: a class at every step) and optionally "
        "lengths [N], eval_xs, eval_targets, eval_lengths (else 10%% of the rows are held out)",
    )
    train.add_argument("--cell", choices=CELL_NAMES, default="lstm", help=CELL_HELP)
    train.add_argument("--init", choices=INIT_NAMES, default="pytorch", help=INIT_HELP)
    train.add_argument("--layers", type=_positive_int, default=1, help="stacked layers (default 1)")
    train.add_argument(
        "--recurrent-dropout",
        type=_rate,
        default=0.0,
        metavar="RATE",
        help="variational dropout on the hidden state fed back at every step: one mask per "
        "sequence (and layer), in training only (default 0)",
    )
    _training_flags(
        train,
        {
            "seq_len": None,
            "seq_len_help": "T (default 100; with --data, the data's)",
            "hidden": 128,
            "steps": 2000,
            "batch_size": 64,
            "lr": 1e-3,
            "out": None,
            "out_help": "the run directory (default runs/TASK-CELL-T<seq-len>-seed<seed>-<8 hex "
            "digits of the other flags, --steps aside>: one per configuration; with no other "
            "flags: {default})",
        },
    )
    train.add_argument("--truncate", type=_positive_int, default=None, help="truncated BPTT(k)")
    train.add_argument(
        "--checkpoint-through-time",
        type=_positive_int,
        default=None,
        metavar="K",
        help="keep every K-th carry for the backward pass and recompute the rest: memory grows "
        "like T/K + K, not T; with --task text (one-layer) the loss is also summed inside the "
        "time loop, so no [B, T, V] outputs are held (may change on --resume)",
    )
    train.add_argument("--eval-every", type=_positive_int, default=None, help="default steps/10")
    train.add_argument("--log-every", type=_positive_int, default=10, help="(default %(default)s)")
    train.add_argument(
        "--checkpoint-every",
        type=_positive_int,
        default=None,
        help="steps between atomic checkpoints (default: at every evaluation)",
    )
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in OUT from its newest intact checkpoint (same flags; --steps "
        "may grow)",
    )
    train.add_argument(
        "--overwrite",
        action="store_true",
        help="OUT already holds a run: move it aside to OUT.old-<time> and start afresh",
    )
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
    train.add_argument("--quiet", action="store_true", help="no progress lines")
    launch = train.add_argument_group(
        "multi-process runs",
        "Start the same command once per process (one per host, or several on one host), with "
        "--devices the total device count; process 0 prints and writes OUT, which every "
        "process must be able to read for --resume. These flags only say how the processes "
        "meet: they are not part of the run's configuration, so a run may resume on another "
        "port. See the README.",
    )
    launch.add_argument(
        "--distributed",
        action="store_true",
        help="join a multi-process run (jax.distributed.initialize) before training; implied "
        "by --coordinator, --num-processes and --process-id. Those not given are read from "
        "JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID; JAX's cluster "
        "detection (Slurm, Open MPI, Kubernetes, Cloud TPU) fills in any still missing",
    )
    launch.add_argument(
        "--coordinator",
        type=_coordinator,
        default=None,
        metavar="HOST:PORT",
        help="where process 0 serves the coordinator; every process gives the same address",
    )
    launch.add_argument(
        "--num-processes",
        type=_positive_int,
        default=None,
        metavar="N",
        help="how many processes take part",
    )
    launch.add_argument(
        "--process-id",
        type=_process_id,
        default=None,
        metavar="I",
        help="this process's rank in [0, N); process 0 serves the coordinator and writes OUT",
    )
    launch.add_argument(
        "--distributed-timeout",
        type=_positive_int,
        default=300,
        metavar="SECONDS",
        help="give up (exit 2) when not every process has joined by then (default %(default)s)",
    )

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
    grads.add_argument("--seed", type=_seed, default=0, help="(default 0)")
    grads.add_argument("--out", type=_path, default=Path("jaxrnn-gradients"))

    show = commands.add_parser(
        "showcase",
        help="run the core cells over a batch of sequences and report shapes, speed, gradients",
    )
    show.add_argument("--seq-len", type=_positive_int, default=100, help="T (default 100)")
    show.add_argument("--batch-size", type=_positive_int, default=32, help="B (default 32)")
    show.add_argument("--input-size", type=_positive_int, default=8, help="I (default 8)")
    show.add_argument("--hidden", type=_positive_int, default=64, help="H (default 64)")
    show.add_argument("--repeats", type=_positive_int, default=5, help="timed runs (default 5)")
    show.add_argument("--seed", type=_seed, default=0, help="(default 0)")

    plot = commands.add_parser(
        "plot",
        help="plot a run's learning curves, gradient norms and carry-gradient heatmap",
        description="Read RUN_DIR/metrics.jsonl (of `jaxrnn train` or `training.fit`) and write "
        "curves.png (train and held-out loss, metric, gradient norm) and, when logged with "
        "--carry-grads, carry_grad_heatmap.png.",
    )
    plot.add_argument("run_dir", type=_path, metavar="RUN_DIR", help="a run directory")
    plot.add_argument("--out", type=_path, default=None, help="where to write (default RUN_DIR)")

    sample = commands.add_parser(
        "sample",
        help="generate text from a character model trained with --task text",
        description="Restore the newest intact checkpoint of a `jaxrnn train --task text` run "
        "and generate characters one at a time, each drawn from the model's softmax at the "
        "given temperature and fed back.",
    )
    sample.add_argument("run_dir", type=_path, metavar="RUN_DIR", help="a run directory")
    sample.add_argument("--prompt", default="def ", help="text to start from (default %(default)r)")
    sample.add_argument(
        "--length", type=_positive_int, default=300, help="characters to generate (default 300)"
    )
    sample.add_argument(
        "--temperature",
        type=_temperature,
        default=0.8,
        help="0: the most likely character; 1: the model's distribution (default 0.8)",
    )
    sample.add_argument("--seed", type=_seed, default=0, help="(default 0)")
    for sub in (demo, train, grads, show, plot, sample):
        sub.set_defaults(parser=sub)  # errors in a command's flags name the command
    out = next(a for a in train._actions if a.dest == "out")
    out.help = (out.help or "").replace(
        "{default}", str(default_out(train_config(train.parse_args([]))))
    )
    return parser


def _writable(parser: argparse.ArgumentParser, out: Path) -> None:
    """Exit with a one-line message unless ``out`` is (or can be made) a writable directory."""
    import tempfile

    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out):
            pass
    except OSError as e:
        parser.error(f"--out: cannot write to {out}: {e.strerror or e}")


def train_config(args: argparse.Namespace) -> dict[str, Any]:
    """What a ``train`` run computes: its flags but the output and control ones."""
    config = {
        k: v
        for k, v in vars(args).items()
        if k not in NOT_CONFIG and not (k in OMITTED_AT_DEFAULT and v == OMITTED_AT_DEFAULT[k])
    }
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in config.items()}


def resolve_train(args: argparse.Namespace) -> None:
    """Fill in ``train``'s defaults that depend on ``--data``; fingerprint the data file."""
    args.data_sha256 = None
    if args.data is None:
        args.task = args.task or "adding"
        args.seq_len = args.seq_len or 100
        return
    for flag, value in (("--task", args.task), ("--seq-len", args.seq_len)):
        if value is not None:
            args.parser.error(f"{flag}: cannot be combined with --data (the data is the task)")
    try:
        args.data_sha256 = hashlib.sha256(args.data.read_bytes()).hexdigest()
    except OSError as e:
        args.parser.error(f"--data: cannot read {args.data}: {e.strerror or e}")
    args.data = args.data.resolve()
    args.task = "data"


def default_out(config: dict[str, Any]) -> Path:
    """``runs/<task>-<cell>-T<T>-seed<seed>-<hash>``: one directory per configuration.

    With ``--data``, ``runs/<file name>-<cell>-seed<seed>-<hash>``.
    """
    if config.get("data") is not None:
        name = f"{Path(config['data']).stem}-{config['cell']}"
    else:
        name = f"{config['task']}-{config['cell']}-T{config['seq_len']}"
    return Path("runs") / f"{name}-seed{config['seed']}-{_config_hash(config)}"


def _config_hash(config: dict[str, Any]) -> str:
    fixed = {k: v for k, v in config.items() if k != "steps"}  # more steps: the same run
    return hashlib.sha256(json.dumps(fixed, sort_keys=True).encode()).hexdigest()[:8]


def _check_train_flags(args: argparse.Namespace) -> None:
    parser = args.parser
    if args.resume and args.overwrite:
        parser.error("--overwrite: cannot be combined with --resume")
    if args.carry_grads and args.layers != 1:
        parser.error(f"--carry-grads: needs a one-layer model, got --layers {args.layers}")
    if args.devices is not None and args.batch_size % args.devices:
        parser.error(
            f"--batch-size: expected a multiple of --devices {args.devices}, got {args.batch_size}"
        )


# How a multi-process run meets: args attribute -> (flag, variable read without it, parser).
LAUNCH_VARIABLES = {
    "coordinator": ("--coordinator", "JAX_COORDINATOR_ADDRESS", _coordinator),
    "num_processes": ("--num-processes", "JAX_NUM_PROCESSES", _positive_int),
    "process_id": ("--process-id", "JAX_PROCESS_ID", _process_id),
}


def resolve_launch(args: argparse.Namespace) -> None:
    """Fill in how a multi-process ``train`` meets; refuse values that cannot work, with one line.

    Any of ``--coordinator``, ``--num-processes``, ``--process-id`` implies
    ``--distributed``; with it, each not given is read from its JAX_ variable
    (a flag wins over its variable). Process 0 checks here, before JAX is
    imported, that it can bind the coordinator's port: JAX's own bind failure
    crashes the process with no message.
    """
    parser = args.parser
    if not args.distributed and all(getattr(args, k) is None for k in LAUNCH_VARIABLES):
        return
    args.distributed = True
    source = {key: flag for key, (flag, _, _) in LAUNCH_VARIABLES.items()}
    for key, (_, variable, convert) in LAUNCH_VARIABLES.items():
        text = os.environ.get(variable, "")
        if getattr(args, key) is None and text:
            try:
                setattr(args, key, convert(text))
            except argparse.ArgumentTypeError as e:
                parser.error(f"{variable}: {e}")
            source[key] = variable
    # Left to JAX's cluster detection, named as such if it finds no cluster either.
    args.launch_missing = [
        f"{flag} (or {variable})"
        for key, (flag, variable, _) in LAUNCH_VARIABLES.items()
        if getattr(args, key) is None
    ]
    count, rank = args.num_processes, args.process_id
    if count is not None and rank is not None and rank >= count:
        parser.error(
            f"{source['process_id']}: expected a process id in [0, {count}) for "
            f"{source['num_processes']} {count}, got {rank}"
        )
    if rank == 0 and args.coordinator is not None:
        _check_port_free(parser, args.coordinator, source["coordinator"])


def _check_port_free(parser: argparse.ArgumentParser, coordinator: str, source: str) -> None:
    """Exit with one line if process 0 cannot bind the coordinator's port.

    JAX binds ``JAX_COORDINATOR_BIND_ADDRESS``, by default ``[::]:PORT``
    (every interface, IPv4 too); a port held by another socket makes its
    server fail to start and the process crash (SIGSEGV in jax 0.10), so the
    same bind is tried here first. Like gRPC, the probe sets ``SO_REUSEADDR``:
    a port left in TIME_WAIT by a previous run counts as free.
    """
    port = coordinator.rpartition(":")[2]
    bind = os.environ.get("JAX_COORDINATOR_BIND_ADDRESS") or f"[::]:{port}"
    host, _, bind_port = bind.rpartition(":")
    host = host.strip("[]")
    addresses = [(host, socket.AF_INET6 if ":" in host else socket.AF_INET)]
    if host == "::":  # no IPv6 here: gRPC falls back to the IPv4 wildcard
        addresses.append(("0.0.0.0", socket.AF_INET))
    for address, family in addresses:
        try:
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                probe.bind((address, int(bind_port)))
                return
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                parser.error(
                    f"{source}: expected a port free on this host for process 0 to serve the "
                    f"coordinator on, got {coordinator}, whose port {bind_port} is in use "
                    f"(binding {bind} failed); free it or give every process another port"
                )
        except ValueError:  # a JAX_COORDINATOR_BIND_ADDRESS without a numeric port: JAX says
            return


def _open_run(args: argparse.Namespace) -> runlog.RunDir:
    try:
        return runlog.RunDir(args.out, resume=args.resume, overwrite=args.overwrite)
    except runlog.RunDirError as e:
        print(f"jaxrnn train: error: {_message(e)}", file=sys.stderr)
        raise SystemExit(2) from None


def _resume_command(argv: Sequence[str], out: Path) -> str:
    words = [w for w in argv if w != "--overwrite"]
    if "--out" not in words and not any(w.startswith("--out=") for w in words):
        words += ["--out", str(out)]
    return shlex.join(["jaxrnn", *words, *([] if "--resume" in words else ["--resume"])])


def _exit_code(error: BaseException) -> int | None:
    """2 for bad input, 1 for a failed run, None for a bug (its traceback is shown)."""
    from jaxrnn import checkpoint

    if isinstance(error, checkpoint.CheckpointError | FloatingPointError | OSError):
        return 1
    if isinstance(error, ValueError | TypeError):
        return 2
    return None


def _message(error: BaseException) -> str:
    """The error's text, in the command line's words (flags, not keyword arguments)."""
    if isinstance(error, runlog.ConfigMismatch):

        def value(key: str, v: Any) -> Any:
            return OMITTED_AT_DEFAULT[key] if v is None and key in OMITTED_AT_DEFAULT else v

        return "--resume: the run was made with other flags: " + ", ".join(
            "--data (the file's contents changed)"
            if k == "data_sha256"
            else f"--{k.replace('_', '-')} {value(k, s)!r} there, {value(k, g)!r} now"
            for k, (s, g) in error.differences.items()
        )
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if isinstance(error, runlog.RunDirError):
        for old, new in (("resume=True", "--resume"), ("overwrite=True", "--overwrite")):
            text = text.replace(old, new)
        if text.startswith(("out:", "resume:")):
            text = "--" + text
    return text


def _run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    if args.command == "train":
        _check_train_flags(args)
        resolve_launch(args)
        resolve_train(args)
        config = train_config(args)
        args.out = args.out or default_out(config)
        if args.distributed:  # process 0 opens the run directory once all have joined
            from jaxrnn import _commands

            return _commands.train(args, config, None)
        # Opened before JAX is imported: a refused directory is said at once, and a stop
        # asked for while starting up is kept for the training loop.
        with runlog.StopSignals(), _open_run(args) as run:
            from jaxrnn import _commands

            return _commands.train(args, config, run)
    if args.command in ("demo", "gradients"):
        _writable(args.parser, args.out)
        from jaxrnn import _demo

        return _demo.demo(args) if args.command == "demo" else _demo.gradients(args)
    if args.command == "plot" and args.out is not None:
        _writable(args.parser, args.out)
    from jaxrnn import _commands

    command = {"showcase": _commands.showcase, "plot": _commands.plot, "sample": _commands.sample}
    return command[args.command](args)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``jaxrnn`` command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    prog = f"jaxrnn {args.command}"

    def one_line(message: Warning | str, *rest: Any, **kwargs: Any) -> None:
        print(f"{prog}: warning: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.simplefilter("always", UserWarning)  # a warning, not an error, on the command line
        warnings.showwarning = one_line
        try:
            return _run(args, argv)
        except runlog.Stopped as stop:
            hint = (
                f". Resume with: {_resume_command(argv, args.out)}"
                if args.command == "train"
                else ""
            )
            print(f"{prog}: {stop}{hint}", file=sys.stderr)
            return stop.exit_code
        except KeyboardInterrupt:
            print(f"{prog}: interrupted", file=sys.stderr)
            return 130
        except Exception as error:
            code = _exit_code(error)
            if code is None:
                raise
            print(f"{prog}: error: {_message(error)}", file=sys.stderr)
            return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

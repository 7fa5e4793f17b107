"""The ``jaxrnn`` command line (``jaxrnn`` console script and ``python -m jaxrnn``)."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

import jaxrnn


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxrnn", description=jaxrnn.__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
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
    return parser


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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``jaxrnn`` command."""
    args = _parser().parse_args(argv)
    if args.command == "showcase":
        return showcase(args)
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

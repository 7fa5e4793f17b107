"""``jaxrnn demo`` and ``jaxrnn gradients``: the temporal-dependency problem, shown."""

from __future__ import annotations

import argparse
import json
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import jaxrnn
from jaxrnn import diagnostics, tasks, training


def mean_carry_grad_norms(
    cell: jaxrnn.Cell, params: training.ReadoutParams, task: tasks.Task, batch: tasks.Batch
) -> jax.Array:
    """‖∂L/∂h_t‖ for every step t, the mean over the batch, for the task's loss via the readout."""

    def loss_fn(hs: jax.Array) -> jax.Array:
        outputs = jnp.einsum("bth,oh->bto", hs, params.w_out) + params.b_out[None, None, :]
        return task.loss(outputs, batch)

    norms = diagnostics.carry_grad_norms(
        cell, params.rnn, batch.xs, loss_fn, lengths=batch.lengths, time_major=False
    )
    h = norms.h if isinstance(norms, jaxrnn.LSTMCarry) else norms
    return jnp.mean(h, axis=0)


def _decay(
    cell: jaxrnn.Cell, params: training.ReadoutParams, task: tasks.Task, batch: tasks.Batch
) -> np.ndarray:
    """:func:`mean_carry_grad_norms` by lag T-1-t, computed in float64.

    A tanh RNN's gradient at lag 100 is often below float32's smallest normal
    number (1e-38) and would read as exactly 0.
    """
    with jax.enable_x64(True):
        params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
        batch = batch._replace(xs=jnp.asarray(batch.xs, jnp.float64))
        return np.asarray(mean_carry_grad_norms(cell, params, task, batch))[::-1]


def optimizer_from_flags(args: argparse.Namespace) -> Any:
    """The optax chain the shared training flags (``--lr``, ``--optimizer``, …) describe."""
    return training.optimizer(
        args.lr,
        name=args.optimizer,
        clip=args.clip,
        clip_mode=args.clip_mode,
        schedule=args.schedule,
        steps=args.steps,
    )


def _save(fig: Any, path: Any) -> str:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return str(path)


def demo(args: argparse.Namespace) -> int:
    """Train a tanh RNN and an LSTM on the adding problem and compare them."""
    from jaxrnn import plots  # matplotlib: imported only when a plot is made

    t = args.seq_len
    task = tasks.adding(t)
    models = {
        "tanh RNN": jaxrnn.elman(args.hidden),
        "LSTM": jaxrnn.lstm(args.hidden, forget_bias=1.0),
    }
    print(
        f"The adding problem (Arjovsky et al. 2016) at T={t}: the target is the sum of the two "
        f"marked values of {t};\nalways answering 1 scores MSE {task.baseline:.4f} (the "
        f"baseline). Solved: MSE below a tenth of it, {task.baseline / 10:.4f}.\n"
        f"Both models: hidden size {args.hidden}, {args.optimizer} lr {args.lr}, clipping "
        f"{args.clip_mode} {args.clip}, batch {args.batch_size}, {args.steps} steps, seed "
        f"{args.seed}.\n"
    )
    key = jax.random.key(args.seed)
    k_init, k_probe = jax.random.split(key)
    probe = task.sample(k_probe, 256, "eval")
    rows, histories, curves = [], {}, {}
    for name, cell in models.items():
        model = training.readout(cell, task.output_size)
        params = model.init(k_init, task.input_size)
        tx = optimizer_from_flags(args)
        slug = name.split()[-1].lower()
        print(f"[{name}]")
        result = training.fit(
            model,
            task,
            tx,
            steps=args.steps,
            batch_size=args.batch_size,
            key=key,
            params=params,
            out=args.out / slug,
            config={"model": name, **_flags(args)},
        )
        before, after = (
            _decay(cell, params, task, probe),
            _decay(cell, result.state.params, task, probe),
        )
        histories[name] = result.history
        curves[f"{name}, initial"] = before
        curves[f"{name}, trained"] = after
        s = result.summary
        rows.append(
            (
                name,
                s["final_eval_loss"],
                s["final_eval_correct"],
                before[-1] / before[0],
                after[-1] / after[0],
                s["steps_per_second"],
            )
        )
    header = (
        f"{'model':<10} {'eval MSE':>9} {'/ baseline':>10} {'correct':>8} "
        f"{'grad lag ' + str(t - 1) + ' / lag 0':>20} {'(trained)':>10} {'steps/s':>8}"
    )
    print("\n" + header + "\n" + "-" * len(header))
    for name, loss, correct, ratio0, ratio1, speed in rows:
        print(
            f"{name:<10} {loss:>9.4f} {loss / task.baseline:>10.3f} {correct:>8.2f} "
            f"{ratio0:>20.2e} {ratio1:>10.2e} {speed:>8.1f}"
        )
    print(
        f"\n'grad lag {t - 1} / lag 0' is ‖∂L/∂h_1‖ / ‖∂L/∂h_{t}‖ on {probe.xs.shape[0]} "
        "held-out sequences: how much of the loss's gradient reaches the first step, "
        "at initialisation and after training."
    )
    (rnn_row, lstm_row) = rows
    print(
        f"At initialisation the LSTM passes {lstm_row[3] / rnn_row[3]:.1e}x more of its "
        "gradient back to the first step than the tanh RNN: the vanishing gradient that "
        "the LSTM's gates were designed to fix."
    )
    curves_png = _save(
        plots.learning_curves(
            histories, baseline=task.baseline, title=f"adding problem, T={t}: held-out MSE"
        ),
        args.out / "learning_curves.png",
    )
    decay_png = _save(
        plots.gradient_decay(curves, title=f"adding problem, T={t}: gradient reaching back"),
        args.out / "gradient_decay.png",
    )
    print(f"\nWrote {curves_png}, {decay_png} and each run's metrics.jsonl and summary.json.")
    return 0


def _flags(args: argparse.Namespace) -> dict[str, Any]:
    return {
        k: (str(v) if k == "out" else v)
        for k, v in vars(args).items()
        if k not in ("command", "parser")
    }


def gradients(args: argparse.Namespace) -> int:
    """At initialisation: the gradient's decay with lag for tanh RNN, LSTM and GRU."""
    from jaxrnn import plots

    t, h = args.seq_len, args.hidden
    task = tasks.adding(t)
    k_init, k_data = jax.random.split(jax.random.key(args.seed))
    batch = task.sample(k_data, args.batch_size, "eval")
    cells = {
        "tanh RNN": jaxrnn.elman(h),
        "LSTM (forget bias 1)": jaxrnn.lstm(h, forget_bias=1.0),
        "GRU": jaxrnn.gru(h),
    }
    curves, fits = {}, {}
    bound = None
    for name, cell in cells.items():
        params = training.readout(cell, task.output_size).init(k_init, task.input_size)
        curves[name] = _decay(cell, params, task, batch)
        fits[name] = diagnostics.classify_decay(curves[name])
        if cell.spec is not None and isinstance(cell.spec, jaxrnn.ElmanSpec):
            lam = float(diagnostics.spectral_norm(params.rnn.w_hh))
            gamma = diagnostics.gamma_of(cell.spec.activation)
            bound = curves[name][0] * np.asarray(
                diagnostics.pascanu_bound(lam, gamma, np.arange(t))
            )
            bound_note = f"λ1 = {lam:.3f}, γ = {gamma:g}"
    lags = [lag for lag in (0, 1, 5, 10, 25, 50, 75, t - 1) if lag < t]
    print(
        f"‖∂L/∂h_t‖ at initialisation (default inits, H={h}), adding problem T={t}, loss "
        f"at the last step, mean over {args.batch_size} sequences, by lag T-1-t:\n"
    )
    header = f"{'lag':>5} " + " ".join(f"{name:>21}" for name in cells)
    header += f" {'Pascanu bound (RNN)':>21}"
    print(header + "\n" + "-" * len(header))
    assert bound is not None
    for lag in lags:
        values = " ".join(f"{curves[name][lag]:>21.3e}" for name in cells)
        print(f"{lag:>5} {values} {bound[lag]:>21.3e}")
    print(
        "\nfitted decay per step: "
        + "; ".join(f"{name} {fit.rate:.4f} ({fit.label})" for name, fit in fits.items())
    )
    print(f"Pascanu et al.'s bound for the tanh RNN: ‖∂L/∂h_0‖·(λ1·γ)^lag with {bound_note}.")
    rnn, lstm = curves["tanh RNN"][t - 1], curves["LSTM (forget bias 1)"][t - 1]
    print(f"At lag {t - 1}: LSTM / tanh RNN = {lstm / rnn:.2e}.")
    fig = plots.gradient_decay(
        {**curves, "Pascanu bound (tanh RNN)": bound},
        title=f"adding problem, T={t}, at initialisation",
    )
    png = _save(fig, args.out / "gradient_decay.png")
    summary = {
        "seq_len": t,
        "hidden": h,
        "lags": lags,
        "norms": {name: curves[name].tolist() for name in cells},
        "fits": {name: fit._asdict() for name, fit in fits.items()},
        "lstm_over_rnn_at_max_lag": float(lstm / rnn),
    }
    (args.out / "gradients.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"Wrote {png} and {args.out / 'gradients.json'}.")
    return 0

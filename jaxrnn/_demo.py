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
    number (1e-38) and would read as exactly 0. float64 only moves the wall:
    the norm reads exactly 0 once its square is below float64's smallest
    normal number (a norm under about 1e-154, reached by lag ~400 for a small
    tanh RNN), and the commands report such lags as underflow.
    """
    with jax.enable_x64(True):
        params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
        batch = batch._replace(xs=jnp.asarray(batch.xs, jnp.float64))
        return np.asarray(mean_carry_grad_norms(cell, params, task, batch))[::-1]


def _usable(curve: np.ndarray) -> int:
    """How many leading lags have a positive finite norm: the lags a decay can be fitted on."""
    bad = np.flatnonzero(~(np.isfinite(curve) & (curve > 0)))
    return int(bad[0]) if bad.size else int(curve.size)


def _underflow_lag(curve: np.ndarray) -> int | None:
    """The first lag whose norm is exactly 0 (it has underflowed float64), or None."""
    zeros = np.flatnonzero(curve == 0)
    return int(zeros[0]) if zeros.size else None


def _fit(curve: np.ndarray) -> diagnostics.DecayFit | None:
    """:func:`~jaxrnn.diagnostics.classify_decay` on the usable lags; None with fewer than 2."""
    n = _usable(curve)
    return diagnostics.classify_decay(curve[:n]) if n >= 2 else None


def _norm_text(value: float, spec: str) -> str:
    return "0 (underflow)" if value == 0 else format(value, spec)


def _ratio(num: float, den: float) -> float | None:
    """``num / den`` for finite norms with ``den > 0``, else None."""
    if not (np.isfinite(num) and np.isfinite(den) and den > 0):
        return None
    return float(num) / float(den)


def _ratio_text(num: float, den: float, spec: str) -> str:
    """``num / den`` formatted, "0 (underflow)" when ``num`` is 0, "n/a" when it is undefined."""
    ratio = _ratio(num, den)
    return "n/a" if ratio is None else _norm_text(ratio, spec)


def _num_text(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _finite_or_none(value: float) -> float | None:
    """``value``, or None (JSON's null) where JSON has no number: NaN and ±Inf."""
    return float(value) if np.isfinite(value) else None


def _plottable(curve: np.ndarray) -> np.ndarray:
    """``curve`` with its zeros and non-finite values masked (NaN): a log axis shows neither."""
    return np.where(np.isfinite(curve) & (curve > 0), curve, np.nan)


def _adding(args: argparse.Namespace) -> tasks.Task:
    """``tasks.adding(args.seq_len)``; a length it refuses exits 2 with a one-line message."""
    parser: argparse.ArgumentParser = args.parser
    try:
        return tasks.adding(args.seq_len)
    except ValueError as e:
        parser.error(f"--seq-len: {e}")


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
    task = _adding(args)
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
            overwrite=True,  # a previous demo's run is moved aside, never deleted
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
                before,
                after,
                s["steps_per_second"],
            )
        )
    ratios = [
        (
            _ratio_text(before[-1], before[0], ".2e"),
            _ratio_text(after[-1], after[0], ".2e"),
        )
        for _, _, _, before, after, _ in rows
    ]
    w0 = max(20, *(len(r0) for r0, _ in ratios))
    w1 = max(10, *(len(r1) for _, r1 in ratios))
    header = (
        f"{'model':<10} {'eval MSE':>9} {'/ baseline':>10} {'correct':>8} "
        f"{'grad lag ' + str(t - 1) + ' / lag 0':>{w0}} {'(trained)':>{w1}} {'steps/s':>8}"
    )
    print("\n" + header + "\n" + "-" * len(header))
    for (name, loss, correct, _, _, speed), (ratio0, ratio1) in zip(rows, ratios, strict=True):
        relative = None if loss is None else loss / task.baseline
        print(
            f"{name:<10} {_num_text(loss, '.4f'):>9} {_num_text(relative, '.3f'):>10} "
            f"{_num_text(correct, '.2f'):>8} {ratio0:>{w0}} {ratio1:>{w1}} "
            f"{_num_text(speed, '.1f'):>8}"
        )
    print(
        f"\n'grad lag {t - 1} / lag 0' is ‖∂L/∂h_1‖ / ‖∂L/∂h_{t}‖ on {probe.xs.shape[0]} "
        "held-out sequences: how much of the loss's gradient reaches the first step, "
        "at initialisation and after training."
    )
    print(_comparison(curves["tanh RNN, initial"], curves["LSTM, initial"]))
    curves_png = _save(
        plots.learning_curves(
            histories, baseline=task.baseline, title=f"adding problem, T={t}: held-out MSE"
        ),
        args.out / "learning_curves.png",
    )
    decay_png = _save(
        plots.gradient_decay(
            {label: _plottable(curve) for label, curve in curves.items()},
            title=f"adding problem, T={t}: gradient reaching back",
        ),
        args.out / "gradient_decay.png",
    )
    print(f"\nWrote {curves_png}, {decay_png} and each run's metrics.jsonl and summary.json.")
    return 0


def _comparison(rnn: np.ndarray, lstm: np.ndarray) -> str:
    """The demo's closing sentence on the gradients at initialisation, ``[T]`` by lag."""
    rnn_ratio, lstm_ratio = _ratio(rnn[-1], rnn[0]), _ratio(lstm[-1], lstm[0])
    fix = "the vanishing gradient that the LSTM's gates were designed to fix."
    if rnn_ratio and lstm_ratio:
        return (
            f"At initialisation the LSTM passes {lstm_ratio / rnn_ratio:.1e}x more of its "
            f"gradient back to the first step than the tanh RNN: {fix}"
        )
    lost = "; ".join(
        f"the {name}'s gradient underflows to 0 in float64 from lag {lag} on"
        for name, curve in (("tanh RNN", rnn), ("LSTM", lstm))
        if (lag := _underflow_lag(curve)) is not None
    )
    if lstm_ratio and lost:
        return (
            f"At initialisation the LSTM passes {lstm_ratio:.1e} of its gradient back to the "
            f"first step, while {lost}: {fix}"
        )
    return f"At initialisation {lost or 'a norm is not finite'}: the two cannot be compared."


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
    task = _adding(args)
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
        fits[name] = _fit(curves[name])
        if cell.spec is not None and isinstance(cell.spec, jaxrnn.ElmanSpec):
            lam = float(diagnostics.spectral_norm(params.rnn.w_hh))
            gamma = diagnostics.gamma_of(cell.spec.activation)
            with jax.enable_x64(True):  # (λ1·γ)^lag leaves float32's range at lags of hundreds
                growth = np.asarray(diagnostics.pascanu_bound(lam, gamma, np.arange(t)))
            bound = curves[name][0] * growth
            bound_note = f"λ1 = {lam:.3f}, γ = {gamma:g}"
    assert bound is not None
    underflow = {name: _underflow_lag(curve) for name, curve in curves.items()}
    lags = sorted(
        {lag for lag in (0, 1, 5, 10, 25, 50, 75, t - 1) if lag < t}
        | {lag for lag in underflow.values() if lag is not None}
    )
    print(
        f"‖∂L/∂h_t‖ at initialisation (default inits, H={h}), adding problem T={t}, loss "
        f"at the last step, mean over {args.batch_size} sequences, by lag T-1-t:\n"
    )
    header = f"{'lag':>5} " + " ".join(f"{name:>21}" for name in cells)
    header += f" {'Pascanu bound (RNN)':>21}"
    print(header + "\n" + "-" * len(header))
    for lag in lags:
        values = " ".join(f"{_norm_text(curves[name][lag], '.3e'):>21}" for name in cells)
        print(f"{lag:>5} {values} {_norm_text(bound[lag], '.3e'):>21}")
    print("\nfitted decay per step: " + "; ".join(_fit_text(n, fits[n], curves[n]) for n in cells))
    for name, lag in underflow.items():
        if lag is not None:
            print(f"{name}: ‖∂L/∂h_t‖ underflows to 0 in float64 from lag {lag} on.")
    print(f"Pascanu et al.'s bound for the tanh RNN: ‖∂L/∂h_0‖·(λ1·γ)^lag with {bound_note}.")
    rnn, lstm = curves["tanh RNN"][t - 1], curves["LSTM (forget bias 1)"][t - 1]
    ratio = _ratio(lstm, rnn)
    why = " (the tanh RNN's norm is 0: underflow)" if ratio is None and rnn == 0 else ""
    print(f"At lag {t - 1}: LSTM / tanh RNN = {_ratio_text(lstm, rnn, '.2e')}{why}.")
    fig = plots.gradient_decay(
        {
            **{name: _plottable(curve) for name, curve in curves.items()},
            "Pascanu bound (tanh RNN)": _plottable(bound),
        },
        title=f"adding problem, T={t}, at initialisation",
    )
    png = _save(fig, args.out / "gradient_decay.png")
    summary = {
        "seq_len": t,
        "hidden": h,
        "lags": lags,
        "norms": {name: [_finite_or_none(v) for v in curves[name]] for name in cells},
        "fits": {name: None if fit is None else fit._asdict() for name, fit in fits.items()},
        "fitted_lags": {name: _usable(curves[name]) for name in cells},
        "underflow_lag": underflow,
        "lstm_over_rnn_at_max_lag": ratio,
    }
    text = json.dumps(summary, indent=1, allow_nan=False)  # JSON has no NaN or Infinity
    (args.out / "gradients.json").write_text(text + "\n")
    print(f"Wrote {png} and {args.out / 'gradients.json'}.")
    return 0


def _fit_text(name: str, fit: diagnostics.DecayFit | None, curve: np.ndarray) -> str:
    """``name``'s fitted rate and label, and the lags fitted on when not all of them."""
    n = _usable(curve)
    if fit is None:
        return f"{name} n/a (fewer than 2 lags with a positive finite norm)"
    where = "" if n == curve.size else f", lags 0-{n - 1}"
    return f"{name} {fit.rate:.4f} ({fit.label}{where})"

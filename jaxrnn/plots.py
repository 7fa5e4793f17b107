"""Plots of the gradient diagnostics of :mod:`jaxrnn.diagnostics`.

matplotlib is an optional dependency, imported only when a function of this
module is called: ``pip install 'jaxrnn[plots]'``. Every function builds a
:class:`matplotlib.figure.Figure` directly, without pyplot, so nothing opens
a window and no backend is chosen; save one with ``fig.savefig("name.png")``
or show it in a notebook by evaluating it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["decay_vs_bound", "gradient_decay", "gradient_heatmap", "learning_curves", "run_curves"]

_GRAD_LABEL = r"$\|\partial L / \partial h_t\|$"


def _figure(figsize: tuple[float, float]) -> Figure:
    try:
        from matplotlib.figure import Figure
    except ImportError as e:  # pragma: no cover - exercised only without matplotlib
        raise ImportError("jaxrnn.plots needs matplotlib: pip install 'jaxrnn[plots]'") from e
    return Figure(figsize=figsize, layout="constrained")


def _curve(values: Any, name: str) -> np.ndarray:
    """``values`` as a 1-D float array, non-positive entries as NaN (left out on a log axis)."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"{name}: expected a non-empty 1-D array, got shape {v.shape}")
    return np.where(v > 0, v, np.nan)


def _lags(lags: Any, size: int) -> np.ndarray:
    if lags is None:
        return np.arange(size)
    lag = np.asarray(lags)
    if lag.shape != (size,):
        raise ValueError(f"lags: expected shape ({size},) (one per value), got {lag.shape}")
    return lag


def _finish(fig: Figure, xlabel: str, ylabel: str, title: str | None, log: bool = True) -> Figure:
    """Label the figure's one axes, add the legend and the title, log-scale the y axis."""
    ax = fig.axes[0]
    if log:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend()
    if title is not None:
        ax.set_title(title)
    return fig


def gradient_decay(
    curves: Mapping[str, Any],
    *,
    lags: Any = None,
    title: str | None = None,
    ylabel: str = _GRAD_LABEL,
    figsize: tuple[float, float] = (6.0, 4.0),
) -> Figure:
    """Gradient norm against lag on a log axis, one line per curve.

    Meant for several cells on the same data: a straight line on the log
    axis is a geometric decay (or growth), its slope the log of the rate
    that :func:`jaxrnn.diagnostics.classify_decay` fits. Non-positive values
    (e.g. padded steps) are left out.

    Args:
      curves: ``{label: norms [L]}``; entry ℓ of each curve is the norm at lag
        ``lags[ℓ]``. Curves may have different lengths when ``lags`` is None.
      lags: ``[L]`` lags shared by every curve; default ``0, 1, …``.
      title: the axes' title.
      ylabel: the y-axis label.
      figsize: the figure's size in inches.

    Returns:
      A :class:`matplotlib.figure.Figure` with one axes and one line per curve.

    Example:
      >>> import os, tempfile
      >>> import jax, jax.numpy as jnp, jaxrnn
      >>> from jaxrnn import diagnostics, plots
      >>> xs = jax.random.normal(jax.random.key(1), (30, 4, 2))
      >>> loss = lambda ys: ys[-1].sum()
      >>> curves = {}
      >>> for name, cell in [("elman", jaxrnn.elman(8)), ("gru", jaxrnn.gru(8))]:
      ...     params = cell.init(jax.random.key(0), 2)
      ...     norms = diagnostics.carry_grad_norms(cell, params, xs, loss)
      ...     curves[name] = norms[::-1].mean(axis=1)  # by lag, averaged over the batch
      >>> fig = plots.gradient_decay(curves, title="loss at the last step")
      >>> len(fig.axes[0].lines)
      2
      >>> with tempfile.TemporaryDirectory() as d:
      ...     fig.savefig(os.path.join(d, "decay.png"))
    """
    if not isinstance(curves, Mapping) or not curves:
        raise ValueError(f"curves: expected a non-empty dict {{label: norms}}, got {curves!r}")
    fig = _figure(figsize)
    ax = fig.add_subplot()
    for label, values in curves.items():
        v = _curve(values, f"curves[{label!r}]")
        ax.plot(_lags(lags, v.size), v, label=str(label))
    return _finish(fig, "lag (steps)", ylabel, title)


def gradient_heatmap(
    norms: Any,
    *,
    title: str | None = None,
    log: bool = True,
    xlabel: str = "time step t",
    ylabel: str = "training step",
    figsize: tuple[float, float] = (7.0, 4.0),
) -> Figure:
    """Heatmap of per-step gradient norms across training.

    Row s is the ‖∂L/∂h_t‖ curve recorded at training step s (e.g. one
    sequence's norms from :func:`jaxrnn.diagnostics.carry_grad_norms`), so
    one sees how far back the gradient reaches as training goes on.

    Args:
      norms: ``[steps, T]``.
      title: the axes' title.
      log: a logarithmic colour scale (non-positive values shown as missing).
      xlabel: the x-axis label.
      ylabel: the y-axis label.
      figsize: the figure's size in inches.

    Returns:
      A :class:`matplotlib.figure.Figure` with two axes: the heatmap and its colour bar.

    Example:
      >>> import numpy as np
      >>> from jaxrnn import plots
      >>> norms = 0.9 ** np.arange(50)[::-1] * np.linspace(1, 2, 10)[:, None]  # [steps, T]
      >>> fig = plots.gradient_heatmap(norms)
      >>> len(fig.axes)
      2
    """
    a = np.asarray(norms, dtype=np.float64)
    if a.ndim != 2 or a.size == 0:
        raise ValueError(f"norms: expected a non-empty array [steps, T], got shape {a.shape}")
    fig = _figure(figsize)
    ax = fig.add_subplot()
    color_norm: Any = None
    if log:
        from matplotlib.colors import LogNorm

        if not (a > 0).any():
            raise ValueError("norms: expected some positive values for log=True")
        a = np.ma.masked_less_equal(a, 0)
        color_norm = LogNorm()
    image = ax.imshow(a, aspect="auto", origin="lower", norm=color_norm, interpolation="nearest")
    fig.colorbar(image, ax=ax, label=_GRAD_LABEL)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title is not None:
        ax.set_title(title)
    return fig


def decay_vs_bound(
    measured: Any,
    bound: Any,
    *,
    lags: Any = None,
    title: str | None = None,
    ylabel: str = r"$\|\partial h_T / \partial h_{T-\ell}\|$",
    figsize: tuple[float, float] = (6.0, 4.0),
) -> Figure:
    r"""A measured norm against lag next to its theoretical bound, on a log axis.

    Typically ``measured`` is ``jacobian_norms(...).to_final[::-1]`` and
    ``bound`` is ``pascanu_bound(spectral_norm(w_hh), gamma_of(act), lags)``:
    the measured curve stays below the bound, and the gap shows how loose
    the bound is.

    Args:
      measured: ``[L]`` measured norms, entry ℓ at lag ``lags[ℓ]``.
      bound: ``[L]`` the bound at the same lags.
      lags: ``[L]``; default ``0, 1, …, L−1``.
      title: the axes' title.
      ylabel: the y-axis label.
      figsize: the figure's size in inches.

    Returns:
      A :class:`matplotlib.figure.Figure` with one axes and two lines (measured, bound).

    Example:
      >>> import jax, jax.numpy as jnp, jaxrnn
      >>> from jaxrnn import diagnostics, plots
      >>> cell = jaxrnn.elman(8, recurrent_init="orthogonal")
      >>> params = cell.init(jax.random.key(0), 2)
      >>> params = params._replace(w_hh=0.9 * params.w_hh)
      >>> xs = jax.random.normal(jax.random.key(1), (20, 2))
      >>> measured = diagnostics.jacobian_norms(cell, params, xs).to_final[::-1]
      >>> lam = diagnostics.spectral_norm(params.w_hh)
      >>> bound = diagnostics.pascanu_bound(lam, diagnostics.gamma_of("tanh"), jnp.arange(20))
      >>> fig = plots.decay_vs_bound(measured, bound)
      >>> [line.get_label() for line in fig.axes[0].lines]
      ['measured', 'bound']
    """
    m = _curve(measured, "measured")
    b = _curve(bound, "bound")
    if b.shape != m.shape:
        raise ValueError(f"bound: expected shape {m.shape} (that of measured), got {b.shape}")
    x = _lags(lags, m.size)
    fig = _figure(figsize)
    ax = fig.add_subplot()
    ax.plot(x, m, label="measured")
    ax.plot(x, b, linestyle="--", color="black", label="bound")
    return _finish(fig, "lag (steps)", ylabel, title)


def learning_curves(
    histories: Mapping[str, Any],
    *,
    key: str = "eval_loss",
    baseline: float | None = None,
    log: bool = True,
    title: str | None = None,
    figsize: tuple[float, float] = (6.0, 4.0),
) -> Figure:
    """One metric against training step for several runs, with the task's baseline.

    Args:
      histories: ``{label: history}``, each history a list of metric dicts
        with a ``"step"`` field (:attr:`jaxrnn.training.FitResult.history`, or
        the lines of a ``metrics.jsonl``); lines without ``key`` are skipped.
      key: the metric to plot.
      baseline: drawn as a dashed horizontal line (e.g. ``task.baseline``).
      log: a logarithmic y axis.
      title: the axes' title.
      figsize: the figure's size in inches.

    Returns:
      A :class:`matplotlib.figure.Figure` with one axes: one line per run,
      plus the baseline.

    Example:
      >>> from jaxrnn import plots
      >>> runs = {"rnn": [{"step": 10, "eval_loss": 0.17}, {"step": 20, "eval_loss": 0.16}],
      ...         "lstm": [{"step": 10, "eval_loss": 0.15}, {"step": 20, "eval_loss": 0.01}]}
      >>> fig = plots.learning_curves(runs, baseline=1 / 6)
      >>> len(fig.axes[0].lines)
      3
    """
    if not isinstance(histories, Mapping) or not histories:
        raise ValueError(
            f"histories: expected a non-empty dict {{label: history}}, got {histories!r}"
        )
    fig = _figure(figsize)
    ax = fig.add_subplot()
    for label, history in histories.items():
        points = [(line["step"], line[key]) for line in history if key in line]
        if not points:
            raise ValueError(f"histories[{label!r}]: no line has the metric {key!r}")
        steps, values = zip(*points, strict=True)
        ax.plot(steps, values, label=str(label))
    if baseline is not None:
        ax.axhline(baseline, color="grey", linestyle="--", label="baseline")
    return _finish(fig, "training step", key, title, log=log)


def run_curves(
    history: Any,
    *,
    baseline: float | None = None,
    title: str | None = None,
    figsize: tuple[float, float] = (11.0, 3.6),
) -> Figure:
    """One run at a glance: losses, the task's metric and the gradient norm against step.

    Args:
      history: the run's metric lines (:func:`jaxrnn.training.read_metrics`
        or :attr:`jaxrnn.training.FitResult.history`): dicts with ``step``,
        ``loss``, ``grad_norm`` and, where evaluated, ``eval_loss`` and
        ``eval_<metric>``; non-finite values are left out.
      baseline: the task's baseline loss, drawn dashed.
      title: the figure's title.
      figsize: the figure's size in inches.

    Returns:
      A :class:`matplotlib.figure.Figure` with three axes: training and
      held-out loss (log scale), the metric(s) (train and held-out), the
      gradient's global norm before clipping (log scale).

    Example:
      >>> from jaxrnn import plots
      >>> history = [{"step": 10, "loss": 0.5, "accuracy": 0.2, "grad_norm": 1.0},
      ...            {"step": 20, "loss": 0.3, "accuracy": 0.4, "grad_norm": 0.7,
      ...             "eval_loss": 0.35, "eval_accuracy": 0.38}]
      >>> [len(ax.lines) for ax in plots.run_curves(history, baseline=0.6).axes]
      [3, 2, 1]
    """
    lines = [line for line in history if isinstance(line, Mapping) and "step" in line]
    if not lines:
        raise ValueError("history: expected metric lines with a 'step', got none")
    fig = _figure(figsize)
    ax_loss, ax_metric, ax_grad = fig.subplots(1, 3)
    skip = {"step", "loss", "grad_norm", "lr", "skipped", "steps_per_s", "eval_loss"}
    metrics = sorted(
        k
        for k in {k for line in lines for k in line} - skip
        if not k.startswith("eval_") and all(isinstance(x.get(k, 0.0), int | float) for x in lines)
    )

    def draw(ax: Any, key: str, label: str) -> None:
        points = [
            (x["step"], x[key])
            for x in lines
            if isinstance(x.get(key), int | float) and np.isfinite(x[key])
        ]
        if points:
            ax.plot(
                *zip(*points, strict=True), label=label, marker="." if len(points) < 30 else None
            )

    draw(ax_loss, "loss", "train")
    draw(ax_loss, "eval_loss", "held-out")
    if baseline is not None:
        ax_loss.axhline(baseline, color="grey", linestyle="--", label="baseline")
    ax_loss.set_yscale("log")
    ax_loss.set_ylabel("loss")
    for name in metrics:
        draw(ax_metric, name, f"train {name}")
        draw(ax_metric, f"eval_{name}", f"held-out {name}")
    ax_metric.set_ylabel(", ".join(metrics) or "metric")
    draw(ax_grad, "grad_norm", "‖∇L‖ before clipping")
    ax_grad.set_yscale("log")
    ax_grad.set_ylabel("gradient norm")
    for ax in (ax_loss, ax_metric, ax_grad):
        ax.set_xlabel("training step")
        if ax.lines:
            ax.legend()
    if title is not None:
        fig.suptitle(title)
    return fig

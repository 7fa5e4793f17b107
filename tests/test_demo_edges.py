"""``jaxrnn demo`` and ``jaxrnn gradients`` at the edges: one step, short sequences, underflow."""

import json

import numpy as np
import pytest

from jaxrnn import _demo, diagnostics
from jaxrnn._cli import main

TINY = ["--hidden", "4", "--batch-size", "2"]


def _strict_json(text):
    """``json.loads`` that refuses the NaN and Infinity tokens, which are not JSON."""

    def refuse(token):
        raise ValueError(f"not JSON: {token}")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("command", ["demo", "gradients"])
def test_a_sequence_too_short_for_the_adding_problem_exits_2_with_one_line(
    command, tmp_path, capsys
):
    with pytest.raises(SystemExit) as e:
        main([command, "--seq-len", "1", *TINY, "--out", str(tmp_path)])
    assert e.value.code == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(f"jaxrnn {command}: error: --seq-len: ")
    assert captured.err.count("\n") == 1
    assert "expected an integer >= 2" in captured.err and "got 1" in captured.err
    assert "Traceback" not in captured.err and captured.out == ""


def test_demo_with_one_step_and_two_step_sequences(tmp_path, capsys):
    # One training step leaves no throughput to measure (steps_per_second is None).
    assert main(["demo", "--steps", "1", "--seq-len", "2", *TINY, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.startswith(("tanh RNN ", "LSTM "))]
    assert len(rows) == 2
    for row in rows:
        assert row[-1] == "n/a"  # steps/s
        assert np.isfinite([float(row[-3]), float(row[-2])]).all()  # the ratios at lag 1
    assert "grad lag 1 / lag 0" in out
    for name in ("learning_curves.png", "gradient_decay.png", "rnn/summary.json"):
        assert (tmp_path / name).is_file()
    # A second demo into the same directory moves the first one's runs aside.
    assert main(["demo", "--steps", "1", "--seq-len", "2", *TINY, "--out", str(tmp_path)]) == 0
    assert len(list(tmp_path.glob("lstm.old-*/metrics.jsonl"))) == 1


def test_gradients_over_a_sequence_where_the_rnn_underflows(tmp_path, capsys):
    t = 1000
    assert main(["gradients", "--seq-len", str(t), "--hidden", "8", "--batch-size", "2",
                 "--out", str(tmp_path)]) == 0  # fmt: skip
    out = capsys.readouterr().out
    report = _strict_json((tmp_path / "gradients.json").read_text())
    assert (tmp_path / "gradient_decay.png").is_file()
    norms = report["norms"]
    assert all(len(v) == t and None not in v for v in norms.values())
    rnn = np.asarray(norms["tanh RNN"])
    zeros = np.flatnonzero(rnn == 0)
    assert zeros.size, "the setting is meant to underflow: the tanh RNN's norms decay ~0.4x a step"
    n = int(zeros[0])
    assert (rnn[:n] > 0).all()
    assert report["underflow_lag"]["tanh RNN"] == n and report["fitted_lags"]["tanh RNN"] == n
    assert n in report["lags"] and report["lags"] == sorted(set(report["lags"]))
    # The decay is fitted on the lags before the underflow.
    assert report["fits"]["tanh RNN"] == diagnostics.classify_decay(rnn[:n])._asdict()
    assert f"tanh RNN: ‖∂L/∂h_t‖ underflows to 0 in float64 from lag {n} on." in out
    assert f"tanh RNN {report['fits']['tanh RNN']['rate']:.4f} (vanishing, lags 0-{n - 1})" in out
    (row,) = [line for line in out.splitlines() if line.split()[:1] == [str(n)]]
    assert row.split()[1:3] == ["0", "(underflow)"]  # the tanh RNN's column
    # No ratio with a zero denominator: n/a in the text, null in the JSON.
    assert report["lstm_over_rnn_at_max_lag"] is None
    assert f"At lag {t - 1}: LSTM / tanh RNN = n/a (the tanh RNN's norm is 0: underflow)." in out


def test_gradients_at_two_steps_and_the_largest_seed(tmp_path, capsys):
    seed = str(2**63 - 1)
    argv = ["gradients", "--seq-len", "2", *TINY, "--seed", seed, "--out", str(tmp_path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    report = _strict_json((tmp_path / "gradients.json").read_text())
    assert report["lags"] == [0, 1]
    table = [line.split()[0] for line in out.splitlines() if line[:5].strip().isdigit()]
    assert table == ["0", "1"]  # one row per lag, lag T-1 = 1 not repeated
    assert all(len(v) == 2 and min(v) > 0 for v in report["norms"].values())
    assert set(report["underflow_lag"].values()) == {None}
    norms = report["norms"]
    expected = norms["LSTM (forget bias 1)"][1] / norms["tanh RNN"][1]
    assert report["lstm_over_rnn_at_max_lag"] == pytest.approx(expected, rel=1e-12)


def test_a_decay_with_fewer_than_two_usable_lags_is_not_fitted():
    curve = np.array([0.3, 0.0, 0.0])
    assert _demo._usable(curve) == 1 and _demo._underflow_lag(curve) == 1
    assert _demo._fit(curve) is None
    assert _demo._fit_text("GRU", None, curve) == (
        "GRU n/a (fewer than 2 lags with a positive finite norm)"
    )
    assert _demo._usable(np.array([0.3, np.inf, 0.1])) == 1  # not finite: not fitted either


@pytest.mark.parametrize(
    ("num", "den", "text"),
    [(1.0, 4.0, "2.50e-01"), (0.0, 4.0, "0 (underflow)"), (1.0, 0.0, "n/a"), (0.0, 0.0, "n/a"),
     (np.inf, 1.0, "n/a"), (1.0, np.nan, "n/a")],
)  # fmt: skip
def test_ratios_never_divide_by_zero(num, den, text):
    assert _demo._ratio_text(np.float64(num), np.float64(den), ".2e") == text


def test_the_demo_comparison_when_the_rnn_underflows():
    rnn, lstm = np.array([0.5, 1e-200, 0.0, 0.0]), np.array([0.5, 0.1, 0.05, 0.025])
    assert _demo._comparison(rnn, lstm) == (
        "At initialisation the LSTM passes 5.0e-02 of its gradient back to the first step, "
        "while the tanh RNN's gradient underflows to 0 in float64 from lag 2 on: the vanishing "
        "gradient that the LSTM's gates were designed to fix."
    )
    assert _demo._comparison(rnn, np.array([0.5, 0.1, 0.0, 0.0])) == (
        "At initialisation the tanh RNN's gradient underflows to 0 in float64 from lag 2 on; "
        "the LSTM's gradient underflows to 0 in float64 from lag 2 on: the two cannot be "
        "compared."
    )
    rnn = np.array([0.5, 0.01, 0.001, 0.000125])  # keeps 2.5e-4 of its gradient, the LSTM 5e-2
    assert _demo._comparison(rnn, lstm).startswith(
        "At initialisation the LSTM passes 2.0e+02x more of its gradient back"
    )
    plotted = _demo._plottable(np.array([1.0, 0.0, np.inf, 1e-300]))
    np.testing.assert_array_equal(plotted, [1.0, np.nan, np.nan, 1e-300])

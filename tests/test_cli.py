"""The ``jaxrnn`` command line."""

import subprocess
import sys

import pytest

from jaxrnn._cli import main


def test_showcase_runs_and_reports_every_model(capsys):
    assert (
        main(
            ["showcase", "--seq-len", "12", "--batch-size", "2", "--hidden", "4", "--repeats", "1"]
        )
        == 0
    )
    out = capsys.readouterr().out
    for name in ("Elman tanh", "LSTM, forget bias 1", "GRU, chrono init", "bidirectional LSTM"):
        assert name in out
    assert "(12, 2, 8)" in out  # the bidirectional stack concatenates 2 x H features


def test_bad_flags_exit_with_a_message_and_no_traceback():
    result = subprocess.run(
        [sys.executable, "-m", "jaxrnn", "showcase", "--hidden", "0"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "--hidden: expected a positive integer, got 0" in result.stderr
    assert "Traceback" not in result.stderr


def test_help():
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0

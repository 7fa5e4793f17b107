"""The ``jaxrnn`` command line."""

import json
import math
import subprocess
import sys

import jax
import numpy as np
import pytest

import jaxrnn
from jaxrnn._cli import main
from tests.helpers import exit_code


def test_showcase_runs_and_reports_every_model(capsys):
    assert (
        main(["showcase", "--seq-len", "1", "--batch-size", "2", "--hidden", "4", "--repeats", "1"])
        == 0
    )
    out = capsys.readouterr().out
    for name in ("Elman tanh", "LSTM, forget bias 1", "GRU, chrono init", "bidirectional LSTM"):
        assert name in out
    assert "(1, 2, 8)" in out  # the bidirectional stack concatenates 2 x H features; T=1 works


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


def _run(*args):
    return subprocess.run(
        [sys.executable, "-m", "jaxrnn", *args], capture_output=True, text=True, check=False
    )


def test_train_writes_metrics_and_summary(tmp_path, capsys):
    out = tmp_path / "run"
    argv = [
        "train",
        "--task",
        "copy",
        "--cell",
        "gru",
        "--seq-len",
        "5",
        "--hidden",
        "8",
        "--steps",
        "6",
        "--batch-size",
        "4",
        "--log-every",
        "2",
        "--eval-every",
        "3",
        "--checkpoint-every",
        "3",
        "--carry-grads",
        "--quiet",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [2, 3, 4, 6]
    assert len(lines[1]["carry_grad_norms"]) == 25  # T + 20 steps of the copy task
    assert (out / "carry_grad_heatmap.png").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 6 and summary["compiles"] == 1
    assert summary["baseline"] == pytest.approx(10 * math.log(8) / 25)
    assert {"final_eval_loss", "wall_seconds"} <= set(summary)
    assert main([*argv[:-2], "--steps", "9", "--out", str(out), "--resume"]) == 0
    assert json.loads((out / "summary.json").read_text())["resumed_from"] == 6
    assert "final eval loss" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--task", "sorting"], "argument --task: invalid choice: 'sorting' (choose from "),
        (["--cell", "transformer"], "argument --cell: invalid choice: 'transformer' (choose from "),
        (["--hidden", "-3"], "argument --hidden: expected a positive integer, got -3"),
        (["--lr", "0"], "argument --lr: expected a positive number, got 0"),
        (["--resume"], "--resume: nothing to resume, no run in"),
        (["--devices", "1024", "--batch-size", "1024"], "--devices: expected at most "),
        (["--dtype", "float16"], "argument --dtype: invalid choice: 'float16'"),
        (["--task", "adding-hs97", "--seq-len", "5"], "--seq-len: seq_len: expected"),
    ],
)
def test_train_bad_flags_exit_with_one_line(tmp_path, capsys, flags, message):
    assert exit_code(["train", "--out", str(tmp_path / "run"), *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jaxrnn train: error: ") and err.count("\n") == 1
    assert message in err
    valid = {
        "--task": jaxrnn.tasks.NAMES,
        "--cell": ("elman", "irnn", "lstm-chrono", "gru", "layernorm-lstm"),
        "--dtype": ("float32", "bfloat16"),
    }
    for flag, names in valid.items():
        if f"{flag}: invalid choice" in message:  # the valid choices are listed
            assert all(name in err for name in names)


def test_train_with_an_unwritable_out_is_a_one_line_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = _run("train", "--out", str(blocker / "run"), "--steps", "1")
    assert result.returncode == 2
    assert f"--out: cannot write to {blocker / 'run'}" in result.stderr
    assert "Traceback" not in result.stderr


def test_demo_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["demo", "--help"])
    assert e.value.code == 0
    assert "adding problem" in capsys.readouterr().out


def test_gradients_command(tmp_path, capsys):
    argv = ["gradients", "--seq-len", "12", "--hidden", "6", "--batch-size", "3"]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "gradients.json").read_text())
    assert set(report["norms"]) == {"tanh RNN", "LSTM (forget bias 1)", "GRU"}
    assert all(len(v) == 12 for v in report["norms"].values())
    assert (tmp_path / "gradient_decay.png").is_file()


def test_init_names_are_the_cells_presets():
    from jaxrnn import _cli, _initializers

    assert _cli.INIT_NAMES == _initializers.PRESETS


@pytest.mark.parametrize(
    ("cell", "init", "expected"),
    [
        ("gru", "flax", lambda: jaxrnn.gru(4, init="flax")),
        ("lstm", "keras", lambda: jaxrnn.lstm(4, init="keras", forget_bias=1.0)),
        ("lstm", "flax", lambda: jaxrnn.lstm(4, init="flax", forget_bias=1.0)),  # lstm's own bias
        ("lstm-chrono", "flax", lambda: jaxrnn.lstm(4, init="flax", chrono=5)),
        (
            "irnn",
            "keras",
            lambda: jaxrnn.elman(4, activation="relu", recurrent_init="identity", init="keras"),
        ),
        (
            "layernorm-lstm",
            "keras",
            lambda: jaxrnn.layernorm_lstm(4, forget_bias=1.0, init="keras"),
        ),
        ("elman", "pytorch", lambda: jaxrnn.elman(4)),
    ],
)
def test_the_init_flag_builds_the_cell_with_the_preset(cell, init, expected):
    from jaxrnn import _cli, _commands

    args = _cli._parser().parse_args(
        ["train", "--cell", cell, "--init", init, "--hidden", "4", "--seq-len", "5"]
    )
    _cli.resolve_train(args)
    config = _cli.train_config(args)
    assert ("init" in config) == (init != "pytorch")  # left out at its default
    built = _commands.Setup(config).cell.init(jax.random.key(0), 3)
    want = expected().init(jax.random.key(0), 3)
    for u, v in zip(jax.tree.leaves(built), jax.tree.leaves(want), strict=True):
        np.testing.assert_array_equal(u, v)


def test_train_records_init_and_refuses_to_resume_with_another(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--cell", "gru", "--seq-len", "4", "--hidden", "4", "--steps", "2",
            "--batch-size", "2", "--quiet", "--out", str(out)]  # fmt: skip
    assert main([*argv, "--init", "flax"]) == 0
    assert json.loads((out / "summary.json").read_text())["config"]["init"] == "flax"
    capsys.readouterr()
    assert exit_code([*argv, "--init", "keras", "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.endswith("--resume: the run was made with other flags: --init 'flax' there, "
                        "'keras' now\n")  # fmt: skip
    assert exit_code([*argv, "--resume"]) == 2  # no --init: the default, pytorch
    assert "--init 'flax' there, 'pytorch' now" in capsys.readouterr().err
    assert main([*argv, "--init", "flax", "--steps", "3", "--resume"]) == 0
    plain = tmp_path / "plain"
    assert main([*argv[:-1], str(plain)]) == 0
    assert "init" not in json.loads((plain / "summary.json").read_text())["config"]
    capsys.readouterr()
    assert exit_code([*argv[:-1], str(plain), "--init", "flax", "--resume"]) == 2
    assert "--init 'pytorch' there, 'flax' now" in capsys.readouterr().err


def test_an_unknown_init_flag_lists_the_presets(tmp_path, capsys):
    assert exit_code(["train", "--out", str(tmp_path / "run"), "--init", "torch"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jaxrnn train: error: argument --init: invalid choice: 'torch'")
    assert all(name in err for name in ("pytorch", "flax", "keras")) and err.count("\n") == 1

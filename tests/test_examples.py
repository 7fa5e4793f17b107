"""examples/seq2seq_linen.py: Flax's seq2seq example ported to jaxrnn.linen.

The port claims that only the model definition changes: with Flax's LSTM
weights mapped to jaxrnn's layout, the jaxrnn model and the pure-Flax model
give the same loss and the same greedy decodes on a batch. Training runs a
few steps at small sizes in-process.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

PATH = Path(__file__).resolve().parents[1] / "examples" / "seq2seq_linen.py"


@pytest.fixture(scope="module")
def s2s() -> Any:
    spec = importlib.util.spec_from_file_location("seq2seq_linen", PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["seq2seq_linen"] = module
    spec.loader.exec_module(module)
    return module


def test_data_encodes_and_decodes_the_addition_task(s2s):
    batch = next(s2s.batches(64, 2, seed=0))
    query_len, answer_len = s2s.max_lengths(2)
    assert batch["query"].shape == (64, query_len, s2s.VOCAB)
    assert batch["answer"].shape == (64, answer_len, s2s.VOCAB)
    np.testing.assert_array_equal(batch["query"].sum(-1), 1)  # one-hot, padding included
    for query, answer in zip(s2s.decode(batch["query"]), s2s.decode(batch["answer"]), strict=True):
        a, b = query.split("+")
        assert answer == f"={int(a) + int(b)}"
    lengths = np.asarray(s2s.sequence_lengths(jnp.asarray(batch["answer"])))
    np.testing.assert_array_equal(lengths, [len(a) + 1 for a in s2s.decode(batch["answer"])])


def test_training_a_few_steps_decreases_the_loss_and_decodes(s2s):
    result = s2s.train(
        steps=40, hidden_size=16, batch_size=32, digits=1, eval_size=64, verbose=False
    )
    losses = result["losses"]
    assert len(losses) == 40 and np.all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])
    assert 0.0 <= result["accuracy"] <= 1.0
    net, params = result["model"], result["state"].params
    batch = next(s2s.batches(8, 1, seed=3))
    predictions = s2s.greedy_decode(net, params, batch["query"], batch["answer"].shape[1])
    assert predictions.shape == (8, batch["answer"].shape[1] - 1, s2s.VOCAB)
    np.testing.assert_array_equal(predictions.sum(-1), 1)  # one-hot greedy choices
    assert all(isinstance(text, str) for text in s2s.decode(predictions))


def flax_lstm(p: dict[str, Any]) -> dict[str, Any]:
    """nn.LSTMCell's params for jaxrnn's: kernels are the transposed gate blocks."""
    hidden = p["w_hh"].shape[1]
    w_ih, w_hh = p["w_ih"].reshape(4, hidden, -1), p["w_hh"].reshape(4, hidden, hidden)
    bias = (p["b_ih"] + p["b_hh"]).reshape(4, hidden)
    out = {}
    for k, gate in enumerate("ifgo"):
        out[f"i{gate}"] = {"kernel": w_ih[k].T}
        out[f"h{gate}"] = {"kernel": w_hh[k].T, "bias": bias[k]}
    return out


def test_jaxrnn_model_and_flax_model_with_mapped_weights_agree(s2s):
    digits = 2
    ours = s2s.Seq2seq(16, model="jaxrnn")
    theirs = s2s.Seq2seq(16, model="flax")
    params = s2s.create_state(ours, jax.random.key(0), digits, 1e-3).params
    # The cells passed to nn.RNN belong to Seq2seq (Flax's rule for modules built in a
    # compact method): Flax's encoder cell is "encoder_cell", jaxrnn's encoder "encoder".
    mapped = {
        "encoder_cell": flax_lstm(params["encoder"]["first"]["forward"]),
        "decoder_cell": {
            "lstm": flax_lstm(params["decoder_cell"]["lstm"]),
            "dense": params["decoder_cell"]["dense"],
        },
    }
    flax_params = s2s.create_state(theirs, jax.random.key(0), digits, 1e-3).params
    assert jax.tree.structure(mapped) == jax.tree.structure(flax_params)
    batch = next(s2s.batches(32, digits, seed=1))

    def loss(model, params):
        logits, _ = model.apply({"params": params}, batch["query"], batch["answer"])
        return s2s.masked_cross_entropy(logits, jnp.asarray(batch["answer"][:, 1:]))

    ours_loss, theirs_loss = loss(ours, params), loss(theirs, mapped)
    np.testing.assert_allclose(ours_loss, theirs_loss, rtol=1e-5)
    answer_len = batch["answer"].shape[1]
    np.testing.assert_array_equal(
        s2s.greedy_decode(ours, params, batch["query"], answer_len),
        s2s.greedy_decode(theirs, mapped, batch["query"], answer_len),
    )


def test_command_line_runs(s2s, capsys):
    s2s.main(["--steps", "2", "--hidden-size", "8", "--batch-size", "8", "--digits", "1"])
    out = capsys.readouterr().out
    assert "exact-match accuracy on 1000 new queries" in out

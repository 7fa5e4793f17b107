"""Flax's seq2seq example (an LSTM encoder-decoder that learns addition), ported to jaxrnn.linen.

The task of Flax's ``examples/seq2seq``: read a query such as ``"12+345"``
character by character and write its sum, ``"=357"``. An LSTM encoder reads
the one-hot query; its final carry starts an LSTM decoder that, in training,
reads the true answer shifted by one step (teacher forcing) and, in
evaluation, reads back its own previous prediction (greedy decoding).
Accuracy is exact match: every character of the answer, through its
end-of-sequence token, right.

**The port changes the model definition only.** Everything else here (the
data, the loss, ``TrainState``, ``optax``, the jitted steps) is Flax code
as it was. The lines that change, both kept in :class:`Seq2seq` behind
``model="flax" | "jaxrnn"`` so that the two run side by side::

    # Flax                                             # jaxrnn
    nn.RNN(nn.LSTMCell(H), return_carry=True)          jaxrnn.linen.LSTM(H, return_carry=True)
    nn.LSTMCell(H)            # decoder cell           jaxrnn.linen.LSTMCell(H)

The encoder becomes a jaxrnn module (the whole sequence on the fused BPTT
path, padding masked by ``seq_lengths``); the decoder cell, stepped inside
``nn.RNN`` one character at a time (it must be, to feed back its greedy
predictions), becomes a jaxrnn cell. Both return Flax's carry ``(c, h)``,
so the encoder's final carry starts the decoder unchanged.
``nn.RNN(jaxrnn.linen.LSTMCell(H), return_carry=True)`` also works for the
encoder, with the same params as ``jaxrnn.linen.LSTM``'s one cell.

Initialisation: jaxrnn's cells start from PyTorch's U(±1/√H) by default;
``--init flax`` gives Flax's (LeCun-normal input kernels, orthogonal
recurrent kernels, zero biases): ``cell_options={"init": "flax"}``.

Run::

    python examples/seq2seq_linen.py --steps 4000               # jaxrnn model, PyTorch init
    python examples/seq2seq_linen.py --steps 4000 --init flax   # jaxrnn model, Flax's init
    python examples/seq2seq_linen.py --steps 4000 --model flax  # Flax's own cells
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Iterator
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.core import FrozenDict
from flax.training import train_state

import jaxrnn.linen

Array = Any

# ------------------------------------------------------------------------------- data

PAD, EOS = 0, 1
CHARS = "0123456789+="
VOCAB = len(CHARS) + 2  # the characters, the padding and the end-of-sequence token
TOKEN = {c: i + 2 for i, c in enumerate(CHARS)}
CHAR = {i: c for c, i in TOKEN.items()}


def max_lengths(digits: int) -> tuple[int, int]:
    """Lengths of a padded query ``a+b<eos>`` and answer ``=sum<eos>``, a and b < 10**digits."""
    return 2 * digits + 2, digits + 3


def encode(texts: list[str], length: int) -> np.ndarray:
    """One-hot ``[len(texts), length, VOCAB]`` of each text, then EOS, then padding."""
    out = np.zeros((len(texts), length, VOCAB), np.float32)
    for b, text in enumerate(texts):
        tokens = [TOKEN[c] for c in text] + [EOS]
        tokens += [PAD] * (length - len(tokens))
        out[b, np.arange(length), tokens] = 1.0
    return out


def decode(one_hot: np.ndarray) -> list[str]:
    """The texts of one-hot ``[B, T, VOCAB]``, each up to its first EOS."""
    texts = []
    for tokens in np.asarray(one_hot).argmax(-1):
        chars = []
        for t in tokens:
            if t == EOS:
                break
            chars.append(CHAR.get(int(t), "_"))
        texts.append("".join(chars))
    return texts


def batches(batch_size: int, digits: int, seed: int) -> Iterator[dict[str, np.ndarray]]:
    """Endless batches of ``{'query': [B, Tq, V], 'answer': [B, Ta, V]}``, as Flax's example.

    The first addend is below ``min(100, 10**digits)`` and the second below ``10**digits`` (Flax's
    choice); the answer starts with the decoder's start token ``=``.
    """
    rng = np.random.default_rng(seed)
    query_len, answer_len = max_lengths(digits)
    while True:
        a = rng.integers(0, min(100, 10**digits), batch_size)
        b = rng.integers(0, 10**digits, batch_size)
        small, large = np.minimum(a, b), np.maximum(a, b)
        queries = [f"{x}+{y}" for x, y in zip(small, large, strict=True)]
        answers = [f"={x + y}" for x, y in zip(small, large, strict=True)]
        yield {"query": encode(queries, query_len), "answer": encode(answers, answer_len)}


def sequence_lengths(one_hot: Array) -> Array:
    """Each sequence's number of tokens through its EOS (the whole length without one)."""
    is_eos = one_hot[..., EOS] > 0
    return jnp.where(is_eos.any(-1), jnp.argmax(is_eos, -1) + 1, one_hot.shape[-2])


# ------------------------------------------------------------------------------ model


class DecoderCell(nn.RNNCellBase):
    """One decoder step: an LSTM step, logits, and the greedy prediction fed back.

    Attributes:
      features: the LSTM's hidden size.
      vocab_size: the number of tokens.
      teacher_force: read the given input (training) instead of the previous prediction.
      model: ``"jaxrnn"`` or ``"flax"``: whose LSTM cell.
      cell_options: options of jaxrnn's cell (``{"init": "flax"}``).
    """

    features: int
    vocab_size: int
    teacher_force: bool
    model: str = "jaxrnn"
    cell_options: Any = None

    @nn.compact
    def __call__(self, carry: Any, x: Array) -> tuple[Any, tuple[Array, Array]]:
        """``((lstm_carry, prediction), (logits, prediction))`` for one step's input ``x``."""
        lstm_carry, previous = carry
        if not self.teacher_force:
            x = previous
        if self.model == "flax":
            lstm = nn.LSTMCell(self.features, name="lstm")  # Flax
        else:
            lstm = jaxrnn.linen.LSTMCell(  # jaxrnn
                self.features, cell_options=self.cell_options or {}, name="lstm"
            )
        lstm_carry, y = lstm(lstm_carry, x)
        logits = nn.Dense(self.vocab_size, name="dense")(y)
        prediction = jax.nn.one_hot(jnp.argmax(logits, -1), self.vocab_size, dtype=x.dtype)
        return (lstm_carry, prediction), (logits, prediction)

    @property
    def num_feature_axes(self) -> int:
        """One feature axis, as Flax's cells."""
        return 1


class Seq2seq(nn.Module):
    """The encoder-decoder of Flax's example; ``model`` picks Flax's LSTM cells or jaxrnn's.

    Attributes:
      hidden_size: the LSTMs' hidden size.
      vocab_size: the number of tokens.
      teacher_force: feed the decoder the true answer (training) or its own
        greedy predictions (evaluation).
      model: ``"jaxrnn"`` (default) or ``"flax"``.
      cell_options: options of jaxrnn's cells, e.g. ``{"init": "flax"}``.
    """

    hidden_size: int
    vocab_size: int = VOCAB
    teacher_force: bool = True
    model: str = "jaxrnn"
    cell_options: Any = None

    @nn.compact
    def __call__(self, query: Array, answer: Array) -> tuple[Array, Array]:
        """``(logits, predictions)`` ``[B, Ta - 1, V]`` for the answer's steps after ``=``."""
        if self.model == "flax":
            encoder = nn.RNN(nn.LSTMCell(self.hidden_size, name="encoder_cell"), return_carry=True)
        else:
            encoder = jaxrnn.linen.LSTM(
                self.hidden_size,
                return_carry=True,
                cell_options=self.cell_options or {},
                name="encoder",
            )
        decoder = nn.RNN(
            DecoderCell(
                self.hidden_size,
                self.vocab_size,
                self.teacher_force,
                self.model,
                self.cell_options,
                name="decoder_cell",
            )
        )
        carry, _ = encoder(query, seq_lengths=sequence_lengths(query))
        logits, predictions = decoder(answer[:, :-1], initial_carry=(carry, answer[:, 0]))
        return logits, predictions


# ---------------------------------------------------------------- training (Flax's code)


def masked_cross_entropy(logits: Array, labels: Array) -> Array:
    """The mean cross entropy of the answer's tokens through its EOS."""
    mask = jnp.arange(labels.shape[1])[None, :] < sequence_lengths(labels)[:, None]
    xe = -jnp.sum(jax.nn.log_softmax(logits) * labels, axis=-1)
    return jnp.sum(xe * mask) / jnp.sum(mask)


def exact_match(predictions: Array, labels: Array) -> Array:
    """The fraction of answers whose tokens through EOS are all predicted right."""
    mask = jnp.arange(labels.shape[1])[None, :] < sequence_lengths(labels)[:, None]
    right = jnp.argmax(predictions, -1) == jnp.argmax(labels, -1)
    return jnp.mean(jnp.all(right | ~mask, axis=-1))


def create_state(
    model: Seq2seq, key: Array, digits: int, learning_rate: float
) -> train_state.TrainState:
    """A ``TrainState`` with the model's initial params and Adam."""
    query_len, answer_len = max_lengths(digits)
    params = model.init(
        key,
        jnp.ones((1, query_len, VOCAB), jnp.float32),
        jnp.ones((1, answer_len, VOCAB), jnp.float32),
    )["params"]
    return train_state.TrainState.create(
        apply_fn=model.apply, params=params, tx=optax.adam(learning_rate)
    )


def loss_fn(params: Any, state: train_state.TrainState, batch: dict[str, Array]) -> Array:
    """The teacher-forced loss of one batch."""
    logits, _ = state.apply_fn({"params": params}, batch["query"], batch["answer"])
    return masked_cross_entropy(logits, batch["answer"][:, 1:])


@jax.jit
def train_step(
    state: train_state.TrainState, batch: dict[str, Array]
) -> tuple[train_state.TrainState, Array]:
    """One Adam step on the teacher-forced loss."""
    loss, grads = jax.value_and_grad(loss_fn)(state.params, state, batch)
    return state.apply_gradients(grads=grads), loss


@functools.partial(jax.jit, static_argnums=(0, 3))
def greedy_decode(model: Seq2seq, params: Any, query: Array, answer_len: int) -> Array:
    """One-hot predictions ``[B, answer_len - 1, V]``, each step reading the previous one."""
    start = (
        jnp.zeros((query.shape[0], answer_len, VOCAB), query.dtype).at[:, :, TOKEN["="]].set(1.0)
    )
    _, predictions = model.clone(teacher_force=False).apply({"params": params}, query, start)
    return predictions


def evaluate(model: Seq2seq, params: Any, batch: dict[str, Array]) -> float:
    """Exact-match accuracy of greedy decoding on ``batch``."""
    predictions = greedy_decode(model, params, batch["query"], batch["answer"].shape[1])
    return float(exact_match(predictions, batch["answer"][:, 1:]))


def train(
    *,
    steps: int,
    hidden_size: int = 128,
    batch_size: int = 128,
    digits: int = 3,
    learning_rate: float = 3e-3,
    model: str = "jaxrnn",
    init: str = "pytorch",
    seed: int = 0,
    log_every: int = 100,
    eval_size: int = 1000,
    verbose: bool = True,
) -> dict[str, Any]:
    """Train for ``steps`` steps; return the losses, the final accuracy and the state.

    Returns:
      A dict with ``losses`` (one per step), ``accuracy`` (greedy exact match
      on ``eval_size`` new examples), ``seconds`` (training time after the
      first, compiling, step), ``state`` and ``model``.
    """
    options = None if init == "pytorch" else FrozenDict({"init": init})
    net = Seq2seq(hidden_size, model=model, cell_options=options)
    state = create_state(net, jax.random.key(seed), digits, learning_rate)
    data = batches(batch_size, digits, seed)
    losses: list[float] = []
    start = time.perf_counter()
    for step in range(steps):
        state, loss = train_step(state, next(data))
        losses.append(float(loss))
        if step == 0:
            start = time.perf_counter()
        if verbose and (step + 1) % log_every == 0:
            recent = np.mean(losses[-log_every:])
            print(f"step {step + 1:5d}  loss {recent:.4f}  ({time.perf_counter() - start:.0f} s)")
    seconds = time.perf_counter() - start
    test = next(batches(eval_size, digits, seed + 1))
    accuracy = evaluate(net, state.params, test)
    if verbose:
        shown = next(batches(5, digits, seed + 2))
        predictions = greedy_decode(net, state.params, shown["query"], shown["answer"].shape[1])
        for q, p, a in zip(
            decode(shown["query"]), decode(predictions), decode(shown["answer"]), strict=True
        ):
            print(f"  {q:>8} ={p:<5} {'ok' if '=' + p == a else 'wrong: ' + a}")
        print(f"exact-match accuracy on {eval_size} new queries: {accuracy:.3f}")
    return {
        "losses": losses,
        "accuracy": accuracy,
        "seconds": seconds,
        "state": state,
        "model": net,
    }


def main(argv: list[str] | None = None) -> None:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--digits", type=int, default=3, help="the second addend's digits")
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--model", choices=("jaxrnn", "flax"), default="jaxrnn")
    parser.add_argument("--init", choices=("pytorch", "flax", "keras"), default="pytorch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-every", type=int, default=100)
    args = parser.parse_args(argv)
    train(
        steps=args.steps,
        hidden_size=args.hidden_size,
        batch_size=args.batch_size,
        digits=args.digits,
        learning_rate=args.learning_rate,
        model=args.model,
        init=args.init,
        seed=args.seed,
        log_every=args.log_every,
    )


if __name__ == "__main__":
    main()

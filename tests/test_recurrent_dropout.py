"""Recurrent (variational) dropout: one mask per sequence, none at evaluation, unbiased."""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jaxrnn
from jaxrnn import training

I, H, B, T = 3, 5, 2, 4


def _probe(hidden: int) -> jaxrnn.Cell:
    """A user's cell whose output is the hidden state its step reads; its carry stays at ones."""

    def init(key, input_size, dtype=jnp.float32):
        return jnp.zeros((), dtype)

    def initial_carry(batch_shape=(), dtype=jnp.float32):
        return jnp.ones((*batch_shape, hidden), dtype)

    def step(params, h, x):
        return jnp.ones_like(h), h

    return jaxrnn.Cell(init, initial_carry, step)


@pytest.mark.parametrize("batch_shape", [(), (B,)])
def test_one_mask_for_every_step_of_a_sequence(batch_shape):
    rate = 0.4
    cell = jaxrnn.recurrent_dropout(_probe(64), rate)
    carry = cell.draw(jax.random.key(0), cell.initial_carry(batch_shape, jnp.float64))
    xs = jnp.zeros((T, *batch_shape, I), jnp.float64)
    final, ys = jaxrnn.scan(cell, jnp.zeros((), jnp.float64), xs, carry=carry)
    # Every step reads 1 * m with the same m: 0 where dropped, 1/(1 - rate) where kept.
    keep = np.asarray(carry.noise) != -1
    want = np.where(keep, 1 / (1 - rate), 0.0)
    for t in range(T):
        np.testing.assert_array_equal(ys[t], want)
    assert keep.any() and not keep.all()
    np.testing.assert_array_equal(final.noise, carry.noise)  # the mask travels unchanged


def test_masks_are_independent_across_sequences_and_keyed():
    rate, n, hidden = 0.3, 400, 50
    cell = jaxrnn.recurrent_dropout(_probe(hidden), rate)
    template = cell.initial_carry((n,), jnp.float64)
    dropped = np.asarray(cell.draw(jax.random.key(1), template).noise) == -1
    # Bernoulli(rate) units: the fraction dropped, and the fraction of pairs of sequences
    # both dropped at a unit (rate² for independent masks), within 5 standard deviations.
    count = dropped.size
    assert abs(dropped.mean() - rate) < 5 * np.sqrt(rate * (1 - rate) / count)
    both = (dropped[:-1] & dropped[1:]).mean()
    pairs = dropped[:-1].size
    assert abs(both - rate**2) < 5 * np.sqrt(rate**2 * (1 - rate**2) / pairs)
    same = cell.draw(jax.random.key(1), template).noise
    other = cell.draw(jax.random.key(2), template).noise
    np.testing.assert_array_equal(same, np.where(dropped, -1.0, 1 / (1 - rate) - 1))
    assert (np.asarray(other) != np.asarray(same)).any()


@pytest.mark.parametrize(
    "make", [lambda: jaxrnn.lstm(H), lambda: jaxrnn.gru(H), lambda: jaxrnn.elman(H)]
)
def test_without_a_mask_and_at_rate_zero_it_is_the_plain_cell_exactly(make):
    plain = make()
    params = plain.init(jax.random.key(0), I, jnp.float64)
    xs = jax.random.normal(jax.random.key(1), (T, B, I), jnp.float64)
    # The definition: a loop over the plain cell's step (jaxrnn.scan may take a fused path).
    step = functools.partial(plain.step, params)
    want_carry, want = jax.lax.scan(step, plain.initial_carry((B,), jnp.float64), xs)
    evaluated = jaxrnn.recurrent_dropout(plain, 0.5)
    carry, ys = jaxrnn.scan(evaluated, params, xs)
    np.testing.assert_array_equal(ys, want)
    jax.tree.map(np.testing.assert_array_equal, carry.carry, want_carry)
    zero = jaxrnn.recurrent_dropout(plain, 0.0)
    drawn = zero.draw(jax.random.key(2), zero.initial_carry((B,), jnp.float64))
    _, ys0 = jaxrnn.scan(zero, params, xs, carry=drawn)
    np.testing.assert_array_equal(ys0, want)
    trained = evaluated.draw(jax.random.key(2), evaluated.initial_carry((B,), jnp.float64))
    assert (np.asarray(jaxrnn.scan(evaluated, params, xs, carry=trained)[1]) != want).any()


def test_the_lstm_drops_h_and_keeps_c():
    cell = jaxrnn.recurrent_dropout(jaxrnn.lstm(H), 0.5)
    params = cell.init(jax.random.key(0), I, jnp.float64)
    carry = cell.draw(jax.random.key(1), cell.initial_carry((B,), jnp.float64))
    start = jaxrnn.LSTMCarry(
        *(jax.random.normal(k, (B, H), jnp.float64) for k in jax.random.split(jax.random.key(2)))
    )
    x = jnp.ones((B, I), jnp.float64)
    (new, _), y = cell.step(params, carry._replace(carry=start), x)
    mask = 1 + carry.noise
    want, want_y = jaxrnn.lstm(H).step(params, start._replace(h=start.h * mask), x)
    jax.tree.map(np.testing.assert_array_equal, new, want)
    np.testing.assert_array_equal(y, want_y)


def _linear_case(rate):
    cell = jaxrnn.elman(H, activation="identity")
    params = cell.init(jax.random.key(0), I, jnp.float64)
    # A recurrent matrix with a sizeable diagonal, where one shared mask shows.
    params = params._replace(w_hh=params.w_hh + 0.8 * jnp.eye(H, dtype=jnp.float64))
    return cell, params


def test_a_linear_recurrence_is_unbiased_where_each_mask_is_used_once():
    """One step from a carry h: E[U (m ⊙ h)] = U h, to 5 standard errors of the variance."""
    rate, n = 0.3, 4000
    plain, params = _linear_case(rate)
    cell = jaxrnn.recurrent_dropout(plain, rate)
    h0 = jax.random.normal(jax.random.key(3), (H,), jnp.float64)
    x = jax.random.normal(jax.random.key(4), (1, I), jnp.float64)
    template = cell.initial_carry((), jnp.float64)._replace(carry=h0)

    def one(key):
        return jaxrnn.scan(cell, params, x, carry=cell.draw(key, template))[1][0]

    ys = np.asarray(jax.vmap(one)(jax.random.split(jax.random.key(5), n)))
    want = np.asarray(jaxrnn.scan(plain, params, x, carry=h0)[1][0])
    # Var(y_i) = Σ_j U_ij² h_j² Var(m_j), Var(m_j) = 1/(1-p) - 1 = p / (1 - p).
    u, h = np.asarray(params.w_hh), np.asarray(h0)
    variance = (u**2 * h**2) @ np.ones(H) * rate / (1 - rate)
    np.testing.assert_array_less(np.abs(ys.mean(0) - want), 5 * np.sqrt(variance / n))


def test_one_mask_reused_over_steps_has_the_expectation_of_a_shared_mask():
    """Three steps from zero: h3 = a3 + U D a2 + U D U D a1 with one D = diag(m).

    E[D U D] = U + p/(1-p) diag(U) (E[m_i m_j] = 1 + δ_ij p/(1-p)): the mean matches that, not
    the undropped output (as independent masks at each step would).
    """
    rate, n = 0.3, 4000
    plain, params = _linear_case(rate)
    cell = jaxrnn.recurrent_dropout(plain, rate)
    xs = jax.random.normal(jax.random.key(4), (3, I), jnp.float64)
    template = cell.initial_carry((), jnp.float64)

    def final(key):
        return jaxrnn.scan(cell, params, xs, carry=cell.draw(key, template))[1][-1]

    ys = np.asarray(jax.vmap(final)(jax.random.split(jax.random.key(6), n)))
    w, u = np.asarray(params.w_ih), np.asarray(params.w_hh)
    b = np.asarray(params.b_ih) + np.asarray(params.b_hh)
    a = np.asarray(xs) @ w.T + b
    c = rate / (1 - rate)
    expected = a[2] + u @ a[1] + u @ (u + c * np.diag(np.diag(u))) @ a[0]
    undropped = a[2] + u @ a[1] + u @ u @ a[0]
    tolerance = 5 * ys.std(0) / np.sqrt(n)
    np.testing.assert_array_less(np.abs(ys.mean(0) - expected), tolerance)
    assert (np.abs(undropped - expected) > 3 * tolerance).any()  # the test tells them apart


def test_jit_vmap_and_float64_gradients():
    cell = jaxrnn.recurrent_dropout(jaxrnn.gru(H), 0.25)
    params = cell.init(jax.random.key(0), I, jnp.float64)
    xs = jax.random.normal(jax.random.key(1), (T, B, I), jnp.float64)
    keys = jax.random.split(jax.random.key(2), 3)

    def run(params, key):
        carry = cell.draw(key, cell.initial_carry((B,), jnp.float64))
        return jaxrnn.scan(cell, params, xs, carry=carry)[1]

    eager = [run(params, k) for k in keys]
    np.testing.assert_allclose(jax.jit(run)(params, keys[0]), eager[0], rtol=1e-12)
    batched = jax.vmap(run, in_axes=(None, 0))(params, keys)
    for got, want in zip(batched, eager, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12)
    check_grads(lambda p: run(p, keys[0]), (params,), order=2, modes=("rev",))


def test_a_stack_draws_one_mask_per_layer_direction_and_sequence():
    cell = jaxrnn.recurrent_dropout(jaxrnn.lstm(H), 0.5)
    rnn = jaxrnn.stack(cell, num_layers=2, bidirectional=True, dropout=0.25)
    params = rnn.init(jax.random.key(0), I, jnp.float64)
    xs = jax.random.normal(jax.random.key(1), (T, B, I), jnp.float64)
    key = jax.random.key(2)
    carry, _ = rnn.apply(params, xs, key=key)
    # The key's second half draws the masks into the initial carry, the first the layers'.
    _, k_masks = jax.random.split(key)
    drawn = cell.draw(k_masks, rnn.initial_carry((B,), jnp.float64))
    np.testing.assert_array_equal(carry.noise, drawn.noise)
    masks = np.asarray(drawn.noise).reshape(4, B, H)
    assert len({m.tobytes() for m in masks}) == 4  # layers and directions differ
    plain = jaxrnn.stack(jaxrnn.lstm(H), num_layers=2, bidirectional=True, dropout=0.25)
    # Without a key: evaluation, the plain stack (to rounding: the plain LSTM takes the fused
    # path, which orders its floating-point operations differently).
    _, no_key = rnn.apply(params, xs)
    np.testing.assert_allclose(no_key, plain.apply(params, xs)[1], rtol=1e-12, atol=1e-15)
    # With the masks drawn by hand and no inter-layer dropout: the same numbers.
    rnn0 = jaxrnn.stack(cell, num_layers=2, bidirectional=True)
    _, by_hand = rnn0.apply(params, xs, carry=drawn)
    _, keyed = rnn0.apply(params, xs, key=key)
    np.testing.assert_array_equal(keyed, by_hand)


def test_readout_and_clipping_keep_the_masks():
    cell = jaxrnn.clip_carry_grad(jaxrnn.recurrent_dropout(jaxrnn.elman(H), 0.5), 1.0)
    assert cell.draw is not None
    model = training.readout(cell, 2)
    params = model.init(jax.random.key(0), I, jnp.float64)
    xs = jax.random.normal(jax.random.key(1), (B, T, I), jnp.float64)
    plain = training.readout(jaxrnn.elman(H), 2)  # the fused path: equal to rounding
    np.testing.assert_allclose(model.apply(params, xs), plain.apply(params, xs), rtol=1e-12)
    key = jax.random.key(3)
    dropped = model.apply(params, xs, key=key)
    assert (np.asarray(dropped) != np.asarray(plain.apply(params, xs))).any()
    # reduce (the train step's path without [B, T, O] outputs) draws the same masks.
    targets = jnp.zeros((B, T, 2), jnp.float64)
    total = model.reduce(
        params, xs, lambda y, t: jnp.sum((y - t) ** 2, axis=-1), targets, None, key
    )
    np.testing.assert_allclose(total, jnp.sum(dropped**2, axis=(1, 2)), rtol=1e-12)


@pytest.mark.parametrize("rate", [1.0, -0.1, float("nan"), "0.5", None])
def test_bad_rates_are_refused(rate):
    with pytest.raises(ValueError, match=r"rate: expected a number in \[0, 1\)"):
        jaxrnn.recurrent_dropout(jaxrnn.lstm(H), rate)


def test_bad_cells_and_carries_are_refused():
    with pytest.raises(TypeError, match=r"cell: expected a jaxrnn\.Cell"):
        jaxrnn.recurrent_dropout(jaxrnn.stack(jaxrnn.lstm(H)), 0.5)
    pair = jaxrnn.Cell(
        lambda key, i, dtype=jnp.float32: jnp.zeros(()),
        lambda batch_shape=(), dtype=jnp.float32: (jnp.zeros(H), jnp.zeros(H)),
        lambda p, c, x: (c, c[0]),
    )
    with pytest.raises(TypeError, match="a NamedTuple with a field h"):
        jaxrnn.recurrent_dropout(pair, 0.5).initial_carry()
    cell = jaxrnn.recurrent_dropout(jaxrnn.gru(H), 0.5)
    with pytest.raises(TypeError, match="carry: expected the RecurrentDropoutCarry"):
        cell.draw(jax.random.key(0), jnp.zeros(H))
    with pytest.raises(TypeError, match="carry: expected the RecurrentDropoutCarry"):
        cell.step(cell.init(jax.random.key(0), I), jnp.zeros(H), jnp.zeros(I))


@pytest.mark.smoke
def test_nnx_modules_take_a_recurrent_dropout_rate():
    nnx = pytest.importorskip("flax.nnx")
    import jaxrnn.nnx

    module = jaxrnn.nnx.LSTM(I, H, num_layers=2, recurrent_dropout=0.5, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (B, T, I), jnp.float32)
    key = jax.random.key(2)
    (c, h), ys = module(x, rngs=key, return_carry=True)
    cell = jaxrnn.recurrent_dropout(jaxrnn.lstm(H), 0.5)
    want_carry, want = jaxrnn.stack(cell, num_layers=2).apply(
        module.to_params(), x, key=key, time_major=False
    )
    np.testing.assert_array_equal(ys, want)
    # the module's carry is the LSTM's, in Flax's (c, h) order: the masks stay inside the call
    np.testing.assert_array_equal(c, want_carry.carry.c)
    np.testing.assert_array_equal(h, want_carry.carry.h)
    module.eval()
    plain = jaxrnn.nnx.LSTM.from_params(module.to_params())
    np.testing.assert_allclose(module(x), plain(x), rtol=1e-5, atol=1e-6)  # fused: rounding
    rebuilt = jaxrnn.nnx.LSTM.from_params(module.to_params(), recurrent_dropout=0.5)
    assert rebuilt.recurrent_dropout == 0.5 and rebuilt.cell.draw is not None
    with pytest.raises(ValueError, match=r"recurrent_dropout: expected a rate in \[0, 1\)"):
        jaxrnn.nnx.GRU(I, H, recurrent_dropout=1.0, rngs=nnx.Rngs(0))


def test_the_train_step_draws_masks_from_its_key():
    cell = jaxrnn.recurrent_dropout(jaxrnn.gru(H), 0.5)
    model = training.readout(cell, 1)
    params = model.init(jax.random.key(0), I)
    batch = jaxrnn.tasks.Batch(
        jax.random.normal(jax.random.key(1), (B, T, I)), jnp.ones((B, T, 1)), None
    )
    tx = training.optimizer(1e-2)
    step = training.make_train_step(model, tx, lambda y, b: jnp.mean((y - b.targets) ** 2))
    state = training.TrainState.create(params, tx)
    _, plain = step(state, batch)
    _, dropped = step(state, batch, jax.random.key(2))
    _, again = step(state, batch, jax.random.key(2))
    assert float(plain["loss"]) != float(dropped["loss"])
    assert float(dropped["loss"]) == float(again["loss"])


def test_the_train_command_takes_a_recurrent_dropout_rate(tmp_path, capsys):
    from tests.helpers import exit_code

    out = tmp_path / "run"
    argv = ["train", "--task", "text", "--seq-len", "8", "--hidden", "8", "--steps", "2",
            "--batch-size", "4", "--quiet", "--recurrent-dropout", "0.5"]  # fmt: skip
    assert exit_code([*argv, "--out", str(out)]) == 0
    assert json.loads((out / "summary.json").read_text())["config"]["recurrent_dropout"] == 0.5
    assert exit_code(["sample", str(out), "--length", "3", "--temperature", "0"]) == 0
    assert exit_code([*argv[:-2], "--out", str(tmp_path / "plain")]) == 0
    assert (
        "recurrent_dropout"
        not in json.loads((tmp_path / "plain" / "summary.json").read_text())["config"]
    )  # left out at its default: the runs made before the flag keep their names
    capsys.readouterr()
    assert exit_code([*argv[:-1], "1", "--out", str(tmp_path / "bad")]) == 2
    assert "--recurrent-dropout: expected a rate in [0, 1), got 1" in capsys.readouterr().err


def test_nnx_without_a_stream_names_the_recurrent_rate():
    pytest.importorskip("flax.nnx")
    import jaxrnn.nnx

    params = jaxrnn.stack(jaxrnn.gru(H)).init(jax.random.key(0), I)
    bare = jaxrnn.nnx.GRU.from_params(params, recurrent_dropout=0.5)
    with pytest.raises(ValueError, match=r"rngs: recurrent_dropout=0\.5 is on in training mode"):
        bare(jnp.ones((B, T, I)))
    bare.eval()
    assert bare(jnp.ones((B, T, I))).shape == (B, T, H)

"""jaxrnn.tasks: each generator against its written definition and its analytic statistics.

Statistical checks use fixed keys and a tolerance of 5 standard errors, the
standard error estimated from the same sample.
"""

import collections
import math
import sys
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrnn import tasks

KEY = jax.random.key(0)


def within_5_se(samples, expected):
    """Assert that the mean of ``samples`` is within 5 standard errors of ``expected``."""
    samples = np.asarray(samples, np.float64)
    se = samples.std(ddof=1) / math.sqrt(samples.size)
    assert abs(samples.mean() - expected) < 5 * se, (samples.mean(), expected, se)


def constant_outputs(task, batch, value):
    return jnp.full((*batch.xs.shape[:2], task.output_size), value, jnp.float64)


def marked_positions(markers):
    """The two positions of each row holding a 1, sorted: ``[B, T] -> [B, 2]``."""
    t = np.arange(markers.shape[1])[None, :]
    return np.sort(np.where(markers == 1, t, markers.shape[1]), axis=1)[:, :2]


def test_public_names_are_pinned():
    assert set(tasks.__all__) == {
        "NAMES",
        "Batch",
        "Task",
        "adding",
        "adding_baseline",
        "adding_hs97",
        "adding_hs97_baseline",
        "copy_baseline",
        "copy_memory",
        "decode",
        "encode",
        "from_arrays",
        "get",
        "temporal_order",
        "text",
        "text_corpus",
        "text_vocab",
    }
    assert tasks.NAMES == ("adding", "adding-hs97", "copy", "temporal-order", "text")
    assert all(tasks.get(name, 100).name == name for name in tasks.NAMES)


# --------------------------------------------------------------------------- adding


def test_adding_structure():
    T, B = 11, 2000
    task = tasks.adding(T)
    assert (task.input_size, task.output_size, task.seq_len) == (2, 1, T)
    batch = task.sample(KEY, B)
    assert batch.xs.shape == (B, T, 2) and batch.xs.dtype == jnp.float32
    assert batch.targets.shape == (B,) and batch.targets.dtype == jnp.float32
    assert batch.lengths.dtype == jnp.int32 and (np.asarray(batch.lengths) == T).all()
    xs = np.asarray(batch.xs, np.float64)
    values, markers = xs[..., 0], xs[..., 1]
    assert ((values >= 0) & (values < 1)).all()
    assert np.isin(markers, [0, 1]).all() and (markers.sum(axis=1) == 2).all()
    first, second = marked_positions(markers).T
    # One mark uniform on [0, T//2), the other on [T//2, T): every position occurs.
    assert set(first) == set(range(T // 2)) and set(second) == set(range(T // 2, T))
    np.testing.assert_allclose(batch.targets, (values * markers).sum(axis=1), rtol=1e-6)


def test_adding_constant_predictor_statistics():
    task = tasks.adding(10)
    batch = task.sample(jax.random.key(1), 20_000)
    ones = constant_outputs(task, batch, 1.0)
    errors = np.asarray(batch.targets, np.float64) - 1
    assert float(task.loss(ones, batch)) == pytest.approx(np.mean(errors**2), rel=1e-6)
    within_5_se(errors**2, 1 / 6)
    # Sum of two U[0, 1] is triangular on [0, 2]: P(|S - 1| < 0.04) = 0.08 - 0.04².
    within_5_se(np.abs(errors) < 0.04, 0.0784)
    assert float(task.metric(ones, batch)) == pytest.approx(np.mean(np.abs(errors) < 0.04))
    assert tasks.adding_baseline() == 1 / 6 == task.baseline


# --------------------------------------------------------------------------- adding (H&S 1997)


def test_adding_hs97_structure():
    T, B = 40, 2000
    task = tasks.adding_hs97(T)
    assert (task.input_size, task.output_size, task.seq_len) == (2, 1, T + T // 10)
    batch = task.sample(KEY, B)
    L = task.seq_len
    assert batch.xs.shape == (B, L, 2) and batch.xs.dtype == jnp.float32
    assert batch.targets.dtype == jnp.float32 and batch.lengths.dtype == jnp.int32
    lengths = np.asarray(batch.lengths)
    assert set(lengths) == set(range(T, T + T // 10 + 1))
    xs = np.asarray(batch.xs, np.float64)
    values, markers = xs[..., 0], xs[..., 1]
    t = np.arange(L)[None, :]
    valid = t < lengths[:, None]
    assert (xs[~valid] == 0).all()  # zero padding after each sequence
    assert ((values >= -1) & (values <= 1)).all()
    assert ((markers == 1).sum(axis=1) == 2).all()
    low, high = marked_positions(markers).T
    assert (low < 10).all() and (high <= T // 2 - 1).all()
    assert set(high) == set(range(1, T // 2))  # the second mark reaches T//2 - 1
    last = markers[np.arange(B), lengths - 1]
    assert (last == -1).all()
    first_marked = markers[:, 0] == 1
    assert (markers[~first_marked, 0] == -1).all()
    assert (values[first_marked, 0] == 0).all()  # "we set X1 to zero"
    ends = (t == 0) | (t == lengths[:, None] - 1)
    assert (markers[valid & ~ends & (markers != 1)] == 0).all()
    np.testing.assert_allclose(
        batch.targets, 0.5 + (values * (markers == 1)).sum(axis=1) / 4, rtol=1e-6
    )
    # The first pair is marked by the first mark (1/10) or by the second (9/10 · 1/m).
    within_5_se(first_marked, 0.1 + 0.9 / (T // 2 - 1))


def test_adding_hs97_baseline_is_exact():
    for T in (20, 21, 100, 1000):
        m = T // 2 - 1
        # Enumerate the marks: Var(X1 + X2) = (1/3) · (P(X1 not zeroed) + P(X2 not zeroed)).
        kept = Fraction(0)
        for i1 in range(10):
            for i2 in (i for i in range(m + 1) if i != i1):
                kept += Fraction(1, 10 * m) * ((i1 != 0) + (i2 != 0))
        exact = kept / 3 / 16
        assert tasks.adding_hs97_baseline(T) == pytest.approx(float(exact), rel=1e-14)
        assert tasks.get("adding-hs97", T).baseline == tasks.adding_hs97_baseline(T)
    assert round(tasks.adding_hs97_baseline(100), 6) == 0.039201


@pytest.fixture(scope="module")
def hs97_20():
    task = tasks.adding_hs97(20)  # m = 9: the zeroed first pair matters most
    return task, task.sample(jax.random.key(2), 40_000)


def test_adding_hs97_constant_predictor_statistics(hs97_20):
    T = 20
    task, batch = hs97_20
    half = constant_outputs(task, batch, 0.5)
    errors = np.asarray(batch.targets, np.float64) - 0.5
    assert float(task.loss(half, batch)) == pytest.approx(np.mean(errors**2), rel=1e-6)
    within_5_se(errors**2, task.baseline)
    # ... and clearly not the 1/24 of two unconstrained U[-1, 1] values.
    se = (errors**2).std() / math.sqrt(errors.size)
    assert abs(np.mean(errors**2) - 1 / 24) > 10 * se
    m = T // 2 - 1
    correct = 0.1536 * (0.9 - 0.9 / m) + 0.16 * (0.1 + 0.9 / m)
    within_5_se(np.abs(errors) < 0.04, correct)
    assert float(task.metric(half, batch)) == pytest.approx(np.mean(np.abs(errors) < 0.04))


def test_end_readout_uses_each_sequence_last_valid_step(hs97_20):
    task, batch = hs97_20
    L = batch.xs.shape[1]
    at_end = jnp.arange(L)[None, :] == (batch.lengths - 1)[:, None]
    outputs = jnp.where(at_end, batch.targets[:, None], 100.0)[..., None].astype(jnp.float64)
    assert float(task.loss(outputs, batch)) == 0.0
    assert float(task.metric(outputs, batch)) == 1.0


# --------------------------------------------------------------------------- copy


def test_copy_structure():
    T, B = 7, 64
    task = tasks.copy_memory(T)
    assert (task.input_size, task.output_size, task.seq_len) == (10, 10, T + 20)
    batch = task.sample(KEY, B)
    assert batch.xs.shape == (B, T + 20, 10) and batch.xs.dtype == jnp.float32
    assert batch.targets.shape == (B, T + 20) and batch.targets.dtype == jnp.int32
    xs = np.asarray(batch.xs)
    assert (xs.sum(axis=-1) == 1).all()
    symbols = xs.argmax(axis=-1)
    data = symbols[:, :10]
    assert ((data >= 1) & (data <= 8)).all() and set(data.ravel()) == set(range(1, 9))
    expected_xs = np.concatenate(
        [data, np.zeros((B, T - 1)), np.full((B, 1), 9), np.zeros((B, 10))], axis=1
    )
    np.testing.assert_array_equal(symbols, expected_xs)
    np.testing.assert_array_equal(batch.targets, np.concatenate([np.zeros((B, T + 10)), data], 1))
    assert (np.asarray(batch.lengths) == T + 20).all()


def test_copy_memoryless_predictor_has_the_baseline_loss():
    T, B = 30, 2000
    task = tasks.copy_memory(T)
    batch = task.sample(jax.random.key(3), B)
    blank = jnp.array([0.0] + [-jnp.inf] * 9, jnp.float64)  # certain blank
    guess = jnp.array([-jnp.inf] + [0.0] * 8 + [-jnp.inf], jnp.float64)  # uniform on 1..8
    steps = jnp.concatenate([jnp.tile(blank, (T + 10, 1)), jnp.tile(guess, (10, 1))])
    outputs = jnp.broadcast_to(steps, (B, T + 20, 10))
    assert float(task.loss(outputs, batch)) == pytest.approx(tasks.copy_baseline(T), rel=1e-12)
    assert task.baseline == tasks.copy_baseline(T)
    # argmax of the uniform guess is symbol 1: right 1/8 of the time.
    recalled = np.asarray(batch.targets[:, -10:]) == 1
    within_5_se(recalled, 1 / 8)
    assert float(task.metric(outputs, batch)) == pytest.approx(recalled.mean())


def test_copy_baseline_formula_and_reference_table():
    table = {100: 0.1733, 200: 0.0945, 300: 0.0650, 500: 0.0400, 1000: 0.0204}
    for T, value in table.items():
        assert tasks.copy_baseline(T) == 10 * math.log(8) / (T + 20)
        assert round(tasks.copy_baseline(T), 4) == value


def test_per_step_loss_masks_padded_steps():
    task = tasks.copy_memory(5)
    batch = task.sample(KEY, 3)._replace(lengths=jnp.array([25, 12, 1], jnp.int32))
    outputs = jax.random.normal(jax.random.key(4), (3, 25, 10), jnp.float64)
    log_p = np.asarray(jax.nn.log_softmax(outputs, axis=-1))
    targets = np.asarray(batch.targets)
    ce = [-log_p[b, t, targets[b, t]] for b, n in enumerate([25, 12, 1]) for t in range(n)]
    assert float(task.loss(outputs, batch)) == pytest.approx(np.mean(ce), rel=1e-12)


# --------------------------------------------------------------------------- temporal order


def test_temporal_order_pascanu_structure():
    L, B = 50, 4000
    task = tasks.temporal_order(L)
    assert (task.input_size, task.output_size, task.seq_len) == (8, 4, L)
    batch = task.sample(KEY, B)
    assert batch.xs.shape == (B, L, 8) and batch.xs.dtype == jnp.float32
    assert batch.targets.shape == (B,) and batch.targets.dtype == jnp.int32
    xs = np.asarray(batch.xs)
    assert (xs.sum(axis=-1) == 1).all() and (xs[..., 6:] == 0).all()  # no B, no E
    symbols = xs.argmax(axis=-1)
    relevant = symbols >= 4
    assert (relevant.sum(axis=1) == 2).all()
    p0, p1 = np.sort(np.where(relevant, np.arange(L)[None, :], L), axis=1)[:, :2].T
    assert set(p0) == set(range(5, 10)) and set(p1) == set(range(25, 30))
    rows = np.arange(B)
    y0, y1 = symbols[rows, p0] == 5, symbols[rows, p1] == 5
    np.testing.assert_array_equal(batch.targets, 2 * y0 + y1)  # XX, XY, YX, YY = 0..3
    for c in range(4):
        within_5_se(np.asarray(batch.targets) == c, 1 / 4)
    assert (np.asarray(batch.lengths) == L).all()
    uniform = constant_outputs(task, batch, 0.0)
    assert float(task.loss(uniform, batch)) == pytest.approx(math.log(4), rel=1e-14)
    assert task.baseline == math.log(4)


def test_temporal_order_hochreiter_is_experiment_6a():
    B = 2000
    task = tasks.temporal_order(100, variant="hochreiter")
    assert task.seq_len == 110
    batch = task.sample(KEY, B)
    lengths = np.asarray(batch.lengths)
    assert set(lengths) == set(range(100, 111))
    xs = np.asarray(batch.xs)
    t = np.arange(110)[None, :]
    valid = t < lengths[:, None]
    assert (xs[~valid] == 0).all() and (xs[valid].sum(axis=-1) == 1).all()
    symbols = np.where(valid, xs.argmax(axis=-1), -1)
    rows = np.arange(B)
    assert (symbols[:, 0] == 7).all() and (symbols[rows, lengths - 1] == 6).all()  # E … B
    relevant = (symbols == 4) | (symbols == 5)
    assert (relevant.sum(axis=1) == 2).all()
    t1, t2 = np.sort(np.where(relevant, t, 110), axis=1)[:, :2].T
    assert set(t1) == set(range(10, 21)) and set(t2) == set(range(50, 61))
    inner = valid & (t > 0) & (t < lengths[:, None] - 1) & ~relevant
    assert ((symbols[inner] >= 0) & (symbols[inner] <= 3)).all()
    np.testing.assert_array_equal(
        batch.targets, 2 * (symbols[rows, t1] == 5) + (symbols[rows, t2] == 5)
    )
    # The class is read at each sequence's own last step.
    at_end = jnp.arange(110)[None, :] == (batch.lengths - 1)[:, None]
    right = jax.nn.one_hot(batch.targets, 4, dtype=jnp.float64)[:, None, :]
    outputs = jnp.where(at_end[..., None], 10 * right, 10 * (1 - right))
    assert float(task.metric(outputs, batch)) == 1.0
    uniform = constant_outputs(task, batch, 0.0)
    assert float(task.loss(uniform, batch)) == pytest.approx(math.log(4), rel=1e-14)
    assert task.baseline == math.log(4)


# --------------------------------------------------------------------------- text


def test_text_vocab_and_round_trip():
    vocab = tasks.text_vocab()
    assert len(vocab) == len(set(vocab)) == tasks.text(8).input_size == 97
    known = vocab[:-1]
    assert tasks.decode(tasks.encode(known)) == known
    s = "def f(x):\n    return {'a': x ~ 1}\n"
    assert tasks.decode(tasks.encode(s)) == s
    assert tasks.encode(s).dtype == np.int32
    assert tasks.decode(tasks.encode("“é”\t")) == "\ufffd" * 4
    corpus = tasks.text_corpus()
    replaced = "".join(c if c in known else "\ufffd" for c in corpus)
    assert tasks.decode(tasks.encode(corpus)) == replaced


def test_text_windows_come_from_their_split():
    T, B = 40, 8
    task = tasks.text(T)
    assert (task.input_size, task.output_size, task.seq_len) == (97, 97, T)
    corpus = tasks.decode(tasks.encode(tasks.text_corpus()))
    cut = int(len(corpus) * 0.9)
    for split, part in (("train", corpus[:cut]), ("eval", corpus[cut:])):
        batch = task.sample(KEY, B, split)
        assert batch.xs.shape == (B, T, 97) and batch.xs.dtype == jnp.float32
        assert batch.targets.shape == (B, T) and batch.targets.dtype == jnp.int32
        assert (np.asarray(batch.xs).sum(axis=-1) == 1).all()
        assert (np.asarray(batch.lengths) == T).all()
        inputs = np.asarray(batch.xs).argmax(axis=-1)
        np.testing.assert_array_equal(inputs[:, 1:], batch.targets[:, :-1])
        for b in range(B):
            window = tasks.decode(inputs[b]) + tasks.decode(batch.targets[b, -1:])
            assert window in part


def test_text_baseline_is_the_train_unigram_entropy():
    corpus = tasks.decode(tasks.encode(tasks.text_corpus()))
    train = corpus[: int(len(corpus) * 0.9)]
    counts = collections.Counter(train)
    entropy = -sum(n / len(train) * math.log(n / len(train)) for n in counts.values())
    task = tasks.text(128)
    assert task.baseline == pytest.approx(entropy, rel=1e-12)
    # The unigram predictor's loss on random train windows: the entropy, up to sampling.
    log_freq = np.array(
        [math.log(counts[c]) if c in counts else -np.inf for c in tasks.text_vocab()]
    )
    batch = task.sample(jax.random.key(5), 256)
    outputs = jnp.broadcast_to(jnp.asarray(log_freq), (256, 128, 97))
    ce = -np.asarray(jax.nn.log_softmax(outputs[0, 0]))[np.asarray(batch.targets)]
    assert float(task.loss(outputs, batch)) == pytest.approx(ce.mean(), rel=1e-12)
    within_5_se(ce.mean(axis=1), task.baseline)  # windows are independent; characters not


def test_text_without_pydoc_data(monkeypatch):
    monkeypatch.setitem(sys.modules, "pydoc_data.topics", None)
    with pytest.raises(ModuleNotFoundError, match=r"needs pydoc_data\.topics"):
        tasks._read_topics()


# --------------------------------------------------------------------------- every task

SMALL = {"adding": 10, "adding-hs97": 20, "copy": 5, "temporal-order": 20, "text": 16}


@pytest.mark.parametrize("name", tasks.NAMES)
def test_sampling_is_deterministic_and_jittable(name):
    task = tasks.get(name, SMALL[name])
    a = task.sample(KEY, 4)
    jax.tree.map(np.testing.assert_array_equal, a, task.sample(KEY, 4, "train"))
    jitted = jax.jit(task.sample, static_argnums=(1, 2))
    jax.tree.map(np.testing.assert_array_equal, a, jitted(KEY, 4, "train"))
    assert not np.array_equal(a.xs, task.sample(jax.random.key(1), 4).xs)
    assert a.xs.shape == (4, task.seq_len, task.input_size) and a.xs.dtype == jnp.float32


@pytest.mark.parametrize("name", ["adding", "text"])
def test_train_and_eval_batches_differ(name):
    # The synthetic tasks share one mechanism (the key folded with the split); text slices.
    task = tasks.get(name, SMALL[name])
    assert not np.array_equal(task.sample(KEY, 4).xs, task.sample(KEY, 4, "eval").xs)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: tasks.get("mnist", 100), r"name: expected one of \('adding', 'adding-hs97'"),
        (lambda: tasks.adding(0), "seq_len: expected a positive integer, got 0"),
        (lambda: tasks.adding(1), r"seq_len: expected an integer >= 2 \(one marker in each"),
        (lambda: tasks.copy_memory(2.5), "seq_len: expected a positive integer, got 2.5"),
        (lambda: tasks.adding_hs97(19), "seq_len: expected an integer >= 20 .*, got 19"),
        (lambda: tasks.adding_hs97_baseline(True), "seq_len: expected a positive integer"),
        (lambda: tasks.temporal_order(9), "seq_len: expected an integer >= 10 .*, got 9"),
        (lambda: tasks.temporal_order(100, variant="martens"), "variant: expected 'pascanu'"),
        (lambda: tasks.text(10**6), r"seq_len: expected at most \d+ .*, got 1000000"),
        (lambda: tasks.adding(10).sample(KEY, 0), "batch_size: expected a positive integer"),
        (lambda: tasks.adding(10).sample(KEY, 2, "test"), r"split: expected one of \('train'"),
        (lambda: tasks.decode(np.array([97])), r"ids: expected symbols in \[0, 97\)"),
        (lambda: tasks.decode(np.zeros((2, 2), int)), "ids: expected a 1-d integer array"),
    ],
)
def test_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_outputs_of_the_wrong_shape():
    task = tasks.adding(10)
    batch = task.sample(KEY, 3)
    with pytest.raises(ValueError, match=r"outputs: expected shape .* = \(3, 10, 1\).*time-major"):
        task.loss(jnp.zeros((10, 3, 1)), batch)
    with pytest.raises(ValueError, match=r"outputs: expected shape .*, got \(3, 1\)"):
        task.metric(jnp.zeros((3, 1)), batch)

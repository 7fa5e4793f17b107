"""Bad input raises early, naming the argument, what was expected and what was received."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn

KEY = jax.random.key(0)


@pytest.fixture
def lstm():
    cell = jaxrnn.lstm(4)
    return cell, cell.init(KEY, 3)


def test_xs_of_the_wrong_rank(lstm):
    cell, params = lstm
    with pytest.raises(ValueError, match=r"xs: expected shape \[T, \*batch, input_size\].*\(3,\)"):
        jaxrnn.scan(cell, params, jnp.ones(3))


def test_xs_of_an_integer_dtype(lstm):
    cell, params = lstm
    with pytest.raises(TypeError, match="xs: expected a floating dtype, got int"):
        jaxrnn.scan(cell, params, jnp.ones((2, 3), jnp.int32))


def test_xs_with_the_wrong_feature_size(lstm):
    cell, params = lstm
    with pytest.raises(ValueError, match=r"x: expected shape \[\*batch, 3\].*input_size=3") as e:
        jaxrnn.scan(cell, params, jnp.ones((2, 5, 7)))
    assert "(5, 7)" in str(e.value)
    assert any("xs" in note for note in e.value.__notes__)


def test_params_built_for_another_input_size():
    cell = jaxrnn.gru(4)
    with pytest.raises(ValueError, match=r"input_size=6.*got shape \(2, 3\)"):
        cell.step(cell.init(KEY, 6), cell.initial_carry((2,)), jnp.ones((2, 3)))


def test_carry_of_the_wrong_structure(lstm):
    cell, params = lstm
    with pytest.raises(TypeError, match="carry: expected a pytree of structure"):
        jaxrnn.scan(cell, params, jnp.ones((2, 5, 3)), carry=jnp.zeros((5, 4)))
    with pytest.raises(TypeError, match=r"carry: expected an LSTMCarry\(h, c\), got tuple"):
        cell.step(params, (jnp.zeros(4), jnp.zeros(4)), jnp.ones(3))


def test_carry_of_the_wrong_shape(lstm):
    cell, params = lstm
    carry = jaxrnn.LSTMCarry(jnp.zeros((5, 4)), jnp.zeros((6, 4)))
    with pytest.raises(ValueError, match=r"carry\.c: expected shape \(5, 4\), got \(6, 4\)"):
        jaxrnn.scan(cell, params, jnp.ones((2, 5, 3)), carry=carry)
    with pytest.raises(ValueError, match=r"carry: expected shape \(2, 4\).*got \(3, 4\)"):
        jaxrnn.elman(4).step(jaxrnn.elman(4).init(KEY, 3), jnp.zeros((3, 4)), jnp.ones((2, 3)))


def test_carry_of_an_integer_dtype():
    cell = jaxrnn.gru(4)
    with pytest.raises(TypeError, match=r"carry: expected a floating dtype, got int"):
        jaxrnn.scan(cell, cell.init(KEY, 3), jnp.ones((2, 5, 3)), carry=jnp.zeros((5, 4), int))


@pytest.mark.parametrize("lengths", [[0, 4], [-1, 2]], ids=["above-T", "negative"])
def test_lengths_outside_zero_to_t(lstm, lengths):
    cell, params = lstm
    with pytest.raises(ValueError, match=r"lengths: expected values in \[0, T=3\]"):
        jaxrnn.scan(cell, params, jnp.ones((3, 2, 3)), lengths=np.array(lengths))


def test_lengths_of_a_float_dtype(lstm):
    cell, params = lstm
    with pytest.raises(TypeError, match="lengths: expected an integer dtype, got float"):
        jaxrnn.scan(cell, params, jnp.ones((3, 2, 3)), lengths=jnp.array([1.0, 2.0]))


def test_lengths_of_the_wrong_batch_size(lstm):
    cell, params = lstm
    with pytest.raises(
        ValueError, match=r"lengths: expected one length per sequence, shape \(2,\)"
    ):
        jaxrnn.scan(cell, params, jnp.ones((3, 2, 3)), lengths=jnp.array([1, 2, 3]))


def test_unknown_activation_names_the_choices():
    with pytest.raises(ValueError, match=r"activation: expected one of \['identity', 'relu'"):
        jaxrnn.elman(4, activation="gelu")
    with pytest.raises(ValueError, match="output_activation: expected one of"):
        jaxrnn.elman(4, output_size=2, output_activation="softmaxx")
    with pytest.raises(ValueError, match="output_activation: only allowed together"):
        jaxrnn.elman(4, output_activation="tanh")


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda: jaxrnn.lstm(0), "hidden_size: expected a positive integer, got 0"),
        (lambda: jaxrnn.gru(2.5), "hidden_size: expected a positive integer, got 2.5"),
        (lambda: jaxrnn.elman(4, output_size=-1), "output_size: expected a positive integer"),
        (lambda: jaxrnn.lstm(4, recurrent_init="identity"), "recurrent_init: expected one of"),
        (lambda: jaxrnn.elman(4, recurrent_init="glorot"), "recurrent_init: expected one of"),
        (lambda: jaxrnn.lstm(4, forget_bias=1.0, chrono=10), "forget_bias, chrono"),
        (lambda: jaxrnn.lstm(4, chrono=1), "chrono: expected None or an integer T_max >= 2"),
        (lambda: jaxrnn.lstm(4, proj_size=4), "proj_size: expected a value below hidden_size"),
        (lambda: jaxrnn.elman(4, bias_init="ones"), "bias_init: expected 'uniform' or 'zeros'"),
        (lambda: jaxrnn.stack(jaxrnn.gru(2), num_layers=0), "num_layers: expected a positive"),
        (lambda: jaxrnn.stack(jaxrnn.gru(2), dropout=1.0), r"dropout: expected a rate in \[0, 1\)"),
    ],
)
def test_bad_factory_arguments(factory, match):
    with pytest.raises(ValueError, match=match):
        factory()


def test_bad_init_and_unroll_arguments(lstm):
    cell, params = lstm
    with pytest.raises(ValueError, match="input_size: expected a positive integer, got 0"):
        cell.init(KEY, 0)
    with pytest.raises(ValueError, match="unroll: expected a positive integer or a bool, got 0"):
        jaxrnn.scan(cell, params, jnp.ones((3, 3)), unroll=0)
    with pytest.raises(TypeError, match="dtype: expected a floating dtype, got int32"):
        cell.initial_carry((), jnp.int32)


def test_stack_params_of_another_configuration():
    two = jaxrnn.stack(jaxrnn.gru(2), num_layers=2)
    three = jaxrnn.stack(jaxrnn.gru(2), num_layers=3)
    bi = jaxrnn.stack(jaxrnn.gru(2), num_layers=2, bidirectional=True)
    xs = jnp.ones((3, 1, 2))
    with pytest.raises(ValueError, match="params: expected 3 layers, got 2"):
        three.apply(two.init(KEY, 2), xs)
    with pytest.raises(ValueError, match="params: expected params of a bidirectional stack"):
        bi.apply(two.init(KEY, 2), xs)
    with pytest.raises(TypeError, match="params: expected StackParams"):
        two.apply(jaxrnn.gru(2).init(KEY, 2), xs)
    with pytest.raises(
        ValueError, match=r"carry: expected shape \(2, 1, 1, 2\), got \(1, 1, 1, 2\)"
    ):
        two.apply(two.init(KEY, 2), xs, carry=jnp.zeros((1, 1, 1, 2)))

"""jaxrnn.nnx: flax NNX modules that compute exactly what the functional stacks compute.

Every numerical comparison is in float64 to 1e-12: outputs, final carries and
the gradients, with respect to every param, of a loss weighted by a random
cotangent, for 2-layer bidirectional LSTM (with projection), GRU and Elman
(ReLU, with output layer) modules with an initial carry and ``lengths``, in
both layouts.
XLA compiles slowly on the 2-core CPU, so each kind's forward and backward,
module and functional, run in one ``nnx.jit`` (one compilation per kind).
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jaxrnn
import jaxrnn.nnx

F64 = jnp.float64
I, H, B, T = 3, 4, 3, 5
LENGTHS = jnp.array([5, 2, 4])

KINDS: dict[str, tuple[Any, Any, dict[str, Any]]] = {
    "lstm": (jaxrnn.nnx.LSTM, jaxrnn.lstm, {"proj_size": 2, "forget_bias": 1.0}),
    "gru": (jaxrnn.nnx.GRU, jaxrnn.gru, {}),
    "elman": (jaxrnn.nnx.Elman, jaxrnn.elman, {"activation": "relu", "output_size": 2}),
}


def assert_trees_close(got: Any, want: Any, tol: float = 1e-12) -> None:
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=tol, atol=tol)


def assert_trees_equal(got: Any, want: Any) -> None:
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert g.dtype == w.dtype
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w))


# Test data from numpy: every jax.random shape would be one more XLA compilation.
RNG = np.random.default_rng(0)


def normal(shape: tuple[int, ...], dtype: Any = F64) -> jax.Array:
    return jnp.asarray(RNG.standard_normal(shape), dtype)


def random_like(tree: Any) -> Any:
    return jax.tree.map(lambda a: normal(a.shape, a.dtype), tree)


def random_params(rnn: jaxrnn.Stack, dtype: Any = F64) -> jaxrnn.StackParams:
    """Params of ``rnn`` for input size I, drawn by numpy (``init``'s shapes, not its values)."""
    return random_like(jax.eval_shape(lambda: rnn.init(jax.random.key(0), I, dtype)))


def grads_as_params(module: Any, grads: nnx.State) -> jaxrnn.StackParams:
    """``nnx.grad``'s gradients with respect to a module, in the functional layout."""
    graphdef, _, rest = nnx.split(module, nnx.Param, ...)
    return nnx.merge(graphdef, grads, rest).to_params()


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_module_equals_functional_stack_outputs_carries_and_gradients(kind):
    module_cls, factory, options = KINDS[kind]
    rnn = jaxrnn.stack(factory(H, **options), num_layers=2, bidirectional=True)
    params = random_params(rnn)
    module = module_cls.from_params(params, **options)
    x = normal((B, T, I))  # batch-major, the module's default
    carry0 = random_like(module.initial_carry((B,)))
    # A random cotangent for every output and final carry leaf (weights of a linear loss).
    out_shapes = jax.eval_shape(lambda: rnn.apply(params, x, carry=carry0, time_major=False))
    w_carry, w_ys = random_like(out_shapes)

    def loss(ys: jax.Array, carry: Any) -> jax.Array:
        terms = jax.tree.map(lambda a, w: jnp.sum(a * w), (carry, ys), (w_carry, w_ys))
        return sum(jax.tree.leaves(terms))

    @nnx.jit
    def both(module, params, x, carry0, lengths):
        def module_loss(module):
            ys, carry = module(x, carry0, lengths)
            return loss(ys, carry), (ys, carry)

        def functional_loss(params):
            carry, ys = rnn.apply(params, x, carry=carry0, lengths=lengths, time_major=False)
            return loss(ys, carry), (ys, carry)

        (_, module_out), module_grads = nnx.value_and_grad(module_loss, has_aux=True)(module)
        (_, functional_out), functional_grads = jax.value_and_grad(functional_loss, has_aux=True)(
            params
        )
        time_major_out = module(jnp.swapaxes(x, 0, 1), carry0, lengths, time_major=True)
        return module_out, module_grads, functional_out, functional_grads, time_major_out

    module_out, module_grads, functional_out, functional_grads, time_major_out = both(
        module, params, x, carry0, LENGTHS
    )
    ys = module_out[0]
    assert ys.shape == (B, T, module.out_features) and ys.dtype == F64
    assert_trees_close(module_out, functional_out)
    assert_trees_close((jnp.swapaxes(time_major_out[0], 0, 1), time_major_out[1]), module_out)
    np.testing.assert_array_equal(np.asarray(ys[1, 2:]), 0.0)  # past length 2: zeros
    assert_trees_close(grads_as_params(module, module_grads), functional_grads)
    assert all(np.abs(np.asarray(g)).max() > 0 for g in jax.tree.leaves(functional_grads))


def test_cell_options_reach_the_functional_cells():
    module = jaxrnn.nnx.LSTM(I, H, forget_bias=1.0, param_dtype=F64, rngs=nnx.Rngs(0))
    b_ih = module.to_params().first.forward.b_ih
    np.testing.assert_array_equal(np.asarray(b_ih[H : 2 * H]), 1.0)
    assert module.cell_options == {"forget_bias": 1.0}
    assert module.params.first.forward.b_ih.get_value() is b_ih
    assert module.out_features == H and module.initial_carry((B,)).c.shape == (1, 1, B, H)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_functional_params_round_trip_exactly_through_a_module(kind):
    module_cls, factory, options = KINDS[kind]
    rnn = jaxrnn.stack(factory(H, **options), num_layers=3, bidirectional=True)
    params = random_params(rnn)
    runtime_options = {"activation": "relu"} if kind == "elman" else {}
    module = module_cls.from_params(params, **runtime_options)
    assert (module.in_features, module.hidden_features, module.num_layers) == (I, H, 3)
    assert module.bidirectional and module.param_dtype == F64
    out = options.get("proj_size", options.get("output_size", H))
    assert module.out_features == 2 * out
    back = module.to_params()
    assert_trees_equal(back, params)
    assert all(a is b for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(params), strict=True))
    # module -> functional -> module: the same state, path by path.
    again = module_cls.from_params(module.to_params(), **runtime_options)
    assert_trees_equal(nnx.state(again), nnx.state(module))


def test_a_module_built_from_functional_params_gives_the_functional_outputs():
    # The configuration of the dropout test below: the operations compiled for one serve both.
    rnn = jaxrnn.stack(jaxrnn.gru(H), num_layers=2)
    params = random_params(rnn)
    module = jaxrnn.nnx.GRU.from_params(params)
    assert module.cell_options == {} and module.out_features == H
    x = normal((B, T, I))
    with jax.disable_jit():
        ys, carry = module(x, lengths=LENGTHS)
        want_carry, want_ys = rnn.apply(params, x, lengths=LENGTHS, time_major=False)
    assert_trees_equal((ys, carry), (want_ys, want_carry))
    elman = jaxrnn.stack(jaxrnn.elman(H, activation="relu"), bidirectional=True)
    module = jaxrnn.nnx.Elman.from_params(random_params(elman), activation="relu")
    assert module.cell_options == {"activation": "relu"} and module.out_features == 2 * H


class Regressor(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.rnn = jaxrnn.nnx.GRU(2, 8, num_layers=2, dropout=0.1, rngs=rngs)
        self.head = nnx.Linear(self.rnn.out_features, 1, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        ys, _ = self.rnn(x)
        return self.head(ys[:, -1])[:, 0]


def test_a_few_optimizer_steps_under_nnx_jit_reduce_the_loss_on_a_fixed_batch():
    model = Regressor(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(3e-2), wrt=nnx.Param)
    x = jnp.asarray(np.random.default_rng(1).standard_normal((16, 6, 2)), jnp.float32)
    y = jnp.tanh(x[:, -1, 0])

    traces = []

    @nnx.jit
    def train_step(model, optimizer, x, y):
        traces.append(1)

        def loss_fn(model):
            return jnp.mean((model(x) - y) ** 2)

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    before = model.rnn.to_params()
    losses = [float(train_step(model, optimizer, x, y)) for _ in range(8)]
    assert losses[-1] < 0.5 * losses[0], losses
    moved = jax.tree.map(lambda a, b: bool((a != b).any()), model.rnn.to_params(), before)
    assert all(jax.tree.leaves(moved))
    assert int(optimizer.step[...]) == 8
    assert int(model.rnn.rngs.count[...]) == 8  # one dropout key per training step
    assert len(traces) == 1  # the module's static attributes are hashable and stable


def test_split_and_merge_round_trip_with_functional_paths():
    module = jaxrnn.nnx.LSTM(I, H, num_layers=2, dropout=0.5, param_dtype=F64, rngs=nnx.Rngs(0))
    graphdef, params_state, rest = nnx.split(module, nnx.Param, ...)
    paths = {path for path, _ in nnx.to_flat_state(params_state)}
    assert ("params", "first", "forward", "w_ih") in paths
    assert ("params", "rest", "forward", "w_hh") in paths
    assert len(paths) == len(jax.tree.leaves(module.to_params()))
    assert {path for path, _ in nnx.to_flat_state(rest)} == {("rngs", "count"), ("rngs", "key")}
    merged = nnx.merge(graphdef, params_state, rest)
    assert type(merged) is jaxrnn.nnx.LSTM and merged.dropout == 0.5
    assert_trees_equal(merged.to_params(), module.to_params())
    # the graphdef is static and hashable, as nnx.jit needs
    assert hash(graphdef) == hash(nnx.split(merged)[0])


def test_dropout_is_on_only_in_training_mode():
    module = jaxrnn.nnx.GRU(I, H, num_layers=2, dropout=0.5, param_dtype=F64, rngs=nnx.Rngs(0))
    params = module.to_params()
    rnn = module.stack
    x = jnp.ones((B, T, I), F64)
    with jax.disable_jit():
        _, plain = rnn.apply(params, x, time_major=False)
        _, dropped = rnn.apply(params, x, time_major=False, key=jax.random.key(7))
        assert not module.deterministic  # a new module trains, as nnx.Dropout
        train_1, train_2 = module(x)[0], module(x)[0]
        assert bool((train_1 != plain).any()) and bool((train_1 != train_2).any())
        assert_trees_equal(module(x, rngs=jax.random.key(7))[0], dropped)
        assert_trees_equal(module(x, deterministic=True)[0], plain)
        assert_trees_equal(nnx.view(module, deterministic=True)(x)[0], plain)
        assert not module.deterministic
        module.eval()
        assert_trees_equal(module(x)[0], plain)
        assert_trees_equal(module(x, deterministic=False, rngs=jax.random.key(7))[0], dropped)
        # a module built without rngs has no stream: in training mode it says so
        bare = jaxrnn.nnx.GRU.from_params(params, dropout=0.5)
        with pytest.raises(ValueError, match=r"rngs: dropout=0\.5 is on in training mode"):
            bare(x)
        bare.eval()
        assert_trees_equal(bare(x)[0], plain)
    # train()/eval() of an enclosing model reach the recurrent module
    outer = Regressor(nnx.Rngs(0))
    outer.eval()
    assert outer.rnn.deterministic
    outer.train()
    assert not outer.rnn.deterministic
    # no dropout between layers: no random state at all
    assert jaxrnn.nnx.GRU(I, H, num_layers=2, rngs=nnx.Rngs(0)).rngs is None
    assert jaxrnn.nnx.GRU(I, H, dropout=0.5, rngs=nnx.Rngs(0)).rngs is None


def test_bad_inputs_and_options_raise_naming_the_argument():
    module = jaxrnn.nnx.LSTM(I, H, num_layers=2, param_dtype=F64, rngs=nnx.Rngs(0))
    x = jnp.ones((B, T, I), F64)
    with pytest.raises(ValueError, match=r"x: expected shape \[\*batch, T, in_features\] with "):
        module(jnp.ones((B, T, I + 1), F64))
    with pytest.raises(ValueError, match=r"in_features=3, got shape \(5,\)"):
        module(jnp.ones((T,), F64))
    with pytest.raises(TypeError, match="x: expected a floating dtype"):
        module(jnp.ones((B, T, I), jnp.int32))
    bad_carry = jaxrnn.LSTMCarry(jnp.zeros((1, 1, B, H), F64), jnp.zeros((1, 1, B, H), F64))
    with pytest.raises(ValueError, match=r"carry\.h: expected shape \(2, 1, 3, 4\)"):
        module(x, bad_carry)
    with pytest.raises(ValueError, match="lengths: expected one length per sequence"):
        module(x, lengths=jnp.array([1, 2]))
    with pytest.raises(TypeError, match=r"unrol: not an option of jaxrnn\.scan"):
        module(x, unrol=2)
    with pytest.raises(ValueError, match="in_features"):
        jaxrnn.nnx.LSTM(0, H, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="hidden_features"):
        jaxrnn.nnx.GRU(I, 0, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="num_layers"):
        jaxrnn.nnx.GRU(I, H, num_layers=0, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="dropout"):
        jaxrnn.nnx.GRU(I, H, dropout=1.0, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="proj_size"):
        jaxrnn.nnx.LSTM(I, H, proj_size=H, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="activation"):
        jaxrnn.nnx.Elman(I, H, activation="softsign", rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match=r"rngs: expected an nnx\.Rngs"):
        jaxrnn.nnx.GRU(I, H, rngs=0)
    with pytest.raises(TypeError, match="cell_options: expected hashable values"):
        jaxrnn.nnx.Elman(I, H, recurrent_init=[1], rngs=nnx.Rngs(0))
    gru_params = random_params(jaxrnn.stack(jaxrnn.gru(H)))
    with pytest.raises(TypeError, match="params: expected a pytree of structure"):
        jaxrnn.nnx.LSTM.from_params(gru_params)
    with pytest.raises(TypeError, match=r"params: expected jaxrnn\.StackParams"):
        jaxrnn.nnx.GRU.from_params(gru_params.first.forward)
    with pytest.raises(TypeError, match="params: expected a pytree of structure"):
        jaxrnn.nnx.GRU.from_params(gru_params, use_bias=False)


def test_importing_jaxrnn_does_not_import_flax():
    code = "import sys, jaxrnn; assert 'flax' not in sys.modules, 'flax imported'"
    subprocess.run([sys.executable, "-c", code], check=True)

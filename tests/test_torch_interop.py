"""jaxrnn.interop against PyTorch: ``from_torch``'s apply equals ``nn.RNN/LSTM/GRU``.

Every comparison is in float32 with rtol = atol = 1e-5: outputs, final states and
the gradients of a random weighted loss with respect to the input, the initial
state and every weight (matched by PyTorch name through ``to_torch_state_dict``).

Kinds are ``rnn_tanh``, ``rnn_relu``, ``lstm``, ``gru`` and ``lstm_proj`` (an LSTM
with ``proj_size``). Forward equality runs over the first four kinds x 1 or 2
layers x uni- or bidirectional x ``batch_first`` or not x with or without ``hx``.
Gradients (``GRADIENT_CASES``) and packed sequences (``PACKED_CASES``) run on a few
layouts per kind, which together have 1 and 2 layers, both directions, both
layouts, with and without bias and ``hx``.

Beyond the modules' own forward: modules whose weights are computed (parametrize,
both weight norms, prune), bfloat16 and float64 modules, dropout = 1, a whole
model's ``state_dict`` (and a ``torch.save`` file) under a prefix, the cells
``nn.RNNCell/LSTMCell/GRUCell``, and the errors for hostile state dicts and for
exporting cells PyTorch does not compute.

XLA compiles slowly on a CPU: about 0.05 s per distinct operation and 1-3 s for
the gradient of a stacked configuration. So forward checks run op by op
(``jax.disable_jit``, fixture ``_op_by_op``), where the operations compiled for one
test serve the next ones, and gradient checks run under ``jax.jit`` (with ``hx``
and ``lengths`` traced), one compilation each, which also tests the compiled path.
"""

from __future__ import annotations

import contextlib
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import jaxrnn
from jaxrnn.interop import from_torch, to_torch_state_dict

pytestmark = [
    pytest.mark.torch,
    # PyTorch's oneDNN backend warns about (and falls back for) LSTMs with projections,
    # which most tests here include as the kind "lstm_proj".
    pytest.mark.filterwarnings("ignore:LSTM with projections"),
]

T, B, I, H, P = 7, 3, 5, 6, 4  # steps, batch, input size, hidden size, LSTM proj_size
RTOL = ATOL = 1e-5
KINDS = ["rnn_tanh", "rnn_relu", "lstm", "gru"]
ALL_KINDS = [*KINDS, "lstm_proj"]
LENGTHS = [4, T, 1]  # unsorted; includes the full length and the shortest PyTorch allows


class Case(NamedTuple):
    num_layers: int
    bidirectional: bool
    batch_first: bool
    bias: bool = True
    with_hx: bool = True


def case_id(case: Case) -> str:
    parts = [
        f"L{case.num_layers}",
        "bi" if case.bidirectional else "uni",
        "bti" if case.batch_first else "tbi",
        "" if case.bias else "nobias",
        "hx" if case.with_hx else "no_hx",
    ]
    return "-".join(p for p in parts if p)


# Gradients are costly (see the module docstring), so they run on a few layouts per
# kind: one layer (no stacked layers) and two bidirectional layers (stacked layers,
# reverse direction, a 2H-feature input); batch_first, bias and hx vary across them.
GRADIENT_CASES = [
    Case(1, False, False),
    Case(1, True, True, bias=False, with_hx=False),
    Case(2, True, True),
]
PACKED_CASES = [
    Case(1, False, True),
    Case(2, True, False, bias=False),
]
GRADIENT_PARAMS = [
    *(
        pytest.param(kind, case, id=f"{kind}-{case_id(case)}")
        for kind in KINDS
        for case in GRADIENT_CASES
    ),
    pytest.param("lstm_proj", GRADIENT_CASES[-1], id=f"lstm_proj-{case_id(GRADIENT_CASES[-1])}"),
]


@pytest.fixture(autouse=True)
def _op_by_op():
    """Run JAX op by op unless a test re-enables jit (see the module docstring)."""
    with jax.disable_jit():
        yield


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


def make_module(
    kind: str,
    *,
    num_layers: int = 1,
    bidirectional: bool = False,
    batch_first: bool = False,
    bias: bool = True,
    dropout: float = 0.0,
    seed: int = 0,
) -> torch.nn.RNNBase:
    """A float32 PyTorch module of ``kind`` with PyTorch's default init under ``seed``."""
    torch.manual_seed(seed)
    common: dict[str, Any] = {
        "num_layers": num_layers,
        "bidirectional": bidirectional,
        "batch_first": batch_first,
        "bias": bias,
        "dropout": dropout,
    }
    if kind in ("rnn_tanh", "rnn_relu"):
        return torch.nn.RNN(I, H, nonlinearity=kind.removeprefix("rnn_"), **common)
    if kind == "lstm":
        return torch.nn.LSTM(I, H, **common)
    if kind == "lstm_proj":
        return torch.nn.LSTM(I, H, proj_size=P, **common)
    if kind == "gru":
        return torch.nn.GRU(I, H, **common)
    raise AssertionError(kind)


def jaxrnn_cell(kind: str, *, bias: bool = True, **options: Any) -> jaxrnn.Cell:
    """The jaxrnn cell that ``from_torch`` uses for a module of ``kind``."""
    if kind in ("rnn_tanh", "rnn_relu"):
        return jaxrnn.elman(H, activation=kind.removeprefix("rnn_"), use_bias=bias, **options)
    if kind == "lstm":
        return jaxrnn.lstm(H, use_bias=bias, **options)
    if kind == "lstm_proj":
        return jaxrnn.lstm(H, proj_size=P, use_bias=bias, **options)
    if kind == "gru":
        return jaxrnn.gru(H, use_bias=bias, **options)
    raise AssertionError(kind)


def is_lstm(module: torch.nn.RNNBase) -> bool:
    return isinstance(module, torch.nn.LSTM)


def state_shapes(module: torch.nn.RNNBase, batch: int | None) -> list[tuple[int, ...]]:
    """Shapes of ``[h]`` (``[h, c]`` for an LSTM) in PyTorch's layout; unbatched if batch=None."""
    lead = module.num_layers * (2 if module.bidirectional else 1)
    mid = () if batch is None else (batch,)
    h_size = getattr(module, "proj_size", 0) or module.hidden_size
    shapes = [(lead, *mid, h_size)]
    if is_lstm(module):
        shapes.append((lead, *mid, module.hidden_size))
    return shapes


def random_arrays(rng: np.random.Generator, shapes: list[tuple[int, ...]]) -> list[np.ndarray]:
    return [rng.standard_normal(shape).astype(np.float32) for shape in shapes]


def random_input(
    module: torch.nn.RNNBase, rng: np.random.Generator, batch: int | None = B
) -> np.ndarray:
    if batch is None:
        shape: tuple[int, ...] = (T, I)
    elif module.batch_first:
        shape = (batch, T, I)
    else:
        shape = (T, batch, I)
    return rng.standard_normal(shape).astype(np.float32)


def pack_state(module: torch.nn.RNNBase, parts: list[Any]) -> Any:
    """``[h]`` -> h, ``[h, c]`` -> (h, c): the hx / state structure of ``module``."""
    return tuple(parts) if is_lstm(module) else parts[0]


def unpack_state(module: torch.nn.RNNBase, state: Any) -> list[Any]:
    return list(state) if is_lstm(module) else [state]


def weighted_sum(weights: list[Any], values: list[Any]) -> Any:
    return sum((w * v).sum() for w, v in zip(weights, values, strict=True))


def assert_close(actual: Any, desired: Any, err_msg: str = "") -> None:
    np.testing.assert_allclose(
        np.asarray(actual), np.asarray(desired), rtol=RTOL, atol=ATOL, err_msg=err_msg
    )


def compare_grads(module: torch.nn.RNNBase, param_grads: Any) -> None:
    """Compare JAX gradients w.r.t. params with the ``.grad`` of every torch parameter."""
    named = dict(module.named_parameters())
    exported = to_torch_state_dict(param_grads)
    assert list(exported) == list(named)
    for name, grad in exported.items():
        assert named[name].grad is not None, name
        assert grad.dtype == torch.float32, name
        assert_close(grad.numpy(), named[name].grad.numpy(), f"d loss / d {name}")


def torch_run(
    module: torch.nn.RNNBase,
    x: np.ndarray,
    hx: list[np.ndarray] | None,
    lengths: list[int] | None,
    rng: np.random.Generator,
    grads: bool,
) -> dict[str, Any]:
    """Run ``module`` (packed when ``lengths``) and backprop a random weighted loss."""
    x_t = torch.tensor(x, requires_grad=grads)
    hx_t = None if hx is None else [torch.tensor(a, requires_grad=grads) for a in hx]
    hx_arg = None if hx_t is None else pack_state(module, hx_t)
    with contextlib.nullcontext() if grads else torch.no_grad():
        if lengths is None:
            out, state = module(x_t, hx_arg)
        else:
            packed = pack_padded_sequence(
                x_t, torch.tensor(lengths), batch_first=module.batch_first, enforce_sorted=False
            )
            out_packed, state = module(packed, hx_arg)
            total = x.shape[1 if module.batch_first else 0]
            out, _ = pad_packed_sequence(
                out_packed, batch_first=module.batch_first, total_length=total
            )
    states = unpack_state(module, state)
    result: dict[str, Any] = {
        "out": out.detach().numpy(),
        "states": [s.detach().numpy() for s in states],
    }
    if grads:
        weights = random_arrays(rng, [tuple(out.shape), *(tuple(s.shape) for s in states)])
        loss = weighted_sum([torch.tensor(w) for w in weights], [out, *states])
        module.zero_grad()
        loss.backward()
        result["weights"] = weights
        result["d_x"] = x_t.grad.numpy()
        result["d_hx"] = None if hx_t is None else [a.grad.numpy() for a in hx_t]
    return result


def check_against_torch(
    module: torch.nn.RNNBase,
    x: np.ndarray,
    hx: list[np.ndarray] | None,
    *,
    lengths: list[int] | None = None,
    grads: bool = True,
    compiled: bool | None = None,
    seed: int = 0,
) -> None:
    """``from_torch(module)``'s apply matches ``module``: outputs, states and gradients.

    ``hx`` is ``[h_0]`` or ``[h_0, c_0]`` (None: no initial state); ``lengths``
    runs torch on a ``PackedSequence`` and JAX with ``lengths``. With ``grads``,
    the gradients of a random weighted sum of outputs and final states with
    respect to the input, ``hx`` and every weight are compared too. With
    ``compiled`` (by default: with ``grads``), the JAX side runs under
    ``jax.jit`` with ``hx`` and ``lengths`` traced, else op by op.
    """
    if compiled is None:
        compiled = grads
    want = torch_run(module, x, hx, lengths, np.random.default_rng(seed), grads)
    params, apply = from_torch(module)

    def loss_fn(params: Any, x: jax.Array, hx: Any, lengths: Any) -> tuple[jax.Array, Any]:
        hx_arg = None if hx is None else pack_state(module, hx)
        out, state = apply(params, x, hx_arg, lengths=lengths)
        states = unpack_state(module, state)
        if not grads:
            return jnp.zeros((), jnp.float32), (out, states)
        weights = [jnp.asarray(w) for w in want["weights"]]
        return weighted_sum(weights, [out, *states]), (out, states)

    fn = jax.grad(loss_fn, argnums=(0, 1, 2), has_aux=True) if grads else loss_fn
    args = (
        params,
        jnp.asarray(x),
        None if hx is None else [jnp.asarray(a) for a in hx],
        None if lengths is None else jnp.asarray(lengths),
    )
    with jax.disable_jit(False) if compiled else contextlib.nullcontext():
        result, (out, states) = (jax.jit(fn) if compiled else fn)(*args)

    assert out.dtype == jnp.float32
    assert out.shape == want["out"].shape
    assert_close(out, want["out"], "output")
    if lengths is not None:  # zero past each length, like pad_packed_sequence
        out_tm = np.asarray(jnp.swapaxes(out, 0, 1) if module.batch_first else out)
        for b, n in enumerate(lengths):
            assert (out_tm[n:, b] == 0).all()
    assert len(states) == len(want["states"])
    for name, got, ref in zip(("h_n", "c_n"), states, want["states"], strict=False):
        assert got.dtype == jnp.float32
        assert got.shape == ref.shape
        assert_close(got, ref, name)
    if not grads:
        return
    d_params, d_x, d_hx = result
    assert_close(d_x, want["d_x"], "d loss / d x")
    if hx is None:
        assert d_hx is None
    else:
        for name, got, ref in zip(("h_0", "c_0"), d_hx, want["d_hx"], strict=False):
            assert_close(got, ref, f"d loss / d {name}")
    compare_grads(module, d_params)


# --------------------------------------------------------------------------------------
# forward and backward equality
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_first", [False, True], ids=["tbi", "bti"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("num_layers", [1, 2], ids=["L1", "L2"])
@pytest.mark.parametrize("with_hx", [True, False], ids=["hx", "no_hx"])
@pytest.mark.parametrize("kind", KINDS)
def test_forward_matches_torch(kind, with_hx, num_layers, bidirectional, batch_first):
    module = make_module(
        kind, num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first
    )
    rng = np.random.default_rng(1)
    x = random_input(module, rng)
    hx = random_arrays(rng, state_shapes(module, B)) if with_hx else None
    check_against_torch(module, x, hx, grads=False)


def module_for(kind: str, case: Case) -> torch.nn.RNNBase:
    return make_module(
        kind,
        num_layers=case.num_layers,
        bidirectional=case.bidirectional,
        batch_first=case.batch_first,
        bias=case.bias,
    )


@pytest.mark.parametrize(("kind", "case"), GRADIENT_PARAMS)
def test_gradients_match_torch(kind, case):
    module = module_for(kind, case)
    assert case.bias or not any("bias" in name for name, _ in module.named_parameters())
    rng = np.random.default_rng(2)
    x = random_input(module, rng)
    hx = random_arrays(rng, state_shapes(module, B)) if case.with_hx else None
    check_against_torch(module, x, hx)


@pytest.mark.parametrize("case", PACKED_CASES, ids=case_id)
@pytest.mark.parametrize("kind", ALL_KINDS)
def test_lengths_match_packed_sequence(kind, case):
    module = module_for(kind, case)
    rng = np.random.default_rng(5)
    x = random_input(module, rng)
    hx = random_arrays(rng, state_shapes(module, B)) if case.with_hx else None
    check_against_torch(module, x, hx, lengths=LENGTHS)
    check_against_torch(module, x, None, lengths=LENGTHS, grads=False)


@pytest.mark.parametrize("kind", ["gru", "lstm_proj"])
def test_lengths_all_full_equal_no_lengths(kind):
    module = make_module(kind, num_layers=2, bidirectional=True)
    params, apply = from_torch(module)
    x = jnp.asarray(random_input(module, np.random.default_rng(6)))
    out, state = apply(params, x)
    out_len, state_len = apply(params, x, lengths=jnp.full((B,), T))
    assert_close(out_len, out)
    for got, ref in zip(unpack_state(module, state_len), unpack_state(module, state), strict=True):
        assert_close(got, ref)


@pytest.mark.parametrize(
    ("kind", "with_hx", "grads"),
    [("gru", False, False), ("lstm", True, False), ("lstm_proj", True, True)],
    ids=["gru-no_hx", "lstm-hx", "lstm_proj-hx-gradients"],
)
def test_unbatched_matches_torch(kind, with_hx, grads):
    # Input [T, I], hx [L * D, H]. PyTorch ignores batch_first for unbatched input;
    # so must apply.
    module = make_module(kind, num_layers=2, bidirectional=True, batch_first=True)
    rng = np.random.default_rng(7)
    x = random_input(module, rng, batch=None)
    hx = random_arrays(rng, state_shapes(module, None)) if with_hx else None
    check_against_torch(module, x, hx, grads=grads)


# --------------------------------------------------------------------------------------
# state dict round trips
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("num_layers", [1, 2, 3], ids=["L1", "L2", "L3"])
@pytest.mark.parametrize("kind", ALL_KINDS)
def test_state_dict_round_trip_is_exact(kind, num_layers, bidirectional, bias):
    config = {"num_layers": num_layers, "bidirectional": bidirectional, "bias": bias}
    module = make_module(kind, seed=10, **config)
    state = to_torch_state_dict(from_torch(module)[0])
    fresh = make_module(kind, seed=11, **config)
    assert not torch.equal(fresh.weight_ih_l0, module.weight_ih_l0)
    result = fresh.load_state_dict(state)
    assert not result.missing_keys
    assert not result.unexpected_keys
    want, got = module.state_dict(), fresh.state_dict()
    assert list(state) == list(got) == list(want)
    for name, value in want.items():
        assert got[name].dtype == value.dtype == torch.float32, name
        assert torch.equal(got[name], value), name


# Initialising compiles a random-number kernel per parameter shape (seconds): one
# configuration, the one with the most parameter kinds (projection, stacked layers).
@pytest.mark.parametrize(
    ("kind", "num_layers", "bidirectional"), [pytest.param("lstm_proj", 2, True, id="lstm_proj")]
)
def test_jaxrnn_params_exported_to_torch(kind, num_layers, bidirectional):
    rnn = jaxrnn.stack(jaxrnn_cell(kind), num_layers=num_layers, bidirectional=bidirectional)
    with jax.disable_jit(False):  # random number generation op by op is slower still
        params = rnn.init(jax.random.key(12), I)
    module = make_module(kind, num_layers=num_layers, bidirectional=bidirectional)
    result = module.load_state_dict(to_torch_state_dict(params))
    assert not result.missing_keys
    assert not result.unexpected_keys

    rng = np.random.default_rng(13)
    x = random_input(module, rng)
    hx = random_arrays(rng, state_shapes(module, B))
    with torch.no_grad():
        out_t, state_t = module(torch.tensor(x), pack_state(module, [torch.tensor(a) for a in hx]))
    # jaxrnn's own apply: carry with leading axes [num_layers, num_directions].
    parts = [jnp.asarray(a).reshape(num_layers, -1, *a.shape[1:]) for a in hx]
    carry = jaxrnn.LSTMCarry(*parts) if is_lstm(module) else parts[0]
    final, out = rnn.apply(params, jnp.asarray(x), carry=carry)
    assert_close(out, out_t.numpy(), "output")
    for got, ref in zip(unpack_state(module, final), unpack_state(module, state_t), strict=True):
        assert_close(got.reshape(ref.shape), ref.numpy(), "final state")


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_identity_recurrent_init_exported_to_torch(activation):
    rnn = jaxrnn.stack(
        jaxrnn_cell(f"rnn_{activation}", recurrent_init="identity"),
        num_layers=2,
        bidirectional=True,
    )
    with jax.disable_jit(False):
        params = rnn.init(jax.random.key(14), I)
    module = make_module(f"rnn_{activation}", num_layers=2, bidirectional=True)
    module.load_state_dict(to_torch_state_dict(params))
    for layer in range(2):
        for suffix in ("", "_reverse"):
            where = f"_l{layer}{suffix}"
            assert torch.equal(getattr(module, f"weight_hh{where}"), torch.eye(H)), where
            assert torch.equal(getattr(module, f"bias_ih{where}"), torch.zeros(H)), where
            assert torch.equal(getattr(module, f"bias_hh{where}"), torch.zeros(H)), where
            assert getattr(module, f"weight_ih{where}").abs().min() > 0, where


# --------------------------------------------------------------------------------------
# dropout
# --------------------------------------------------------------------------------------


def test_dropout():
    # Layer 1 is made the identity on its input (W_ih = I, W_hh = 0, no bias, relu):
    # layer 0's outputs are relu outputs (>= 0), so layer 1 outputs exactly the
    # (dropped) input it receives, which must be 0 or the undropped value / (1 - p).
    module = make_module("rnn_relu", num_layers=2, dropout=0.5)
    with torch.no_grad():
        module.weight_ih_l1.copy_(torch.eye(H))
        module.weight_hh_l1.zero_()
        module.bias_ih_l1.zero_()
        module.bias_hh_l1.zero_()
    rng = np.random.default_rng(15)
    x = random_input(module, rng)
    hx = random_arrays(rng, state_shapes(module, B))

    # PyTorch's eval mode (no dropout) is apply without key.
    module.eval()
    check_against_torch(module, x, hx, grads=False)

    params, apply = from_torch(module)
    x, hx = jnp.asarray(x), jnp.asarray(hx[0])
    with jax.disable_jit(False):  # random number generation op by op is slow
        apply = jax.jit(apply)
        out, h_n = apply(params, x, hx)
        out_k1, h_n_k1 = apply(params, x, hx, key=jax.random.key(0))
        out_k1b, h_n_k1b = apply(params, x, hx, key=jax.random.key(0))
        out_k2, _ = apply(params, x, hx, key=jax.random.key(1))
    out, out_k1, out_k2 = np.asarray(out), np.asarray(out_k1), np.asarray(out_k2)
    assert out_k1.dtype == np.float32
    # Deterministic for a key, different across keys and from no dropout.
    assert np.array_equal(out_k1, out_k1b)
    assert np.array_equal(h_n_k1, h_n_k1b)
    assert np.abs(out_k1 - out).max() > 1e-3
    assert np.abs(out_k1 - out_k2).max() > 1e-3
    # Only the inputs of layers after the first are dropped (as in PyTorch): the
    # first layer's final state (row 0 of h_n) does not change, the second's does.
    assert_close(h_n_k1[0], h_n[0])
    assert np.abs(np.asarray(h_n_k1[1]) - np.asarray(h_n[1])).max() > 1e-3
    # Each feature is dropped or scaled by 1 / (1 - p), about half of them dropped.
    for dropped in (out_k1, out_k2):
        kept = dropped != 0
        assert_close(dropped[kept], 2.0 * out[kept])
        assert 0.25 < kept[out != 0].mean() < 0.75


# --------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------


def test_from_torch_rejects_other_modules():
    with pytest.raises(TypeError, match="module"):
        from_torch(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("shape", [(I,), (T, B, 2, I)], ids=["rank1", "rank4"])
@pytest.mark.parametrize("kind", ALL_KINDS)
def test_apply_rejects_x_of_wrong_rank(kind, shape):
    params, apply = from_torch(make_module(kind))
    with pytest.raises(ValueError, match="x"):
        apply(params, jnp.zeros(shape, jnp.float32))


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(lambda s: (s[0] + 1, *s[1:]), id="layers"),
        pytest.param(lambda s: (s[0], s[1] + 1, s[2]), id="batch"),
        pytest.param(lambda s: s[1:], id="rank2"),
        pytest.param(lambda s: (*s, 1), id="rank4"),
    ],
)
@pytest.mark.parametrize("kind", ALL_KINDS)
def test_apply_rejects_hx_of_wrong_shape(kind, bad):
    module = make_module(kind, num_layers=2, bidirectional=True)
    params, apply = from_torch(module)
    x = jnp.zeros((T, B, I), jnp.float32)
    shapes = state_shapes(module, B)
    for i in range(len(shapes)):  # break h_0, then (LSTM) c_0
        parts = [jnp.zeros(bad(s) if j == i else s, jnp.float32) for j, s in enumerate(shapes)]
        with pytest.raises(ValueError, match="hx"):
            apply(params, x, pack_state(module, parts))


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_apply_rejects_hx_of_wrong_hidden_size(kind):
    module = make_module(kind, num_layers=2, bidirectional=True)
    params, apply = from_torch(module)
    x = jnp.zeros((T, B, I), jnp.float32)
    shapes = state_shapes(module, B)
    for i in range(len(shapes)):  # break h_0, then (LSTM) c_0
        parts = [
            jnp.zeros((*s[:-1], s[-1] + 1) if j == i else s, jnp.float32)
            for j, s in enumerate(shapes)
        ]
        with pytest.raises(ValueError, match="hx"):
            apply(params, x, pack_state(module, parts))


def test_apply_rejects_unbatched_hx_for_batched_x_and_vice_versa():
    params, apply = from_torch(make_module("gru"))
    with pytest.raises(ValueError, match="hx"):
        apply(params, jnp.zeros((T, B, I), jnp.float32), jnp.zeros((1, H), jnp.float32))
    with pytest.raises(ValueError, match="hx"):
        apply(params, jnp.zeros((T, I), jnp.float32), jnp.zeros((1, B, H), jnp.float32))


@pytest.mark.parametrize(
    ("num_layers", "bidirectional"),
    [
        pytest.param(1, False, id="L1-uni"),
        pytest.param(2, False, id="L2-uni"),
        pytest.param(1, True, id="L1-bi"),
        pytest.param(2, True, id="L2-bi"),
    ],
)
def test_lstm_rejects_hx_that_is_not_a_tuple(num_layers, bidirectional):
    module = make_module("lstm", num_layers=num_layers, bidirectional=bidirectional)
    params, apply = from_torch(module)
    h_0 = jnp.zeros(state_shapes(module, B)[0], jnp.float32)
    with pytest.raises(TypeError, match="hx"):
        apply(params, jnp.zeros((T, B, I), jnp.float32), h_0)


@pytest.mark.parametrize("kind", ["rnn_tanh", "gru"])
def test_apply_rejects_tuple_hx_for_rnn_and_gru(kind):
    module = make_module(kind)
    params, apply = from_torch(module)
    h_0 = jnp.zeros(state_shapes(module, B)[0], jnp.float32)
    with pytest.raises(TypeError, match="hx"):
        apply(params, jnp.zeros((T, B, I), jnp.float32), (h_0,))


def test_to_torch_state_dict_rejects_elman_with_output_layer():
    with jax.disable_jit(False):
        params = jaxrnn.stack(jaxrnn.elman(H, output_size=2)).init(jax.random.key(0), I)
    with pytest.raises(ValueError, match="params"):
        to_torch_state_dict(params)


# --------------------------------------------------------------------------------------
# the weights a module computes with: parametrized, weight-normed, pruned
# --------------------------------------------------------------------------------------


def torch_then_jax(
    module: torch.nn.Module, x: np.ndarray, *, key: Any = None, **options: Any
) -> tuple[list[np.ndarray], list[np.ndarray], Any]:
    """Import ``module`` first (before any torch forward refreshes a stale weight), then run both.

    Returns the outputs and final states of torch and of ``from_torch``'s apply, as
    float32 numpy arrays, and the imported params.
    """
    params, apply = from_torch(module, **options)
    x_t = torch.tensor(x).to(next(module.parameters()).dtype)
    with torch.no_grad():
        out_t, state_t = module(x_t)
    x_j = jnp.asarray(x).astype(jax.tree.leaves(params)[0].dtype)
    out, state = apply(params, x_j, key=key)
    got = [out, *unpack_state(module, state)]
    want = [out_t, *unpack_state(module, state_t)]
    for g, w in zip(got, want, strict=True):
        assert g.shape == tuple(w.shape)
        assert str(g.dtype) == str(w.dtype).removeprefix("torch."), (g.dtype, w.dtype)
    return (
        [np.asarray(g.astype(jnp.float32)) for g in got],
        [w.float().numpy() for w in want],
        params,
    )


def assert_all_close(got: list[np.ndarray], want: list[np.ndarray], **tol: float) -> None:
    tol = tol or {"rtol": RTOL, "atol": ATOL}
    for name, g, w in zip(("output", "h_n", "c_n"), got, want, strict=False):
        np.testing.assert_allclose(g, w, err_msg=name, **tol)


class Scale(torch.nn.Module):
    """A parametrization: the stored tensor times 1.5 (so the effective one differs)."""

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return 1.5 * w


def test_parametrized_module_imports_the_parametrized_weights():
    from torch.nn.utils import parametrize

    module = make_module("lstm", num_layers=2, bidirectional=True)
    parametrize.register_parametrization(module, "weight_hh_l0", Scale())
    parametrize.register_parametrization(module, "bias_ih_l1_reverse", Scale())
    assert "parametrizations.weight_hh_l0.original" in module.state_dict()
    x = random_input(module, np.random.default_rng(20))
    got, want, params = torch_then_jax(module, x)
    assert_all_close(got, want)
    original = module.parametrizations.weight_hh_l0.original
    assert np.array_equal(params.first.forward.w_hh, 1.5 * original.detach().numpy())


def test_weight_norm_parametrization_imports_exactly():
    module = make_module("gru", num_layers=2)
    torch.nn.utils.parametrizations.weight_norm(module, "weight_ih_l1")
    with torch.no_grad():  # a trained magnitude, not the one weight_norm started from
        module.parametrizations.weight_ih_l1.original0.mul_(1.7)
    got, want, _ = torch_then_jax(module, random_input(module, np.random.default_rng(21)))
    assert_all_close(got, want)


@pytest.mark.filterwarnings("ignore:`torch.nn.utils.weight_norm` is deprecated")
def test_old_style_weight_norm_imports_the_weight_a_forward_computes():
    # The old weight_norm stores the weight as a plain attribute, refreshed by a forward
    # pre-hook: changing g (an optimizer step) leaves it stale until the next forward.
    module = make_module("rnn_tanh")
    torch.nn.utils.weight_norm(module, "weight_hh_l0")
    with torch.no_grad():
        module.weight_hh_l0_g.mul_(2.0)
    stale = module.weight_hh_l0.detach().clone()
    got, want, params = torch_then_jax(module, random_input(module, np.random.default_rng(22)))
    assert_all_close(got, want)
    assert not np.allclose(params.first.forward.w_hh, stale.numpy())


def test_pruned_module_imports_the_masked_weights():
    from torch.nn.utils import prune

    module = make_module("lstm_proj", num_layers=2)
    prune.l1_unstructured(module, "weight_hh_l0", amount=0.5)
    prune.l1_unstructured(module, "weight_hr_l1", amount=0.5)
    prune.l1_unstructured(module, "bias_hh_l1", amount=0.3)
    with torch.no_grad():  # a training step on the unmasked tensor, no forward since
        module.weight_hh_l0_orig.add_(0.25)
    got, want, params = torch_then_jax(module, random_input(module, np.random.default_rng(23)))
    assert_all_close(got, want)
    mask = module.weight_hh_l0_mask.numpy()
    w_hh = np.asarray(params.first.forward.w_hh)
    assert (w_hh[mask == 0] == 0).all()
    assert np.array_equal(w_hh[mask == 1], module.weight_hh_l0_orig.detach().numpy()[mask == 1])


# --------------------------------------------------------------------------------------
# dtypes
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["lstm_proj"])
def test_bfloat16_module_keeps_its_dtype(kind):
    module = make_module(kind, num_layers=2, bidirectional=True).to(torch.bfloat16)
    got, want, params = torch_then_jax(module, random_input(module, np.random.default_rng(24)))
    assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {jnp.dtype(jnp.bfloat16)}
    # Both round to bfloat16 (8 bits of mantissa) at every matmul; PyTorch also rounds
    # its state every step, jaxrnn keeps the carry in float32.
    assert_all_close(got, want, rtol=0.05, atol=0.03)
    state = to_torch_state_dict(params)
    for name, value in module.state_dict().items():
        assert state[name].dtype == torch.bfloat16, name
        assert torch.equal(state[name], value), name


def test_float64_module_needs_and_uses_x64():
    # The test suite runs with jax_enable_x64 on (conftest.py).
    module = make_module("lstm", num_layers=2).double()
    with jax.enable_x64(False):
        with pytest.raises(TypeError, match="jax_enable_x64"):
            from_torch(module)
        with pytest.raises(TypeError, match="jax_enable_x64"):
            from_torch(module.state_dict(), batch_first=False)
    params, apply = from_torch(module)
    assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {jnp.dtype(jnp.float64)}
    x = random_input(module, np.random.default_rng(25)).astype(np.float64)
    out, (h_n, c_n) = apply(params, jnp.asarray(x))
    assert out.dtype == h_n.dtype == c_n.dtype == jnp.float64
    with torch.no_grad():
        out_t, (h_t, c_t) = module(torch.tensor(x))
    for g, w in ((out, out_t), (h_n, h_t), (c_n, c_t)):
        np.testing.assert_allclose(np.asarray(g), w.numpy(), rtol=1e-12, atol=1e-12)
    state = to_torch_state_dict(params)
    for name, value in module.state_dict().items():
        assert state[name].dtype == torch.float64, name
        assert torch.equal(state[name], value), name


def test_mixed_or_integer_dtypes_are_refused():
    state = make_module("gru").state_dict()
    with pytest.raises(TypeError, match="one dtype"):
        from_torch({**state, "bias_hh_l0": state["bias_hh_l0"].half()}, batch_first=False)
    with pytest.raises(TypeError, match="bias_ih_l0"):
        from_torch({**state, "bias_ih_l0": state["bias_ih_l0"].long()}, batch_first=False)
    with pytest.raises(TypeError, match="weight_ih_l0"):
        from_torch({**state, "weight_ih_l0": "not a tensor"}, batch_first=False)


# --------------------------------------------------------------------------------------
# dropout = 1, PackedSequence
# --------------------------------------------------------------------------------------


def test_dropout_one_is_accepted_and_matches_torch_in_both_modes():
    # At rate 1 PyTorch's training mode zeroes every layer's input after the first:
    # deterministic, so the keyed apply must equal the module in train mode too.
    module = make_module("lstm", num_layers=3, bidirectional=True, dropout=1.0)
    x = random_input(module, np.random.default_rng(26))
    got_eval, want_eval, _ = torch_then_jax(module.eval(), x)
    assert_all_close(got_eval, want_eval)
    got, want, _ = torch_then_jax(module.train(), x, key=jax.random.key(0))
    assert_all_close(got, want)
    assert np.abs(got[0] - got_eval[0]).max() > 1e-3
    # From a state_dict, with the rate given.
    params, apply = from_torch(module.state_dict(), batch_first=False, dropout=1)
    out, _ = apply(params, jnp.asarray(x), key=jax.random.key(1))
    assert_close(out, want[0])


@pytest.mark.filterwarnings("ignore:dropout option adds dropout after all but last")
def test_dropout_one_on_one_layer_changes_nothing():
    module = make_module("gru", dropout=1.0).train()
    got, want, _ = torch_then_jax(module, random_input(module, np.random.default_rng(27)))
    assert_all_close(got, want)


@pytest.mark.parametrize("dropout", [-0.1, 1.5, True, "0.5"])
def test_invalid_dropout_is_refused(dropout):
    with pytest.raises(ValueError, match="dropout"):
        from_torch(make_module("gru").state_dict(), batch_first=False, dropout=dropout)


def test_apply_refuses_a_packed_sequence_and_says_what_to_pass():
    module = make_module("lstm", batch_first=True)
    params, apply = from_torch(module)
    x = torch.tensor(random_input(module, np.random.default_rng(28)))
    packed = pack_padded_sequence(x, torch.tensor(LENGTHS), batch_first=True, enforce_sorted=False)
    with pytest.raises(TypeError, match=r"PackedSequence.*pad_packed_sequence.*lengths="):
        apply(params, packed)
    # What it says, done, equals the module on the packed sequence.
    padded, lengths = pad_packed_sequence(packed, batch_first=True, total_length=T)
    out, _ = apply(params, jnp.asarray(padded.numpy()), lengths=jnp.asarray(lengths.numpy()))
    with torch.no_grad():
        out_t, _ = pad_packed_sequence(module(packed)[0], batch_first=True, total_length=T)
    assert_close(out, out_t.numpy())


# --------------------------------------------------------------------------------------
# a whole model's state_dict, with a prefix
# --------------------------------------------------------------------------------------


class Encoder(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = torch.nn.LSTM(
            I, H, num_layers=2, bidirectional=True, proj_size=P, batch_first=True
        )
        self.norm = torch.nn.LayerNorm(2 * P)


class Model(torch.nn.Module):
    """What a PyTorch user saves: the LSTM is one submodule among others."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.embed = torch.nn.Embedding(11, I)
        self.encoder = Encoder()
        self.head = torch.nn.Linear(2 * P, 2)


PREFIX = "encoder.lstm."


def lstm_keys(state: dict[str, Any]) -> list[str]:
    return [k for k in state if k.startswith(PREFIX)]


@pytest.mark.filterwarnings("ignore:LSTM with projections")
def test_model_state_dict_round_trip_through_jaxrnn_is_identity():
    model = Model(seed=30)
    state = model.state_dict()
    params, apply = from_torch(state, prefix=PREFIX, batch_first=True)
    # The live model under the same prefix imports the same params.
    live_params, _ = from_torch(model, prefix=PREFIX)
    assert jax.tree.all(jax.tree.map(jnp.array_equal, params, live_params))
    x = random_input(model.encoder.lstm, np.random.default_rng(31))
    with torch.no_grad():
        out_t, (h_t, c_t) = model.encoder.lstm(torch.tensor(x))
    out, (h_n, c_n) = apply(params, jnp.asarray(x))
    for g, w in ((out, out_t), (h_n, h_t), (c_n, c_t)):
        assert_close(g, w.numpy())

    exported = to_torch_state_dict(params, prefix=PREFIX)
    assert list(exported) == lstm_keys(state)
    fresh = Model(seed=32)
    assert not torch.equal(fresh.encoder.lstm.weight_ih_l0, model.encoder.lstm.weight_ih_l0)
    result = fresh.load_state_dict(exported, strict=False)
    assert not result.unexpected_keys
    assert sorted(result.missing_keys) == sorted(set(state) - set(lstm_keys(state)))
    got = fresh.state_dict()
    for name in lstm_keys(state):
        assert got[name].dtype == state[name].dtype, name
        assert torch.equal(got[name], state[name]), name


@pytest.mark.filterwarnings("ignore:LSTM with projections")
def test_import_from_a_torch_save_file(tmp_path):
    model = Model(seed=33)
    path = tmp_path / "model.pt"
    torch.save(model.state_dict(), path)
    loaded = torch.load(path)  # weights_only
    params, apply = from_torch(
        loaded, prefix=PREFIX, batch_first=True, mode="LSTM", hidden_size=H, proj_size=P
    )
    x = random_input(model.encoder.lstm, np.random.default_rng(34))
    with torch.no_grad():
        out_t, _ = model.encoder.lstm(torch.tensor(x))
    assert_close(apply(params, jnp.asarray(x))[0], out_t.numpy())


@pytest.mark.parametrize(
    ("kind", "num_layers", "bidirectional", "bias"),
    [
        pytest.param("lstm_proj", 3, True, True, id="lstm_proj-L3-bi"),
        pytest.param("gru", 2, True, False, id="gru-L2-bi-nobias"),
        pytest.param("rnn_relu", 2, False, False, id="rnn_relu-L2-nobias"),
    ],
)
def test_state_dict_alone_shows_the_configuration(kind, num_layers, bidirectional, bias):
    # numpy arrays (not tensors), no hyper-parameter but the ones tensors cannot show.
    module = make_module(kind, num_layers=num_layers, bidirectional=bidirectional, bias=bias)
    state = {k: v.numpy() for k, v in module.state_dict().items()}
    mode = {"rnn_relu": "rnn_relu"}.get(kind)
    params, apply = from_torch(state, batch_first=False, mode=mode)
    assert len(jax.tree.leaves(params.rest)[0]) == num_layers - 1
    assert (params.first.backward is not None) == bidirectional
    assert (params.first.forward.b_ih is not None) == bias
    x = random_input(module, np.random.default_rng(35))
    with torch.no_grad():
        out_t, state_t = module(torch.tensor(x))
    out, state_j = apply(params, jnp.asarray(x))
    assert_close(out, out_t.numpy())
    for g, w in zip(unpack_state(module, state_j), unpack_state(module, state_t), strict=True):
        assert_close(g, w.numpy())
    assert list(to_torch_state_dict(params)) == list(state)


# --------------------------------------------------------------------------------------
# nn.RNNCell, nn.LSTMCell, nn.GRUCell
# --------------------------------------------------------------------------------------


def make_cell(kind: str, bias: bool) -> torch.nn.RNNCellBase:
    torch.manual_seed(40)
    if kind == "lstm":
        return torch.nn.LSTMCell(I, H, bias=bias)
    if kind == "gru":
        return torch.nn.GRUCell(I, H, bias=bias)
    return torch.nn.RNNCell(I, H, bias=bias, nonlinearity=kind.removeprefix("rnn_"))


PARAMS_TYPES = {
    "lstm": jaxrnn.LSTMParams,
    "gru": jaxrnn.GRUParams,
    "rnn_tanh": jaxrnn.ElmanParams,
    "rnn_relu": jaxrnn.ElmanParams,
}


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("kind", KINDS)
def test_cells_import_step_and_export(kind, bias):
    module = make_cell(kind, bias)
    rng = np.random.default_rng(41)
    params, cell = from_torch(module)
    assert type(params) is PARAMS_TYPES[kind]
    assert (params.b_ih is not None) == bias
    # From a state_dict under a prefix, too (a plain RNN's needs its mode).
    model = torch.nn.ModuleDict({"decoder": torch.nn.ModuleDict({"cell": module})})
    mode = kind if kind.startswith("rnn") else None
    params_sd, _ = from_torch(model.state_dict(), prefix="decoder.cell.", mode=mode)
    assert jax.tree.all(jax.tree.map(jnp.array_equal, params, params_sd))

    for batch in ((B,), ()):  # batched [B, I] and unbatched [I], as PyTorch's cells
        x = rng.standard_normal((*batch, I)).astype(np.float32)
        h = rng.standard_normal((*batch, H)).astype(np.float32)
        c = rng.standard_normal((*batch, H)).astype(np.float32)
        with torch.no_grad():
            if kind == "lstm":
                want = module(torch.tensor(x), (torch.tensor(h), torch.tensor(c)))
                carry_0 = jaxrnn.LSTMCarry(jnp.asarray(h), jnp.asarray(c))
                carry, y = cell.step(params, carry_0, jnp.asarray(x))
                got = (carry.h, carry.c)
            else:
                want = (module(torch.tensor(x), torch.tensor(h)),)
                carry, y = cell.step(params, jnp.asarray(h), jnp.asarray(x))
                got = (carry,)
        assert_close(y, want[0].numpy())
        for g, w in zip(got, want, strict=True):
            assert_close(g, w.numpy())

    state = to_torch_state_dict(params, prefix="decoder.cell.", cell=cell)
    fresh = make_cell(kind, bias)
    with torch.no_grad():
        for p in fresh.parameters():
            p.add_(1.0)
    fresh_model = torch.nn.ModuleDict({"decoder": torch.nn.ModuleDict({"cell": fresh})})
    fresh_model.load_state_dict(state)  # strict: exactly the cell's keys
    for name, value in model.state_dict().items():
        assert torch.equal(fresh_model.state_dict()[name], value), name


def test_lstm_cell_params_with_projection_do_not_export_to_a_cell():
    params, _ = from_torch(make_module("lstm_proj"))
    with pytest.raises(ValueError, match="proj"):
        to_torch_state_dict(params.first.forward)


# --------------------------------------------------------------------------------------
# hostile state dicts and arguments
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_state() -> dict[str, Any]:
    return Model(seed=50).state_dict()


def test_wrong_prefix_names_where_the_recurrent_weights_are(model_state):
    with pytest.raises(ValueError, match=r"prefix.*'encoder\.lstm\.'"):
        from_torch(model_state, prefix="decoder.lstm.", batch_first=True)
    with pytest.raises(ValueError, match=r"ending in '\.'.*'encoder\.lstm\.'"):
        from_torch(model_state, prefix="encoder.lstm", batch_first=True)
    # No prefix: the model's other keys are unexpected, and the error says where to look.
    with pytest.raises(ValueError, match=r"unexpected keys.*embed\.weight.*'encoder\.lstm\.'"):
        from_torch(model_state, batch_first=True)
    with pytest.raises(ValueError, match="no recurrent module"):
        from_torch({"head.weight": torch.zeros(2, 2)}, prefix="head.", batch_first=True)


def test_missing_and_unknown_keys_are_listed(model_state):
    state = dict(model_state)
    del state[PREFIX + "bias_hh_l1_reverse"], state[PREFIX + "weight_hr_l1"]
    with pytest.raises(ValueError, match=r"missing.*encoder\.lstm\.weight_hr_l1") as error:
        from_torch(state, prefix=PREFIX, batch_first=True)
    assert "'encoder.lstm.bias_hh_l1_reverse'" in str(error.value)
    state = {**model_state, PREFIX + "weight_xx_l0": torch.zeros(1)}
    with pytest.raises(ValueError, match=r"unexpected.*encoder\.lstm\.weight_xx_l0"):
        from_torch(state, prefix=PREFIX, batch_first=True)
    state = {**model_state, PREFIX + "weight_ih_l2": model_state[PREFIX + "weight_ih_l1"]}
    with pytest.raises(ValueError, match=r"num_layers=3.*missing.*weight_hh_l2"):
        from_torch(state, prefix=PREFIX, batch_first=True)


def test_state_dict_of_a_parametrized_module_says_what_to_do():
    from torch.nn.utils import parametrize

    module = make_module("gru")
    parametrize.register_parametrization(module, "weight_hh_l0", Scale())
    with pytest.raises(ValueError, match=r"parametrizations\.weight_hh_l0\.original.*live module"):
        from_torch(module.state_dict(), batch_first=False)


@pytest.mark.parametrize(
    ("key", "shape"),
    [
        ("weight_ih_l1", (4 * H, 2 * P + 1)),  # layer 1 reads 2P features
        ("bias_ih_l0_reverse", (4 * H + 1,)),
        ("weight_hr_l1", (P, H + 1)),
        ("weight_hh_l1", (4 * H, P, 1)),
    ],
)
def test_inconsistent_shapes_name_the_key(model_state, key, shape):
    state = {**model_state, PREFIX + key: torch.zeros(shape)}
    with pytest.raises(ValueError, match=rf"encoder\.lstm\.{key}: expected shape"):
        from_torch(state, prefix=PREFIX, batch_first=True)


@pytest.mark.parametrize(
    ("given", "shown_by"),
    [
        ({"hidden_size": H + 1}, "weight_hr_l0"),
        ({"input_size": I + 1}, "weight_ih_l0"),
        ({"num_layers": 3}, "weight_ih_l1"),
        ({"bidirectional": False}, "_reverse"),
        ({"proj_size": 0}, "weight_hr_l0"),
        ({"bias": False}, "bias_ih_l0"),
        ({"mode": "gru"}, "weight_hh_l0"),
        ({"mode": "rnn"}, "rnn_tanh"),
    ],
    ids=lambda v: next(iter(v)) if isinstance(v, dict) else v,
)
def test_given_hyper_parameters_must_match_the_tensors(model_state, given, shown_by):
    with pytest.raises(ValueError, match=next(iter(given))) as error:
        from_torch(model_state, prefix=PREFIX, batch_first=True, **given)
    assert shown_by in str(error.value)


def test_what_tensors_cannot_show_is_required():
    with pytest.raises(ValueError, match="batch_first"):
        from_torch(make_module("lstm").state_dict())
    with pytest.raises(ValueError, match=r"mode='rnn_tanh' or mode='rnn_relu'"):
        from_torch(make_module("rnn_tanh").state_dict(), batch_first=False)
    with pytest.raises(ValueError, match=r"mode='rnn_tanh' or mode='rnn_relu'"):
        from_torch(make_cell("rnn_relu", True).state_dict())
    with pytest.raises(ValueError, match=r"batch_first.*cell"):
        from_torch(make_cell("gru", True).state_dict(), batch_first=True)


def test_live_module_arguments_are_checked():
    module = make_module("gru", num_layers=2)
    with pytest.raises(ValueError, match="num_layers: given 3"):
        from_torch(module, num_layers=3)
    with pytest.raises(ValueError, match="mode: given 'lstm'"):
        from_torch(module, mode="lstm")
    with pytest.raises(ValueError, match="batch_first: given True"):
        from_torch(module, batch_first=True)
    with pytest.raises(ValueError, match="batch_first: not an option of GRUCell"):
        from_torch(make_cell("gru", True), batch_first=False)
    params, _ = from_torch(module, num_layers=2, hidden_size=H, mode="GRU", batch_first=False)
    assert params.first.forward.w_hh.shape == (3 * H, H)
    container = Model(seed=51)
    with pytest.raises(TypeError, match=r"Model.*'encoder\.lstm\.'"):
        from_torch(container)
    with pytest.raises(ValueError, match=r"no submodule 'decoder'.*'encoder\.lstm\.'"):
        from_torch(container, prefix="decoder.")
    with pytest.raises(TypeError, match="source"):
        from_torch([module])


# --------------------------------------------------------------------------------------
# export of cells PyTorch does not compute
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "cell"),
    [
        pytest.param("lstm", jaxrnn.lstm(H, gate_fn=jax.nn.hard_sigmoid), id="lstm-gate_fn"),
        pytest.param("gru", jaxrnn.gru(H, activation_fn=jax.nn.soft_sign), id="gru-activation"),
        pytest.param("rnn_tanh", jaxrnn.elman(H, activation="identity"), id="elman-identity"),
        pytest.param("lstm", jaxrnn.layernorm_lstm(H), id="layernorm_lstm"),
        pytest.param(
            "gru", jaxrnn.gru(H)._replace(step=lambda p, c, x: (c, c)), id="replaced-step"
        ),
        pytest.param("gru", jaxrnn.lstm(H), id="cell-of-other-params"),
    ],
)
def test_export_refuses_a_cell_torch_does_not_compute(kind, cell):
    params, _ = from_torch(make_module(kind))
    with pytest.raises(ValueError, match="cell"):
        to_torch_state_dict(params, cell=cell)
    with pytest.raises(ValueError, match="cell"):
        to_torch_state_dict(params.first.forward, cell=cell)


@pytest.mark.parametrize(
    ("kind", "cell"),
    [
        ("lstm_proj", jaxrnn.lstm(H, proj_size=P)),
        ("gru", jaxrnn.gru(H)),
        ("rnn_relu", jaxrnn.elman(H, activation="relu")),
    ],
    ids=["lstm_proj", "gru", "rnn_relu"],
)
def test_export_accepts_the_cells_torch_computes(kind, cell):
    module = make_module(kind, num_layers=2)
    params, _ = from_torch(module)
    state = to_torch_state_dict(params, cell=cell)
    assert all(torch.equal(state[k], v) for k, v in module.state_dict().items())
    with pytest.raises(TypeError, match="cell"):
        to_torch_state_dict(params, cell=cell.step)
    with pytest.raises(TypeError, match="params"):
        to_torch_state_dict({"weight_ih_l0": params.first.forward.w_ih})

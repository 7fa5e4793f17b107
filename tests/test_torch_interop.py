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

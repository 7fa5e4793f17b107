"""One recurrent layer in each library, timed inside a worker process of its own.

``python benchmarks/_libraries.py LIBRARY [PRECISION]`` is started by ``peers.py``
(``PRECISION``: ``highest``, the default, or ``tf32``; see ``configure``); it reads
one JSON request per line on stdin and answers one JSON line on stdout:

* ``{"op": "info"}`` -> the library's version, the device it runs on (``platform``:
  ``cpu``, ``gpu`` or ``tpu``; ``device_kind``: ``cpu``, ``NVIDIA H200``, ...) and
  the float32 matmul precision it set (``matmul_precision``);
* ``{"op": "peak", "max_n": n}`` -> the best float32 matmul rate of square products
  up to n×n (JAX only; ``max_n`` 4096 when not given);
* ``{"op": "setup", "cell", "mode", "T", "B", "I", "H"}`` -> builds the
  computation and runs it twice: the first call's seconds (compilation for the
  JAX libraries) and the second's are returned; a cell the library lacks
  answers ``{"missing": "..."}``;
* ``{"op": "time", "n": n}`` -> the seconds of n more calls of the current setup.

Modes: ``train`` is the gradient of sum(ys) with respect to the layer's
parameters (forward and backward through all T steps); ``infer`` is the
forward pass returning every step's output; ``step`` is one cell step at B=1
from a given carry (single-step latency, dispatch included). Every call blocks
until its result is ready (``jax.block_until_ready``; ``torch.cuda.synchronize``
on a GPU).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

Runner = Callable[[], Any]


class Missing(Exception):
    """The library has no such cell or mode."""


def _jax_sync(fn: Callable[..., Any], *args: Any) -> Runner:
    import jax

    return lambda: jax.block_until_ready(fn(*args))


def _jax_device() -> dict[str, str]:
    import jax

    try:
        device = jax.devices()[0]
    except Exception as e:  # jax 0.10 raises a bare AssertionError for a missing platform
        wanted = os.environ.get("JAX_PLATFORMS")
        raise RuntimeError(
            f"JAX found no device (JAX_PLATFORMS={wanted!r}: is its jax plugin installed? "
            f"{type(e).__name__}: {e})"
        ) from e
    kind = str(getattr(device, "device_kind", device))
    platform = device.platform
    return {"platform": platform, "device_kind": kind, "device": f"{platform}: {kind}"}


def _inputs(r: dict[str, Any]) -> tuple[Any, Any]:
    import jax

    xs = jax.random.normal(jax.random.key(1), (r["T"], r["B"], r["I"]))
    x1 = jax.random.normal(jax.random.key(2), (1, r["I"]))
    return xs, x1


# --- jaxrnn ------------------------------------------------------------------


def setup_jaxrnn(r: dict[str, Any]) -> Runner:
    import jax
    import jax.numpy as jnp

    import jaxrnn

    cell = {"lstm": jaxrnn.lstm, "gru": jaxrnn.gru, "elman": jaxrnn.elman}[r["cell"]](r["H"])
    params = cell.init(jax.random.key(0), r["I"])
    xs, x1 = _inputs(r)
    if r["mode"] == "train":

        def loss(p: Any, x: Any) -> Any:
            return jnp.sum(jaxrnn.scan(cell, p, x)[1])

        return _jax_sync(jax.jit(jax.grad(loss)), params, xs)
    if r["mode"] == "infer":
        return _jax_sync(jax.jit(lambda p, x: jaxrnn.scan(cell, p, x)[1]), params, xs)
    return _jax_sync(jax.jit(cell.step), params, cell.initial_carry((1,)), x1)


def setup_jaxrnn_cudnn(r: dict[str, Any]) -> Runner:
    """The jaxrnn layer with ``kernel="cudnn"``: the same call, run by cuDNN on a GPU.

    Missing where the kernel option does not exist (a jaxrnn from before it), off a
    GPU, in ``step`` mode (the kernel runs whole sequences), and for a cell the
    dispatch refuses (its ValueError names the cause).
    """
    import jax
    import jax.numpy as jnp

    import jaxrnn

    if "kernel" not in jaxrnn.ScanOptions._fields:
        raise Missing("this jaxrnn has no kernel option (jaxrnn.scan(..., kernel='cudnn'))")
    if r["mode"] == "step":
        raise Missing("kernel='cudnn' runs whole sequences, not single steps")
    if jax.default_backend() != "gpu":
        raise Missing(f"kernel='cudnn' runs on a GPU only (backend {jax.default_backend()!r})")
    cell = {"lstm": jaxrnn.lstm, "gru": jaxrnn.gru, "elman": jaxrnn.elman}[r["cell"]](r["H"])
    params = cell.init(jax.random.key(0), r["I"])
    xs, _ = _inputs(r)

    def apply(p: Any, x: Any) -> Any:
        return jaxrnn.scan(cell, p, x, kernel="cudnn")[1]

    def loss(p: Any, x: Any) -> Any:
        return jnp.sum(apply(p, x))

    fn = jax.jit(jax.grad(loss)) if r["mode"] == "train" else jax.jit(apply)
    try:  # the dispatch checks the cell and the settings when it is traced
        fn.trace(params, xs)
    except ValueError as e:
        raise Missing(f"kernel='cudnn' refuses this layer: {e}") from e
    return _jax_sync(fn, params, xs)


# --- Flax linen ----------------------------------------------------------------


def setup_flax(r: dict[str, Any]) -> Runner:
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    make = {"lstm": nn.OptimizedLSTMCell, "gru": nn.GRUCell, "elman": nn.SimpleCell}
    cell = make[r["cell"]](features=r["H"])
    xs, x1 = _inputs(r)
    if r["mode"] == "step":
        carry = cell.initialize_carry(jax.random.key(3), x1.shape)
        variables = cell.init(jax.random.key(0), carry, x1)
        return _jax_sync(jax.jit(cell.apply), variables, carry, x1)
    rnn = nn.RNN(cell, time_major=True)
    variables = rnn.init(jax.random.key(0), xs)
    if r["mode"] == "train":
        grad = jax.jit(jax.grad(lambda v, x: jnp.sum(rnn.apply(v, x))))
        return _jax_sync(grad, variables, xs)
    return _jax_sync(jax.jit(rnn.apply), variables, xs)


# --- Flax NNX ----------------------------------------------------------------------


def setup_nnx(r: dict[str, Any]) -> Runner:
    import jax
    import jax.numpy as jnp
    from flax import nnx

    make = {"lstm": nnx.OptimizedLSTMCell, "gru": nnx.GRUCell, "elman": nnx.SimpleCell}
    cell = make[r["cell"]](r["I"], r["H"], rngs=nnx.Rngs(0))
    xs, x1 = _inputs(r)
    if r["mode"] == "step":
        carry = cell.initialize_carry(x1.shape, nnx.Rngs(3))
        graph, params, rest = nnx.split(cell, nnx.Param, ...)
        step = jax.jit(lambda s, c, x: nnx.merge(graph, s, rest)(c, x))
        return _jax_sync(step, params, carry, x1)
    # The functional pattern NNX recommends for speed: split once, merge inside jit;
    # the gradient is taken with respect to the nnx.Param leaves only.
    graph, params, rest = nnx.split(nnx.RNN(cell, time_major=True), nnx.Param, ...)

    carry = cell.initialize_carry((r["B"], r["I"]), nnx.Rngs(3))

    def apply(s: Any, x: Any) -> Any:
        return nnx.merge(graph, s, rest)(x, initial_carry=carry)

    if r["mode"] == "train":
        grad = jax.jit(jax.grad(lambda s, x: jnp.sum(apply(s, x))))
        return _jax_sync(grad, params, xs)
    return _jax_sync(jax.jit(apply), params, xs)


# --- Equinox -------------------------------------------------------------------


def setup_equinox(r: dict[str, Any]) -> Runner:
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    if r["cell"] == "elman":
        raise Missing("Equinox has no Elman (simple RNN) cell")
    make = {"lstm": eqx.nn.LSTMCell, "gru": eqx.nn.GRUCell}[r["cell"]]
    cell = make(r["I"], r["H"], key=jax.random.key(0))
    xs, x1 = _inputs(r)
    lstm = r["cell"] == "lstm"

    def zeros(batch: int) -> Any:
        h = jnp.zeros((batch, r["H"]))
        return (h, h) if lstm else h

    if r["mode"] == "step":
        return _jax_sync(
            eqx.filter_jit(jax.vmap(lambda c, x, s: c(x, s), (None, 0, 0))), cell, x1, zeros(1)
        )

    def forward(c: Any, x: Any) -> Any:
        def body(state: Any, x_t: Any) -> Any:
            state = jax.vmap(c)(x_t, state)
            return state, state[0] if lstm else state

        return jax.lax.scan(body, zeros(x.shape[1]), x)[1]

    if r["mode"] == "train":
        grad = eqx.filter_jit(eqx.filter_grad(lambda c, x: jnp.sum(forward(c, x))))
        return _jax_sync(grad, cell, xs)
    return _jax_sync(eqx.filter_jit(forward), cell, xs)


# --- jax.experimental.rnn (cuDNN; GPU only) ------------------------------------------


def setup_jax_cudnn(r: dict[str, Any]) -> Runner:
    import jax
    import jax.numpy as jnp
    from jax.experimental import rnn

    if r["cell"] != "lstm" or r["mode"] == "step":
        raise Missing("jax.experimental.rnn has only a whole-sequence LSTM")
    if jax.default_backend() != "gpu":
        raise Missing("jax.experimental.rnn runs on a GPU only")
    n, t, i, h = r["B"], r["T"], r["I"], r["H"]
    weights = rnn.init_lstm_weight(jax.random.key(0), i, h, 1, False)
    xs = jax.random.normal(jax.random.key(1), (n, t, i))  # batch-major
    h0 = jnp.zeros((1, n, h))
    lengths = jnp.full((n,), t, jnp.int32)

    def apply(w: Any, x: Any) -> Any:
        ys, _, _ = rnn.lstm(x, h0, h0, w, lengths, i, h, 1, 0.0, False)
        return ys

    if r["mode"] == "train":
        return _jax_sync(jax.jit(jax.grad(lambda w, x: jnp.sum(apply(w, x)))), weights, xs)
    return _jax_sync(jax.jit(apply), weights, xs)


# --- PyTorch -------------------------------------------------------------------


def setup_torch(r: dict[str, Any]) -> Runner:
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    i, h = r["I"], r["H"]
    if r["mode"] == "step":
        make = {"lstm": torch.nn.LSTMCell, "gru": torch.nn.GRUCell, "elman": torch.nn.RNNCell}
        cell = make[r["cell"]](i, h).to(device)
        x1 = torch.randn(1, i, device=device)
        h0 = torch.zeros(1, h, device=device)
        state = (h0, h0) if r["cell"] == "lstm" else h0

        def step() -> Any:
            with torch.inference_mode():
                out = cell(x1, state)
            sync()
            return out

        return step
    make = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "elman": torch.nn.RNN}
    layer = make[r["cell"]](i, h).to(device)
    xs = torch.randn(r["T"], r["B"], i, device=device)
    if r["mode"] == "train":

        def train() -> Any:
            layer.zero_grad(set_to_none=True)
            layer(xs)[0].sum().backward()
            sync()

        return train

    def infer() -> Any:
        with torch.inference_mode():
            out = layer(xs)[0]
        sync()
        return out

    return infer


def torch_device() -> dict[str, str]:
    """The device ``setup_torch`` runs on: ``platform`` ``gpu`` (CUDA) or ``cpu``, and its kind.

    The platform and kind are spelled as JAX spells them (``gpu``, ``NVIDIA H200``;
    ``cpu``, ``cpu``), so that the report can compare the libraries' devices.
    """
    import torch

    if torch.cuda.is_available():
        kind = torch.cuda.get_device_name(0)
        return {"platform": "gpu", "device_kind": kind, "device": f"cuda: {kind} (cuDNN)"}
    threads = torch.get_num_threads()
    return {"platform": "cpu", "device_kind": "cpu", "device": f"cpu: {threads} threads"}


# The float32 matmul precisions a worker can be asked for: TF32 off, or on.
PRECISIONS = ("highest", "tf32")


def configure(library: str, precision: str) -> dict[str, Any]:
    """Pin the float32 matmul precision of this worker's library, before any computation.

    ``highest`` keeps full float32 products (TF32 off); ``tf32`` lets NVIDIA GPUs use
    TensorFloat32. JAX workers set ``jax_default_matmul_precision`` (``"highest"`` or
    ``"tensorfloat32"``); the torch worker sets ``torch.set_float32_matmul_precision``
    (``"highest"`` or ``"high"``) and the TF32 switches of cuBLAS and cuDNN (the
    latter covers cuDNN's RNNs). On a CPU neither changes float32 results.

    Args:
      library: a name of ``LIBRARIES``.
      precision: one of ``PRECISIONS``.

    Returns:
      What was set, read back from the library: ``matmul_precision`` and, for torch,
      ``tf32`` (the cuBLAS and cuDNN switches).

    Raises:
      ValueError: for a precision not in ``PRECISIONS``.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"matmul precision {precision!r}: expected one of {PRECISIONS}")
    tf32 = precision == "tf32"
    if library == "torch":
        import torch

        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        torch.set_float32_matmul_precision("high" if tf32 else "highest")
        return {
            "matmul_precision": torch.get_float32_matmul_precision(),
            "tf32": {
                "cuda.matmul": torch.backends.cuda.matmul.allow_tf32,
                "cudnn": torch.backends.cudnn.allow_tf32,
            },
        }
    import jax

    jax.config.update("jax_default_matmul_precision", "tensorfloat32" if tf32 else "highest")
    return {"matmul_precision": jax.default_matmul_precision.value}


LIBRARIES: dict[str, tuple[str, Callable[[dict[str, Any]], Runner]]] = {
    # name -> (package whose version is reported, setup)
    "jaxrnn": ("jaxrnn", setup_jaxrnn),
    "jaxrnn-cudnn": ("jaxrnn", setup_jaxrnn_cudnn),
    "torch": ("torch", setup_torch),
    "flax": ("flax", setup_flax),
    "nnx": ("flax", setup_nnx),
    "equinox": ("equinox", setup_equinox),
    "jax-cudnn": ("jax", setup_jax_cudnn),
}


def matmul_peak(max_n: int = 4096) -> dict[str, Any]:
    """The best float32 GFLOP/s of an n×n matmul (n = 512…4096, ≤ max_n), median of 5.

    Each size is timed after a warm-up call; a ``max_n`` below 512 times that size only.
    """
    import statistics

    import jax
    import jax.numpy as jnp

    best: dict[str, Any] = {"gflops": 0.0}
    for n in [n for n in (512, 1024, 2048, 4096) if n <= max_n] or [max_n]:
        a = jax.random.normal(jax.random.key(0), (n, n))
        f = jax.jit(jnp.matmul)
        jax.block_until_ready(f(a, a))
        times = []
        for _ in range(5):
            start = time.perf_counter()
            jax.block_until_ready(f(a, a))
            times.append(time.perf_counter() - start)
        gflops = 2 * n**3 / statistics.median(times) / 1e9
        if gflops > best["gflops"]:
            best = {"gflops": gflops, "n": n}
    return best


def serve(library: str, precision: str = "highest") -> None:
    """Pin the matmul precision, then answer requests on stdin until it closes."""
    import importlib.metadata

    out = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout = sys.stderr  # anything a library prints stays off the protocol
    package, setup = LIBRARIES[library]
    runner: Runner | None = None
    if precision not in PRECISIONS:
        raise ValueError(f"matmul precision {precision!r}: expected one of {PRECISIONS}")
    pinned: dict[str, Any] | None = None
    failure = ""
    try:
        pinned = configure(library, precision)
    except Exception as e:  # e.g. the library is not installed: every request answers this
        failure = f"{type(e).__name__}: {e}"[:500]
    for line in sys.stdin:
        request = json.loads(line)
        answer: dict[str, Any]
        try:
            if pinned is None:
                answer = {"error": failure}
            elif request["op"] == "info":
                device = torch_device() if library == "torch" else _jax_device()
                version = importlib.metadata.version(package)
                answer = {"version": version, **device, **pinned}
            elif request["op"] == "peak":
                answer = matmul_peak(request.get("max_n", 4096))
            elif request["op"] == "setup":
                runner = None
                start = time.perf_counter()
                runner = setup(request)
                runner()
                first = time.perf_counter() - start
                start = time.perf_counter()
                runner()
                answer = {"first_s": first, "second_s": time.perf_counter() - start}
            else:
                assert runner is not None, "time before setup"
                times = []
                for _ in range(request["n"]):
                    start = time.perf_counter()
                    runner()
                    times.append(time.perf_counter() - start)
                answer = {"times": times}
        except Missing as e:
            answer = {"missing": str(e)}
        except Exception as e:  # reported in the results, not fatal to the grid
            answer = {"error": f"{type(e).__name__}: {e}"[:500]}
        out.write(json.dumps(answer) + "\n")
        out.flush()


if __name__ == "__main__":
    if not 2 <= len(sys.argv) <= 3 or sys.argv[1] not in LIBRARIES:
        sys.exit(f"usage: _libraries.py {{{','.join(LIBRARIES)}}} [{'|'.join(PRECISIONS)}]")
    serve(*sys.argv[1:])

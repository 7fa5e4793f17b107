"""Atomic, resumable checkpoints of any pytree of arrays.

A checkpoint is a directory ``step_<8 digits>/`` holding ``arrays.npz`` (every
leaf of the pytree, in flattening order, NumPy's standard format) and
``meta.json`` (the step, the leaves' shapes and dtypes, and any JSON metadata
you pass). It is written to a hidden temporary directory next to it, each file
flushed to disk, and then renamed into place in one ``os.rename`` — atomic on
POSIX file systems — so a process killed at any moment leaves either the new
checkpoint whole or no trace of it, and the previous one untouched.
:func:`latest` only ever sees complete checkpoints.

Restoring needs a template pytree of the same structure (e.g. freshly
initialised params and optimizer state): the arrays are put back into its
structure after their count, shapes and dtypes are checked against it.

Example:
  >>> import tempfile, jax.numpy as jnp
  >>> from jaxrnn import checkpoint
  >>> state = {"w": jnp.arange(3.0), "step": jnp.int32(7)}
  >>> root = tempfile.mkdtemp()
  >>> path = checkpoint.save(root, 7, state, meta={"task": "adding"})
  >>> checkpoint.latest(root) == path
  True
  >>> restored, meta = checkpoint.restore(path, state)
  >>> restored["w"].tolist(), meta["task"], meta["step"]
  ([0.0, 1.0, 2.0], 'adding', 7)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import jax
import numpy as np

__all__ = ["latest", "restore", "save"]

_NAME = re.compile(r"^step_(\d{8,})$")


def _fsync_dir(path: Path) -> None:
    if os.name == "posix":
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def save(
    directory: str | os.PathLike[str],
    step: int,
    tree: Any,
    *,
    meta: dict[str, Any] | None = None,
    keep: int | None = 2,
) -> Path:
    """Write ``tree`` as the checkpoint of ``step`` under ``directory``, atomically.

    Args:
      directory: where checkpoints live (created if missing).
      step: a non-negative int, the checkpoint's name and ``meta["step"]``.
      tree: a pytree of arrays (JAX or NumPy; PRNG keys must be converted
        with :func:`jax.random.key_data` first).
      meta: JSON-serialisable metadata stored alongside.
      keep: how many of the newest checkpoints to keep; older ones are
        deleted after the new one is in place. None keeps all.

    Returns:
      The checkpoint's directory.

    Example:
      >>> import tempfile, numpy as np
      >>> from jaxrnn import checkpoint
      >>> root = tempfile.mkdtemp()
      >>> for step in (10, 20, 30):
      ...     path = checkpoint.save(root, step, [np.zeros(2)], keep=2)
      >>> sorted(p.name for p in path.parent.iterdir())
      ['step_00000020', 'step_00000030']
    """
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step: expected a non-negative integer, got {step!r}")
    if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 1):
        raise ValueError(f"keep: expected a positive integer or None, got {keep!r}")
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    leaves = [_host_array(leaf) for leaf in jax.tree.leaves(tree)]
    info = {
        **(meta or {}),
        "step": step,
        "leaves": [{"shape": list(a.shape), "dtype": a.dtype.str} for a in leaves],
    }
    final = root / f"step_{step:08d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=root))
    try:
        with open(tmp / "arrays.npz", "wb") as f:
            np.savez(f, *leaves)
            f.flush()
            os.fsync(f.fileno())
        with open(tmp / "meta.json", "w") as f:
            json.dump(info, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        if final.exists():  # the same step saved again (e.g. after a resume)
            shutil.rmtree(final)
        os.rename(tmp, final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if keep is not None:
        for old in _checkpoints(root)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def _host_array(leaf: Any) -> np.ndarray:
    """A NumPy copy of ``leaf``; a replicated array spread over several hosts is read locally."""
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
        if not leaf.is_fully_replicated:
            raise ValueError(
                "tree: expected arrays this process can read whole (replicated or local), got "
                f"one sharded across hosts with sharding {leaf.sharding}"
            )
        return np.asarray(leaf.addressable_data(0))
    return np.asarray(jax.device_get(leaf))


def _checkpoints(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _NAME.match(p.name)]
    return sorted(found, key=lambda p: int(p.name[len("step_") :]))


def latest(directory: str | os.PathLike[str]) -> Path | None:
    """The newest complete checkpoint under ``directory``, or None if there is none.

    Example:
      >>> import tempfile
      >>> from jaxrnn import checkpoint
      >>> checkpoint.latest(tempfile.mkdtemp()) is None
      True
    """
    found = _checkpoints(Path(directory))
    return found[-1] if found else None


def restore(path: str | os.PathLike[str], like: Any) -> tuple[Any, dict[str, Any]]:
    """Read the checkpoint at ``path`` into the structure of ``like``.

    Args:
      path: a checkpoint directory (as :func:`save` or :func:`latest` return).
      like: a pytree with the structure, shapes and dtypes of the saved one.

    Returns:
      ``(tree, meta)``: the arrays (as JAX arrays) in ``like``'s structure and
      the metadata, with ``meta["step"]``.

    Raises:
      ValueError: when the saved arrays do not match ``like``'s leaves in
        count, shape or dtype (e.g. a checkpoint of another model).

    Example:
      >>> import tempfile, numpy as np
      >>> from jaxrnn import checkpoint
      >>> path = checkpoint.save(tempfile.mkdtemp(), 0, (np.ones(2), np.zeros(3)))
      >>> checkpoint.restore(path, (np.ones(2),))
      Traceback (most recent call last):
      ...
      ValueError: checkpoint ...: expected 1 arrays, got 2
    """
    path = Path(path)
    with open(path / "meta.json") as f:
        meta = json.load(f)
    expected, treedef = jax.tree.flatten(like)
    with np.load(path / "arrays.npz") as data:
        arrays = [data[f"arr_{i}"] for i in range(len(data.files))]
    if len(arrays) != len(expected):
        raise ValueError(f"checkpoint {path}: expected {len(expected)} arrays, got {len(arrays)}")
    for i, (got, want) in enumerate(zip(arrays, expected, strict=True)):
        want_shape, want_dtype = np.shape(want), np.asarray(want).dtype
        if got.shape != want_shape or got.dtype != want_dtype:
            raise ValueError(
                f"checkpoint {path}: array {i} expected shape {want_shape} and dtype "
                f"{want_dtype}, got shape {got.shape} and dtype {got.dtype}"
            )
    return jax.tree.unflatten(treedef, [jax.numpy.asarray(a) for a in arrays]), meta

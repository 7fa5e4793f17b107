"""Atomic, self-describing checkpoints of any pytree of arrays, readable with NumPy alone.

A checkpoint is a directory ``step_<step, 8 digits or more>/`` holding

- ``arrays.npz``: NumPy's ``savez`` layout without pickle, one ``.npy`` per leaf named
  after its key path, keys joined by dots (``state.params.w_hh``; a lone array is
  ``leaf``). Dtypes NumPy cannot describe (bfloat16, float8, int4) are stored as raw
  bits, unsigned integers of the same width;
- ``meta.json``: your metadata, plus ``"step"`` and ``"leaves"``, the list of
  ``{"name", "shape", "dtype"}`` in flattening order.

Guarantees, for one writing process per directory:

- Whole or absent: a checkpoint is written to a hidden temporary directory, each file
  and the directory flushed to disk, then renamed into place. A process killed at any
  moment leaves the new checkpoint whole or absent, the others intact.
- Re-saving a step renames the old copy aside (``.step_<step>.old``), the new one in,
  then deletes the old one; killed between the renames, the old copy stands in for its
  step until the next save. Deleting renames to a hidden name first, so nothing
  half-deleted is listed; a save clears what killed ones left behind. Listing ignores
  hidden entries and unrelated files.
- What saves restores: :func:`save` refuses leaves that are not numeric or bool arrays
  (strings, objects, PRNG key arrays), naming their key path.
- Reading is checked: a missing or damaged file, or a leaf unlike the template, is a
  :class:`CheckpointError` naming the checkpoint and the leaf; :func:`restore_latest`
  falls back past damaged checkpoints.

Checkpoints of earlier versions (leaves ``arr_0``, ``arr_1``, ...) are still read,
matched to a template in flattening order.

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
import reprlib
import shutil
import tempfile
import uuid
import warnings
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn._cell import as_int

__all__ = [
    "CheckpointError",
    "checkpoints",
    "latest",
    "read_meta",
    "restore",
    "restore_latest",
    "save",
]

_LISTED = re.compile(r"(\.?)step_(\d{8,})((?:\.old)?)")  # step_N, or .step_N.old set aside
_LEFTOVER = re.compile(r"\.step_\d{8,}(\.old)?\.(tmp|del)-\w+")
_READ_ERRORS = (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error)


class CheckpointError(ValueError):
    """A checkpoint that cannot be read: a file missing or damaged, or unlike the template.

    Example:
      >>> from jaxrnn import checkpoint
      >>> checkpoint.read_meta("/nonexistent/step_00000001")
      Traceback (most recent call last):
      ...
      jaxrnn.checkpoint.CheckpointError: checkpoint /nonexistent/step_00000001: meta.json is missing
    """


def _error(path: Path, why: str) -> CheckpointError:
    return CheckpointError(f"checkpoint {path}: {why}")


class _Leaf(NamedTuple):
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype


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
      step: a non-negative integer (Python, NumPy or JAX scalar), the checkpoint's name
        and ``meta["step"]``. Saving an existing step replaces it atomically.
      tree: a pytree of numeric or bool arrays (JAX or NumPy). For a PRNG key, save
        ``jax.random.key_data(key)`` and rebuild it with ``jax.random.wrap_key_data``.
      meta: JSON-serialisable metadata, without the keys ``"step"`` and ``"leaves"``.
      keep: how many checkpoints to keep: the one just written, and of the others the
        ``keep - 1`` of highest step; the rest are deleted once the new one is in
        place. None keeps all.

    Returns:
      The checkpoint's directory.

    Example:
      >>> import tempfile, numpy as np
      >>> from jaxrnn import checkpoint
      >>> root = tempfile.mkdtemp()
      >>> for step in (10, 20, 30, 5):
      ...     path = checkpoint.save(root, step, [np.zeros(2)], keep=2)
      >>> sorted(p.name for p in path.parent.iterdir())
      ['step_00000005', 'step_00000030']
    """
    number, count = as_int(step), None if keep is None else as_int(keep)
    if number is None or number < 0:
        raise ValueError(f"step: expected a non-negative integer, got {step!r}")
    if keep is not None and (count is None or count < 1):
        raise ValueError(f"keep: expected a positive integer or None, got {keep!r}")
    if meta is not None and (not isinstance(meta, dict) or {"step", "leaves"} & meta.keys()):
        raise ValueError(f"meta: expected a dict without 'step' and 'leaves', got {meta!r:.200}")
    names, arrays = _flatten(tree)
    leaves = [
        {"name": n, "shape": a.shape, "dtype": a.dtype.name}
        for n, a in zip(names, arrays, strict=True)
    ]
    try:
        text = json.dumps(
            {**(meta or {}), "step": number, "leaves": leaves}, indent=1, default=_scalar
        )
    except (TypeError, ValueError) as err:
        raise ValueError(f"meta: expected JSON-serialisable values, got {err}") from err
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    _tidy(root)
    final, aside = root / f"step_{number:08d}", root / f".step_{number:08d}.old"
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=root))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp's 0700 would make the checkpoint private
    try:
        _write(tmp / "arrays.npz", lambda f: _write_arrays(f, names, arrays))
        _write(tmp / "meta.json", lambda f: f.write(text.encode()))
        _fsync_dir(tmp)
        if final.exists():
            os.rename(final, aside)
        os.rename(tmp, final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if aside.exists():
        _delete(aside)
    if count is not None:  # keep the one just written and the count - 1 others of highest step
        others = [p for s, p in _list(root) if s != number]
        for old in others[: max(len(others) - (count - 1), 0)]:
            _delete(old)
    return final


def _scalar(value: Any) -> Any:
    """JSON for NumPy and JAX scalars in ``meta``; a TypeError for anything else."""
    if isinstance(value, np.generic | jax.Array) and np.ndim(value) == 0:
        return value.item()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _flatten(tree: Any) -> tuple[list[str], list[np.ndarray]]:
    """Leaf names and NumPy copies, each leaf checked; errors name it ``tree[...]``."""
    names: dict[str, str] = {}
    arrays = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        where, name = f"tree{jax.tree_util.keystr(path)}", _name(path)
        if name in names:
            raise ValueError(
                f"{where}: expected key paths distinct once joined by dots, got {names[name]} "
                f"and {where}, both {name!r}"
            )
        names[name] = where
        arrays.append(_host_array(leaf, where))
    return list(names), arrays


def _name(path: jax.tree_util.KeyPath) -> str:
    return jax.tree_util.keystr(path, simple=True, separator=".") or "leaf"


def _host_array(leaf: Any, where: str) -> np.ndarray:
    """A NumPy copy of ``leaf``; a replicated array spread over several hosts is read locally."""
    expected = f"{where}: expected a numeric or bool array, got"
    dtype = getattr(leaf, "dtype", None)
    if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        raise ValueError(f"{expected} a PRNG key array ({dtype}); save jax.random.key_data(key)")
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
        if not leaf.is_fully_replicated:
            raise ValueError(
                f"{where}: expected an array this process can read whole (replicated or "
                f"local), got one sharded across hosts with sharding {leaf.sharding}"
            )
        a = np.asarray(leaf.addressable_data(0))
    else:
        a = np.asarray(jax.device_get(leaf))
    if a.dtype != np.bool_ and not jax.dtypes.issubdtype(a.dtype, np.number):
        raise ValueError(f"{expected} {type(leaf).__name__} {reprlib.repr(leaf)} (dtype {a.dtype})")
    return a if a.dtype.isnative else a.astype(a.dtype.newbyteorder("="))


def _stored(dtype: np.dtype) -> np.dtype:
    """How ``arrays.npz`` stores ``dtype``: itself, or raw bits if NumPy cannot describe it."""
    return dtype if np.dtype(dtype.str) == dtype else np.dtype(f"u{dtype.itemsize}")


def _write_arrays(f: Any, names: list[str], arrays: list[np.ndarray]) -> None:
    with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
        for name, a in zip(names, arrays, strict=True):
            with z.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, a.view(_stored(a.dtype)), allow_pickle=False)


def _write(path: Path, write: Callable[[Any], object]) -> None:
    with open(path, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    if os.name == "posix":
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _delete(path: Path) -> None:
    """Rename ``path`` to a hidden name, then delete it: it is never listed half-deleted."""
    trash = path.with_name(f".{path.name.lstrip('.')}.del-{uuid.uuid4().hex}")
    try:
        os.rename(path, trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def _parse(p: Path) -> tuple[int, bool] | None:
    """``(step, set aside)`` for a directory ``step_N`` or ``.step_N.old``, else None."""
    m = _LISTED.fullmatch(p.name)
    if m is None or bool(m[1]) != bool(m[3]) or m[2] != f"{int(m[2]):08d}" or not p.is_dir():
        return None
    return int(m[2]), bool(m[1])


def _tidy(root: Path) -> None:
    """Delete what killed saves left: temporary, half-deleted and superseded copies."""
    for p in root.iterdir():
        found = _parse(p)
        if _LEFTOVER.fullmatch(p.name):
            shutil.rmtree(p, ignore_errors=True)
        elif found and found[1] and (root / f"step_{found[0]:08d}").is_dir():
            _delete(p)


def _list(root: Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of each checkpoint by step; a copy set aside stands in for its step."""
    steps: dict[int, Path] = {}
    for p in root.iterdir() if root.is_dir() else ():
        found = _parse(p)
        if found and not (found[1] and found[0] in steps):  # step_N wins over .step_N.old
            steps[found[0]] = p
    return sorted(steps.items())


def checkpoints(directory: str | os.PathLike[str]) -> list[Path]:
    """Every checkpoint under ``directory``, by step (see :func:`latest` for the newest).

    Example:
      >>> import tempfile, numpy as np
      >>> from jaxrnn import checkpoint
      >>> root = tempfile.mkdtemp()
      >>> for step in (5, 10):
      ...     _ = checkpoint.save(root, step, np.zeros(2), keep=None)
      >>> [p.name for p in checkpoint.checkpoints(root)]
      ['step_00000005', 'step_00000010']
    """
    return [path for _, path in _list(Path(directory))]


def latest(directory: str | os.PathLike[str]) -> Path | None:
    """The checkpoint of highest step under ``directory``.

    Args:
      directory: where :func:`save` wrote checkpoints.

    Returns:
      Its path, or None if there is none. After a save killed while replacing that
      step, it is the old copy set aside, ``.step_<step>.old``. It was complete when
      written; to fall back past one damaged since, use :func:`restore_latest`.

    Example:
      >>> import tempfile, numpy as np
      >>> from jaxrnn import checkpoint
      >>> root = tempfile.mkdtemp()
      >>> checkpoint.latest(root) is None
      True
      >>> _ = checkpoint.save(root, 3, np.zeros(2))
      >>> checkpoint.latest(root).name
      'step_00000003'
    """
    found = _list(Path(directory))
    return found[-1][1] if found else None


def read_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The metadata of a checkpoint, without reading its arrays.

    Args:
      path: a checkpoint directory (as :func:`save` or :func:`latest` return).

    Returns:
      The ``meta`` given to :func:`save`, with ``"step"`` and ``"leaves"``.

    Raises:
      CheckpointError: when ``meta.json`` is missing, not JSON, or not a checkpoint's.

    Example:
      >>> import tempfile, numpy as np
      >>> from jaxrnn import checkpoint
      >>> path = checkpoint.save(tempfile.mkdtemp(), 4, {"w": np.ones((2, 3))}, meta={"lr": 0.1})
      >>> meta = checkpoint.read_meta(path)
      >>> meta["lr"], meta["step"], meta["leaves"]
      (0.1, 4, [{'name': 'w', 'shape': [2, 3], 'dtype': 'float64'}])
    """
    return _open(Path(path))[0]


def _open(path: Path) -> tuple[dict[str, Any], list[_Leaf], bool]:
    """The metadata, its leaves, and whether they are unnamed (earlier versions: ``arr_<i>``)."""
    try:
        with open(path / "meta.json", "rb") as f:
            meta = json.load(f)
    except FileNotFoundError as err:
        raise _error(path, "meta.json is missing") from err
    except (OSError, ValueError) as err:
        raise _error(path, f"meta.json is unreadable: {err}") from err
    try:
        if not isinstance(meta["step"], int):
            raise TypeError
        leaves = [
            _Leaf(d.get("name", f"arr_{i}"), tuple(map(int, d["shape"])), np.dtype(d["dtype"]))
            for i, d in enumerate(meta["leaves"])
        ]
        return meta, leaves, any("name" not in d for d in meta["leaves"])
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        why = (
            f"meta.json: expected 'step' and 'leaves' as save writes them, got {reprlib.repr(meta)}"
        )
        raise _error(path, why) from err


def _match(path: Path, leaves: list[_Leaf], legacy: bool, like: Any) -> Callable[[list], Any]:
    """Check the leaves against ``like``'s; return how to put the arrays into its structure."""
    if like is None:
        return lambda arrays: {leaf.name: a for leaf, a in zip(leaves, arrays, strict=True)}
    flat, treedef = jax.tree_util.tree_flatten_with_path(like)
    names = [_name(p) for p, _ in flat]
    index = {leaf.name: i for i, leaf in enumerate(leaves)}
    order = list(range(len(names))) if legacy else [index.get(n, -1) for n in names]
    if len(leaves) != len(names) or -1 in order:
        why = f"expected {len(names)} leaves (like's), got {len(leaves)}"
        if not legacy:
            known = set(names)
            missing = [n for n, i in zip(names, order, strict=True) if i == -1]
            extra = [leaf.name for leaf in leaves if leaf.name not in known]
            for what, some in (("missing", missing), ("not in like", extra)):
                if some:
                    why += f"; {what}: {', '.join(some[:5])}" + (", ..." if len(some) > 5 else "")
        raise _error(path, why)
    for name, (_, want), i in zip(names, flat, order, strict=True):
        a = want if hasattr(want, "shape") and hasattr(want, "dtype") else np.asarray(want)
        if leaves[i].shape != tuple(a.shape) or leaves[i].dtype != a.dtype:
            raise _error(
                path,
                f"{name}: expected shape {tuple(a.shape)} and dtype {a.dtype}, "
                f"got shape {leaves[i].shape} and dtype {leaves[i].dtype}",
            )
    numpy = [isinstance(want, np.ndarray | np.generic) for _, want in flat]
    return lambda arrays: jax.tree_util.tree_unflatten(
        treedef,
        [arrays[i] if n else jnp.asarray(arrays[i]) for i, n in zip(order, numpy, strict=True)],
    )


def _load(path: Path, leaves: list[_Leaf]) -> list[np.ndarray]:
    """Every leaf's array from ``arrays.npz``, checked against ``meta.json``."""
    arrays, where = [], "arrays.npz is unreadable"
    try:
        with zipfile.ZipFile(path / "arrays.npz") as z:
            for leaf in leaves:
                where = f"arrays.npz: {leaf.name}"
                with z.open(f"{leaf.name}.npy") as f:
                    a = np.lib.format.read_array(f, allow_pickle=False)
                if a.shape != leaf.shape or a.dtype != _stored(leaf.dtype):
                    raise _error(
                        path,
                        f"{where}: expected shape {leaf.shape} and dtype {_stored(leaf.dtype)} "
                        f"(meta.json's), got shape {a.shape} and dtype {a.dtype}",
                    )
                arrays.append(a.view(leaf.dtype))
    except CheckpointError:
        raise
    except FileNotFoundError as err:
        raise _error(path, "arrays.npz is missing") from err
    except KeyError as err:
        raise _error(path, f"{where}: missing") from err
    except _READ_ERRORS as err:
        raise _error(path, f"{where}: {err}") from err
    return arrays


def restore(path: str | os.PathLike[str], like: Any = None) -> tuple[Any, dict[str, Any]]:
    """Read a checkpoint, into the structure of ``like`` if given.

    Args:
      path: a checkpoint directory (as :func:`save` or :func:`latest` return).
      like: None, or a pytree with the saved structure, shapes and dtypes (arrays or
        ``jax.ShapeDtypeStruct``); leaves are matched by name (by position for
        checkpoints of earlier versions).

    Returns:
      ``(tree, meta)``: with ``like``, its structure holding JAX arrays (NumPy arrays
      where ``like``'s leaf is one); without, a dict from leaf name to NumPy array in
      saved order. ``meta`` is as :func:`read_meta` returns it.

    Raises:
      CheckpointError: when a file is missing or damaged, or the saved leaves do not
        match ``like``'s in names, count, shapes or dtypes (e.g. another model).

    Example:
      >>> import tempfile, numpy as np
      >>> from jaxrnn import checkpoint
      >>> path = checkpoint.save(tempfile.mkdtemp(), 0, {"a": np.ones(2), "b": np.zeros(3)})
      >>> checkpoint.restore(path)[0]
      {'a': array([1., 1.]), 'b': array([0., 0., 0.])}
      >>> checkpoint.restore(path, {"a": np.ones(2), "b": np.zeros(4)})
      Traceback (most recent call last):
      ...
      jaxrnn.checkpoint.CheckpointError: checkpoint ...: b: expected shape (4,) and dtype float64,
      got shape (3,) and dtype float64
    """
    path = Path(path)
    meta, leaves, legacy = _open(path)
    return _match(path, leaves, legacy, like)(_load(path, leaves)), meta


def restore_latest(
    directory: str | os.PathLike[str],
    like: Any = None,
    *,
    check: Callable[[dict[str, Any]], object] | None = None,
) -> tuple[Any, dict[str, Any], Path]:
    """Restore the newest intact checkpoint under ``directory``.

    Checkpoints are tried from the highest step down; one with a file missing or damaged
    is skipped with a one-line warning naming it and why (given once an intact one is
    found; with none, the error lists them instead), and left in place (saving its step
    again replaces it; pruning deletes it in turn).

    Args:
      directory: where :func:`save` wrote checkpoints.
      like: as for :func:`restore`. A checkpoint unlike it raises: that is the wrong
        template, not damage.
      check: called with a checkpoint's metadata before its arrays are read; what it
        raises (e.g. on a config mismatch) propagates.

    Returns:
      ``(tree, meta, path)``: what :func:`restore` returns, and the checkpoint's path.

    Raises:
      CheckpointError: when no checkpoint is intact; it lists those tried and why.

    Example:
      >>> import tempfile, warnings, numpy as np
      >>> from jaxrnn import checkpoint
      >>> root = tempfile.mkdtemp()
      >>> _ = checkpoint.save(root, 1, {"w": np.ones(2)}, meta={"hidden": 8})
      >>> (checkpoint.save(root, 2, {"w": np.ones(2)}) / "meta.json").write_text("{")
      1
      >>> def check(meta):
      ...     if meta["hidden"] != 8:
      ...         raise ValueError(f"resume: saved hidden={meta['hidden']}, given 8")
      >>> with warnings.catch_warnings(record=True) as caught:
      ...     warnings.simplefilter("always")
      ...     tree, meta, path = checkpoint.restore_latest(root, {"w": np.ones(2)}, check=check)
      >>> path.name, meta["step"], tree["w"].tolist()
      ('step_00000001', 1, [1.0, 1.0])
      >>> print(caught[0].message)
      restore_latest: skipping checkpoint .../step_00000002: meta.json is unreadable: ...
    """
    root, skipped = Path(directory), []
    for _, path in reversed(_list(root)):
        try:
            meta, leaves, legacy = _open(path)
        except CheckpointError as err:
            skipped.append(str(err))
        else:
            if check is not None:
                check(meta)
            build = _match(path, leaves, legacy, like)  # unlike ``like`` is not damage: raises
            try:
                restored = build(_load(path, leaves))
            except CheckpointError as err:
                skipped.append(str(err))
            else:  # warned only now: when nothing is intact, the error lists them instead
                for reason in skipped:
                    warnings.warn(f"restore_latest: skipping {reason}", stacklevel=2)
                return restored, meta, path
    tried = "; ".join(skipped) or "there is none"
    raise CheckpointError(f"checkpoint directory {root}: no intact checkpoint: {tried}")

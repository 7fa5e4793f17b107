"""Checkpoints: atomic saves and re-saves, pruning, a self-describing format, checked restores."""

import json
import os
import re
import shutil
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import optax
import pytest

from jaxrnn import checkpoint
from jaxrnn.checkpoint import CheckpointError


def _entries(root):
    return sorted(p.name for p in root.iterdir())


def _values(path):
    return {name: a.tolist() for name, a in checkpoint.restore(path)[0].items()}


# keep and pruning


def test_saving_a_lower_step_keeps_the_one_just_written(tmp_path):
    for step in (10, 20, 30):
        checkpoint.save(tmp_path, step, {"w": np.full(2, step)}, keep=2)
    path = checkpoint.save(tmp_path, 5, {"w": np.full(2, 5)}, keep=2)
    assert _entries(tmp_path) == ["step_00000005", "step_00000030"]
    assert _values(path) == {"w": [5, 5]}
    checkpoint.save(tmp_path, 7, {"w": np.zeros(2)}, keep=1)
    assert _entries(tmp_path) == ["step_00000007"]
    for step in (1, 2, 3):
        checkpoint.save(tmp_path, step, {"w": np.zeros(2)}, keep=None)
    assert _entries(tmp_path) == [f"step_0000000{step}" for step in (1, 2, 3, 7)]


# atomic re-save

_KILL_BETWEEN_THE_RENAMES = """
import os, sys
import numpy as np
from jaxrnn import checkpoint

rename = os.rename

def killing_rename(src, dst):
    if os.path.basename(dst) == "step_00000005":  # the new copy, about to be renamed in
        os._exit(3)
    rename(src, dst)

os.rename = killing_rename
checkpoint.save(sys.argv[1], 5, {"w": np.full(3, 2.0)}, meta={"run": "second"})
"""


def test_a_resave_killed_between_its_renames_leaves_the_old_copy(tmp_path):
    checkpoint.save(tmp_path, 4, {"w": np.zeros(3)})
    checkpoint.save(tmp_path, 5, {"w": np.ones(3)}, meta={"run": "first"})
    killed = subprocess.run([sys.executable, "-c", _KILL_BETWEEN_THE_RENAMES, str(tmp_path)])
    assert killed.returncode == 3
    old = tmp_path / ".step_00000005.old"
    assert checkpoint.latest(tmp_path) == old
    restored, meta = checkpoint.restore(old, {"w": np.zeros(3)})
    assert restored["w"].tolist() == [1.0, 1.0, 1.0] and meta["run"] == "first"
    assert checkpoint.restore_latest(tmp_path)[2] == old
    # The next save puts the step back in place and clears what the killed one left.
    checkpoint.save(tmp_path, 5, {"w": np.full(3, 3.0)}, meta={"run": "third"})
    assert _entries(tmp_path) == ["step_00000004", "step_00000005"]
    assert _values(tmp_path / "step_00000005") == {"w": [3.0, 3.0, 3.0]}


def test_an_old_copy_left_beside_its_step_is_ignored_then_deleted(tmp_path):
    path = checkpoint.save(tmp_path, 5, {"w": np.ones(2)})
    shutil.copytree(path, tmp_path / ".step_00000005.old")  # killed before deleting it
    assert checkpoint.latest(tmp_path) == path
    checkpoint.save(tmp_path, 6, {"w": np.ones(2)}, keep=1)
    assert _entries(tmp_path) == ["step_00000006"]


def test_a_crash_while_resaving_leaves_the_step_untouched(tmp_path, monkeypatch):
    path = checkpoint.save(tmp_path, 5, {"w": np.ones(2)})

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np.lib.format, "write_array", crash)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save(tmp_path, 5, {"w": np.zeros(2)})
    assert _entries(tmp_path) == ["step_00000005"]
    assert _values(path) == {"w": [1.0, 1.0]}


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="needs /proc to name fds")
def test_files_and_directories_are_flushed_to_disk(tmp_path, monkeypatch):
    synced = []
    fsync = os.fsync

    def recording_fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    checkpoint.save(tmp_path, 1, {"w": np.ones(2)})
    tmp = os.path.dirname(synced[0])
    assert os.path.basename(tmp).startswith(".step_00000001.tmp-")
    assert synced == [f"{tmp}/arrays.npz", f"{tmp}/meta.json", tmp, str(tmp_path)]


def test_listing_ignores_hidden_and_unrelated_entries(tmp_path):
    path = checkpoint.save(tmp_path, 2, {"w": np.ones(2)})
    (tmp_path / "step_00000009").write_text("a file, not a checkpoint")
    for name in ("step_9", "step_000000009", "step_00000009x", ".step_00000009", "notes"):
        (tmp_path / name).mkdir()
    (tmp_path / ".step_00000009.tmp-abc").mkdir()  # a killed save's temporary copy
    (tmp_path / ".step_00000001.del-abc").mkdir()  # a killed deletion
    assert checkpoint.latest(tmp_path) == path
    assert checkpoint.latest(tmp_path / "missing") is None
    checkpoint.save(tmp_path, 3, {"w": np.ones(2)}, keep=1)
    assert _entries(tmp_path) == [
        ".step_00000009",
        "notes",
        "step_000000009",
        "step_00000003",
        "step_00000009",
        "step_00000009x",
        "step_9",
    ]


# what saves restores


class _Opaque:
    def __repr__(self):
        return "Opaque()"


@pytest.mark.parametrize(
    ("leaf", "got"),
    [
        ("abc", "str 'abc' (dtype <U3)"),
        (np.array(["a", "b"]), "ndarray array(['a', 'b'], dtype='<U1') (dtype <U1)"),
        (np.array([1.0, None]), "(dtype object)"),
        (_Opaque(), "_Opaque Opaque() (dtype object)"),
    ],
)
def test_leaves_that_could_not_be_restored_are_refused(tmp_path, leaf, got):
    tree = {"params": [np.zeros(2), {"bad": leaf}]}
    with pytest.raises(ValueError, match=re.escape("tree['params'][1]['bad']: expected a numeric")):
        checkpoint.save(tmp_path, 1, tree)
    with pytest.raises(ValueError, match=re.escape(got)):
        checkpoint.save(tmp_path, 1, tree)
    assert _entries(tmp_path) == []


def test_prng_keys_are_refused_with_a_hint(tmp_path):
    with pytest.raises(ValueError, match=r"tree\['key'\]: .* PRNG key array .*random.key_data"):
        checkpoint.save(tmp_path, 1, {"key": jax.random.key(0)})


@pytest.mark.parametrize("dtype", [ml_dtypes.bfloat16, ml_dtypes.float8_e4m3fn, ml_dtypes.int4])
def test_dtypes_numpy_cannot_describe_round_trip(tmp_path, dtype):
    w = np.arange(-3, 3).astype(dtype)
    path = checkpoint.save(tmp_path, 1, {"w": w, "j": jnp.asarray(w)})
    restored, _ = checkpoint.restore(path, {"w": w, "j": jnp.asarray(w)})
    assert isinstance(restored["w"], np.ndarray) and isinstance(restored["j"], jax.Array)
    for a in (*restored.values(), *checkpoint.restore(path)[0].values()):
        assert a.dtype == dtype and np.asarray(a).tolist() == w.tolist()
    leaves = checkpoint.read_meta(path)["leaves"]
    assert leaves[0] == {"name": "j", "shape": [6], "dtype": np.dtype(dtype).name}
    with np.load(path / "arrays.npz", allow_pickle=False) as data:  # NumPy alone reads the bits
        assert data["w"].dtype == f"u{np.dtype(dtype).itemsize}"


# a self-describing format


class _Params(NamedTuple):
    w_hh: np.ndarray
    b: np.ndarray


def test_leaves_are_stored_under_their_key_paths(tmp_path):
    tree = {
        "state": (_Params(np.ones((2, 3)), np.zeros(3, np.float32)), [np.int32(7)]),
        "key": np.array([0, 7], np.uint32),
        "layer.0": np.bool_(True),
    }
    path = checkpoint.save(tmp_path, 1, tree)
    names = ["key", "layer.0", "state.0.w_hh", "state.0.b", "state.1.0"]
    with np.load(path / "arrays.npz", allow_pickle=False) as data:
        assert data.files == names
    assert checkpoint.read_meta(path)["leaves"] == [
        {"name": "key", "shape": [2], "dtype": "uint32"},
        {"name": "layer.0", "shape": [], "dtype": "bool"},
        {"name": "state.0.w_hh", "shape": [2, 3], "dtype": "float64"},
        {"name": "state.0.b", "shape": [3], "dtype": "float32"},
        {"name": "state.1.0", "shape": [], "dtype": "int32"},
    ]
    flat, meta = checkpoint.restore(path)
    assert list(flat) == names and meta["step"] == 1
    for name, want in zip(names, jax.tree.leaves(tree), strict=True):
        assert type(flat[name]) is np.ndarray and flat[name].dtype == np.asarray(want).dtype
        np.testing.assert_array_equal(flat[name], want)


@pytest.mark.smoke
def test_a_training_state_round_trips_by_name(tmp_path):
    params = {"rnn": {"w_hh": jnp.ones((3, 3)), "b": jnp.zeros(3)}, "out": jnp.ones((3, 1))}
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3))
    tree = {"state": (params, opt.init(params), jnp.int32(4)), "key": jnp.array([1, 2], jnp.uint32)}
    path = checkpoint.save(tmp_path, 4, tree)
    like = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), tree)
    restored, _ = checkpoint.restore(path, like)
    assert jax.tree.structure(restored) == jax.tree.structure(tree)
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(tree), strict=True):
        assert isinstance(a, jax.Array) and a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    assert "state.1.1.0.mu.rnn.w_hh" in checkpoint.restore(path)[0]


def test_key_paths_that_join_to_one_name_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"tree\['a'\]\['b'\] and tree\['a.b'\], both 'a.b'"):
        checkpoint.save(tmp_path, 1, {"a": {"b": np.ones(1)}, "a.b": np.ones(1)})


def test_checkpoints_of_the_previous_format_are_still_read(tmp_path):
    tree = {"b": np.zeros(3, np.float32), "a": np.arange(2)}
    leaves = jax.tree.leaves(tree)
    path = tmp_path / "step_00000003"
    path.mkdir()
    np.savez(path / "arrays.npz", *leaves)
    spec = [{"shape": list(a.shape), "dtype": a.dtype.str} for a in leaves]
    (path / "meta.json").write_text(json.dumps({"config": {"h": 8}, "step": 3, "leaves": spec}))
    restored, meta = checkpoint.restore(path, tree)
    assert restored["a"].tolist() == [0, 1] and restored["b"].tolist() == [0, 0, 0]
    assert meta["config"] == {"h": 8} and checkpoint.latest(tmp_path) == path
    assert _values(path) == {"arr_0": [0, 1], "arr_1": [0.0, 0.0, 0.0]}
    with pytest.raises(CheckpointError, match=r": b: expected shape \(4,\) and dtype float32"):
        checkpoint.restore(path, {"a": np.arange(2), "b": np.zeros(4, np.float32)})
    with pytest.raises(CheckpointError, match=r"expected 1 leaves \(like's\), got 2$"):
        checkpoint.restore(path, {"a": np.arange(2)})


# checked restores


def _flip_a_data_byte(path):
    data = bytearray((path / "arrays.npz").read_bytes())
    at = data.find(np.full(4, 1.5).tobytes())
    data[at] ^= 0xFF
    (path / "arrays.npz").write_bytes(bytes(data))


def _drop_the_leaf(path):
    with zipfile.ZipFile(path / "arrays.npz", "w") as z:
        z.writestr("other.npy", b"")


_DAMAGE = {
    "meta.json is missing": lambda p: (p / "meta.json").unlink(),
    "meta.json is unreadable: ": lambda p: (p / "meta.json").write_text('{"step": 1,'),
    "meta.json: expected 'step' and 'leaves' as save writes them, got [1]": lambda p: (
        p / "meta.json"
    ).write_text("[1]"),
    "arrays.npz is missing": lambda p: (p / "arrays.npz").unlink(),
    "arrays.npz is unreadable: ": lambda p: (p / "arrays.npz").write_bytes(b"garbage"),
    "arrays.npz is unreadable:": lambda p: (p / "arrays.npz").write_bytes(
        (p / "arrays.npz").read_bytes()[:-40]
    ),
    "arrays.npz: state.w: ": _flip_a_data_byte,
    "arrays.npz: state.w: missing": _drop_the_leaf,
}


@pytest.mark.parametrize("why", list(_DAMAGE))
def test_restore_names_the_file_and_what_is_wrong(tmp_path, why):
    path = checkpoint.save(tmp_path, 1, {"state": {"w": np.full(4, 1.5)}})
    _DAMAGE[why](path)
    for like in (None, {"state": {"w": np.zeros(4)}}):
        with pytest.raises(CheckpointError) as info:
            checkpoint.restore(path, like)
        assert isinstance(info.value, ValueError)
        assert str(info.value).startswith(f"checkpoint {path}: {why}")
    if why.startswith("meta.json"):
        with pytest.raises(CheckpointError, match=re.escape(f"checkpoint {path}: {why}")):
            checkpoint.read_meta(path)


def test_restore_names_the_leaf_unlike_the_template(tmp_path):
    path = checkpoint.save(tmp_path, 10, {"state": {"w_hh": np.zeros((20, 5), np.float32)}})
    with pytest.raises(CheckpointError) as info:
        checkpoint.restore(path, {"state": {"w_hh": np.zeros((32, 8), np.float32)}})
    assert str(info.value) == (
        f"checkpoint {path}: state.w_hh: expected shape (32, 8) and dtype float32, "
        "got shape (20, 5) and dtype float32"
    )
    with pytest.raises(CheckpointError) as info:
        checkpoint.restore(path, {"state": {"w_ih": np.zeros((20, 5), np.float32)}})
    assert str(info.value) == (
        f"checkpoint {path}: expected 1 leaves (like's), got 1; missing: state.w_ih; "
        "not in like: state.w_hh"
    )
    with pytest.raises(CheckpointError) as info:
        checkpoint.restore(path, {"state": {"w_hh": np.zeros((20, 5), np.float32), "b": 0.0}})
    assert (
        str(info.value) == f"checkpoint {path}: expected 2 leaves (like's), got 1; missing: state.b"
    )


def test_read_meta_gives_the_metadata_without_the_arrays(tmp_path):
    path = checkpoint.save(tmp_path, 3, [np.ones(2)], meta={"config": {"hidden": 8}})
    (path / "arrays.npz").unlink()
    assert checkpoint.read_meta(path) == {
        "config": {"hidden": 8},
        "step": 3,
        "leaves": [{"name": "0", "shape": [2], "dtype": "float64"}],
    }


# restore_latest


def test_restore_latest_skips_damaged_checkpoints_with_a_warning(tmp_path):
    for step in (1, 2, 3):
        checkpoint.save(tmp_path, step, {"w": np.full(2, float(step))}, keep=None)
    (tmp_path / "step_00000003" / "arrays.npz").write_bytes(b"garbage")
    (tmp_path / "step_00000002" / "meta.json").unlink()
    with pytest.warns(UserWarning, match="restore_latest: skipping") as caught:
        tree, meta, path = checkpoint.restore_latest(tmp_path, {"w": np.zeros(2)})
    assert path == tmp_path / "step_00000001" and meta["step"] == 1
    assert tree["w"].tolist() == [1.0, 1.0]
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2 and all("\n" not in m for m in messages)
    three, two = tmp_path / "step_00000003", tmp_path / "step_00000002"
    assert messages[0].startswith(f"restore_latest: skipping checkpoint {three}: arrays.npz")
    assert messages[1] == f"restore_latest: skipping checkpoint {two}: meta.json is missing"
    assert len(_entries(tmp_path)) == 3  # the damaged ones are left in place


def test_restore_latest_lets_check_and_template_errors_through(tmp_path):
    for step in (1, 2):
        checkpoint.save(tmp_path, step, {"w": np.ones(2)}, meta={"hidden": 8})
    seen = []

    def check(meta):
        seen.append(meta["step"])
        raise ValueError("resume: another run")

    with pytest.raises(ValueError, match="resume: another run"):
        checkpoint.restore_latest(tmp_path, {"w": np.ones(2)}, check=check)
    assert seen == [2]
    with pytest.raises(CheckpointError, match=r"step_00000002: w: expected shape \(3,\)"):
        checkpoint.restore_latest(tmp_path, {"w": np.ones(3)})  # not damage: no fallback
    tree, _, path = checkpoint.restore_latest(tmp_path, check=lambda meta: None)
    assert path.name == "step_00000002" and tree["w"].tolist() == [1.0, 1.0]


def test_restore_latest_says_what_it_tried_when_nothing_is_intact(tmp_path):
    with pytest.raises(CheckpointError, match="no intact checkpoint: there is none"):
        checkpoint.restore_latest(tmp_path / "missing")
    path = checkpoint.save(tmp_path, 1, {"w": np.ones(2)})
    (path / "meta.json").unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the error lists what was skipped: no warning besides
        with pytest.raises(CheckpointError) as info:
            checkpoint.restore_latest(tmp_path)
    assert str(info.value) == (
        f"checkpoint directory {tmp_path}: no intact checkpoint: "
        f"checkpoint {path}: meta.json is missing"
    )


# arguments


@pytest.mark.parametrize("integer", [int, np.int64, np.int32, np.uint8, jnp.int32])
def test_step_and_keep_take_numpy_and_jax_integers(tmp_path, integer):
    checkpoint.save(tmp_path, integer(3), [np.zeros(1)], keep=integer(1))
    path = checkpoint.save(tmp_path, integer(4), [np.zeros(1)], keep=integer(1))
    assert _entries(tmp_path) == ["step_00000004"]
    assert checkpoint.read_meta(path)["step"] == 4


@pytest.mark.parametrize(
    "bad", [True, np.bool_(True), 3.0, np.float32(3), jnp.float32(3), jnp.arange(2), "3", None]
)
def test_bad_steps_and_keeps_are_refused(tmp_path, bad):
    with pytest.raises(
        ValueError, match=re.escape(f"step: expected a non-negative integer, got {bad!r}")
    ):
        checkpoint.save(tmp_path, bad, [np.zeros(1)])
    if bad is not None:
        with pytest.raises(ValueError, match="keep: expected a positive integer or None, got"):
            checkpoint.save(tmp_path, 1, [np.zeros(1)], keep=bad)
    for step, keep in ((-1, 2), (np.int64(-1), 2), (1, 0), (1, jnp.int32(-2))):
        with pytest.raises(ValueError, match="expected a"):
            checkpoint.save(tmp_path, step, [np.zeros(1)], keep=keep)
    assert _entries(tmp_path) == []


def test_meta_is_checked_before_anything_is_written(tmp_path):
    with pytest.raises(
        ValueError, match=r"meta: expected a dict without 'step' and 'leaves', got \{'step': 2\}"
    ):
        checkpoint.save(tmp_path, 1, [np.zeros(1)], meta={"step": 2})
    with pytest.raises(ValueError, match="meta: expected JSON-serialisable values, got"):
        checkpoint.save(tmp_path, 1, [np.zeros(1)], meta={"lr": object()})
    assert _entries(tmp_path) == []
    # NumPy and JAX scalars are numbers, as everywhere else.
    path = checkpoint.save(
        tmp_path, 1, [np.zeros(1)], meta={"lr": np.float32(0.5), "n": jnp.int32(3)}
    )
    meta = checkpoint.read_meta(path)
    assert (meta["lr"], meta["n"]) == (0.5, 3)
    assert path.stat().st_mode & 0o077 == 0o777 & ~_umask() & 0o077  # not private to its owner


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask

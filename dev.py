"""Developer bootstrap for jaxrnn (standard library only).

Usage::

    python3 dev.py demo [ARGS...]   # install jaxrnn[plots], then run `jaxrnn demo ARGS...`
    python3 dev.py test [ARGS...]   # lint + `pytest -n 2`; with ARGS: only `pytest -n 2 ARGS`
    python3 dev.py lint             # ruff check, ruff format --check, mypy
    python3 dev.py bench [ARGS...]  # install the peers, then `benchmarks/peers.py ARGS...`

A virtualenv is created in `.venv` next to this file (override the location with the
`JAXRNN_VENV` environment variable). Installation is skipped when a stamp file in the
venv shows that `pyproject.toml` and the requested extras are unchanged. Each command
is echoed with a `+ ` prefix; the script exits with the first non-zero exit code.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
import sys
import venv
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("JAXRNN_VENV") or ROOT / ".venv").expanduser().resolve()
WINDOWS = os.name == "nt"
BIN = VENV / ("Scripts" if WINDOWS else "bin")
PY = str(BIN / ("python.exe" if WINDOWS else "python"))
# Pinned and installed on its own first: an unpinned torch pulls a multi-GB CUDA build.
TORCH = "torch==2.13.0"
# command -> (extras for `pip install -e .[extras]`, install the pinned torch first?)
PROFILES: dict[str, tuple[str, bool]] = {
    "demo": ("plots", False),
    "test": ("test,interop,plots", True),
    "lint": ("test,interop,plots", True),  # same env as `test`, so mypy sees the same packages
    "bench": ("bench,interop", True),  # PyTorch, Flax, Equinox and matplotlib for peers.py
}


def tool(name: str) -> str:
    """Return the path of a console script installed in the venv."""
    return str(BIN / (f"{name}.exe" if WINDOWS else name))


def run(cmd: Sequence[str]) -> int:
    """Echo `cmd` with a `+ ` prefix, run it from the repo root, return its exit code."""
    print("+ " + shlex.join(cmd), flush=True)
    env = dict(os.environ, VIRTUAL_ENV=str(VENV))
    env["PATH"] = os.pathsep.join([str(BIN), env.get("PATH", "")])
    return subprocess.run(cmd, cwd=ROOT, env=env, check=False).returncode


def run_all(cmds: Sequence[Sequence[str]]) -> int:
    """Run commands in order, stopping at (and returning) the first non-zero exit code."""
    for cmd in cmds:
        if code := run(cmd):
            return code
    return 0


def ensure_env(profile: str) -> int:
    """Create the venv if needed and (re)install the project when the stamp is stale."""
    extras, with_torch = PROFILES[profile]
    if not Path(PY).exists():
        print(f"+ {shlex.quote(sys.executable)} -m venv {shlex.quote(str(VENV))}", flush=True)
        venv.create(VENV, with_pip=True)
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes())
    digest.update(f"\0{extras}\0{TORCH if with_torch else ''}".encode())
    stamp = VENV / f".jaxrnn-dev-{extras.replace(',', '-') or 'base'}.stamp"
    if stamp.exists() and stamp.read_text().strip() == digest.hexdigest():
        return 0
    pip = [PY, "-m", "pip", "install"]
    cmds = [[*pip, "--quiet", "--upgrade", "pip"]]
    if with_torch:
        cmds.append([*pip, TORCH])
    cmds.append([*pip, "-e", f".[{extras}]" if extras else "."])
    if code := run_all(cmds):
        return code
    stamp.write_text(digest.hexdigest() + "\n")
    return 0


def main(argv: Sequence[str]) -> int:
    """Dispatch `demo`, `test`, `lint` or `bench`; return the process exit code."""
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(__doc__)
        return 0 if argv else 2
    command, rest = argv[0], list(argv[1:])
    if command not in PROFILES:
        print(
            f"dev.py: unknown command {command!r} (expected demo, test, lint or bench)",
            file=sys.stderr,
        )
        return 2
    if command == "lint" and rest:
        print("dev.py: `lint` takes no arguments", file=sys.stderr)
        return 2
    if sys.version_info < (3, 11):  # noqa: UP036 -- dev.py may be run by an older python3
        print(f"dev.py: Python >= 3.11 required, found {sys.version.split()[0]}", file=sys.stderr)
        return 2
    if code := ensure_env(command):
        return code
    if command == "demo":
        return run([tool("jaxrnn"), "demo", *rest])
    if command == "bench":
        return run([PY, str(ROOT / "benchmarks" / "peers.py"), *rest])
    lint = [[tool("ruff"), "check", "."], [tool("ruff"), "format", "--check", "."], [tool("mypy")]]
    pytest = [PY, "-m", "pytest", "-n", "2", *rest]
    if command == "lint":
        return run_all(lint)
    return run_all([pytest] if rest else [*lint, pytest])


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        sys.exit(130)

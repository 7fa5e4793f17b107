"""Developer bootstrap for jaxrnn (standard library only).

Usage::

    python3 dev.py demo [ARGS...]   # install jaxrnn[plots], then run `jaxrnn demo ARGS...`
    python3 dev.py test [ARGS...]   # lint, `pytest -n 2`, floors; with ARGS: `pytest -n 2 ARGS`
    python3 dev.py lint             # ruff check, ruff format --check, mypy
    python3 dev.py floors [PYTHON]  # the smoke tests against the dependency floors (see below)
    python3 dev.py bench [--profile cpu|cuda|tpu] [--dry-run] [ARGS...]
                                    # install the peers, then `benchmarks/peers.py ARGS...`
    python3 dev.py device-check [--dry-run] [--out DIR] [--steps ...] [--budget STEP=S]
                                    # tests, peers and DEER on a GPU, < 8 min (see below)

A virtualenv is created in `.venv` next to this file (override the location with the
`JAXRNN_VENV` environment variable). Installation is skipped when a stamp file in the
venv shows that `pyproject.toml` and the requested extras are unchanged. Each command
is echoed with a `+ ` prefix; the script exits with the first non-zero exit code.

`floors` tests the oldest releases that `pyproject.toml` allows, and the install a user
makes: in a venv of its own (`.venv-floors`, or `.venv-floors-X.Y` for another
interpreter PYTHON) it installs `jaxrnn[nnx] @ git+file://<this checkout>@<HEAD>` with
every `>=` floor of `dependencies` and of the `nnx` extra pinned `==`, then runs the tests
marked `smoke` from the same commit, against the installed copy. It tests the commit
HEAD, not uncommitted changes (it says so when there are some): what it checks is what a
`pip install` from git gets. The dependencies are reinstalled only when the floors change.

`bench --profile` chooses the accelerator the peers run on (default: the
`JAXRNN_BENCH_PROFILE` environment variable, else `cpu`); each profile has a venv of its
own, so that one never replaces another's packages:

- `cpu`: `.venv` (as `test`), CPU jax and the pinned CPU torch 2.13.0; peers.py runs with
  `JAX_PLATFORMS=cpu CUDA_VISIBLE_DEVICES=` so that on a GPU machine no library takes it.
- `cuda`: `.venv-bench-cuda`, `jax[cuda13]` and torch 2.14.1 (PyPI's build for CUDA 13,
  the CUDA major of JAX's plugin); `JAX_PLATFORMS=cuda`, so that JAX fails rather than
  falls back to the CPU.
- `tpu`: `.venv-bench-tpu`, `jax[tpu]` and no torch (PyTorch has no TPU backend here; a
  CPU torch would be compared across devices): the peers are Flax and Equinox;
  `JAX_PLATFORMS=tpu`.

`--dry-run` prints the install and benchmark commands without running them. Options of
`peers.py` follow (`--quick`, `--tf32`, ...): see `benchmarks/README.md`.

`device-check` is the one check to run when a GPU machine is at hand; it installs
nothing (such a machine may have no network): it runs `benchmarks/device_check.py` with
the interpreter that runs `dev.py`, whose packages must include jax with its GPU plugin,
torch, flax, equinox, optax, jaxtyping, pytest and pytest-xdist, and imports jaxrnn from
this tree. In under 8 minutes, each step with a budget and a hard timeout: the tests of
the cells, the fused path, the cuDNN dispatch, bfloat16 and DEER (`pytest -n`); the quick
peer grid (PyTorch on cuDNN, `jax.experimental.rnn`, jaxrnn's `kernel="cudnn"`) with
LSTM training at T=512, B=64, I=512, H=512 measured first; DEER against the sequential
GRU at T = 10^3, 10^4, 10^5. It writes `device_check.{json,md,log}` and the benchmarks'
files (7 in all) to `--out` (default `benchmarks/results/gpu`), with the verdicts of the
two GPU targets (LSTM train >= 1.0x PyTorch cuDNN there; DEER >= 10x the sequential GRU
at T = 10^4, H <= 8). Without a GPU it stops at once (exit 2); `--dry-run` runs every
step on the CPU with tiny sizes into a temporary folder (about a minute; a test runs it).
On a device machine that runs one command and returns the files written under `$OUT`:

    PYTHONUNBUFFERED=1 python3 dev.py device-check --out $OUT      # timeout 600 s
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shlex
import subprocess
import sys
import tarfile
import tempfile
import venv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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


def run(
    cmd: Sequence[str], env_dir: Path = VENV, extra_env: Mapping[str, str] | None = None
) -> int:
    """Echo `cmd` with a `+ ` prefix, run it from the repo root, return its exit code.

    It runs with the venv `env_dir` activated and `extra_env` added to the environment.
    """
    shown = "".join(f"{k}={shlex.quote(v)} " for k, v in (extra_env or {}).items())
    print("+ " + shown + shlex.join(cmd), flush=True)
    env = dict(os.environ, VIRTUAL_ENV=str(env_dir), **(extra_env or {}))
    bin_dir = env_dir / ("Scripts" if WINDOWS else "bin")
    env["PATH"] = os.pathsep.join([str(bin_dir), env.get("PATH", "")])
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
    return install(VENV, extras, TORCH if with_torch else "")


def install_commands(env_dir: Path, extras: str, torch: str, jax: str) -> list[list[str]]:
    """The pip commands that `install` runs in the venv `env_dir`.

    Args:
      env_dir: the venv.
      extras: the project's extras, comma-separated.
      torch: a torch requirement installed first, on its own ("" for none).
      jax: a requirement installed with the project, e.g. `jax[cuda13]` ("" for none).

    Returns:
      The commands, in order.
    """
    py = str(env_dir / ("Scripts/python.exe" if WINDOWS else "bin/python"))
    pip = [py, "-m", "pip", "install"]
    cmds = [[*pip, "--quiet", "--upgrade", "pip"]]
    if torch:
        cmds.append([*pip, torch])
    cmds.append([*pip, "-e", f".[{extras}]" if extras else ".", *([jax] if jax else [])])
    return cmds


def install(env_dir: Path, extras: str, torch: str, jax: str = "", dry_run: bool = False) -> int:
    """Create the venv `env_dir` if needed and run `install_commands` when its stamp is stale.

    With `dry_run`, only print what would be run (the venv is neither created nor changed).
    """
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes())
    # The version is read from jaxrnn/__init__.py: a new one must reach the installed metadata.
    digest.update(f"\0{source_version()}\0{extras}\0{torch}".encode())
    if jax:
        digest.update(f"\0{jax}".encode())
    stamp = env_dir / f".jaxrnn-dev-{extras.replace(',', '-') or 'base'}.stamp"
    if stamp.exists() and stamp.read_text().strip() == digest.hexdigest():
        return 0
    cmds = install_commands(env_dir, extras, torch, jax)
    py = cmds[0][0]
    if dry_run:
        if not Path(py).exists():
            print(f"+ {shlex.quote(sys.executable)} -m venv {shlex.quote(str(env_dir))}")
        print("".join(f"+ {shlex.join(cmd)}\n" for cmd in cmds), end="", flush=True)
        return 0
    if not Path(py).exists():
        print(f"+ {shlex.quote(sys.executable)} -m venv {shlex.quote(str(env_dir))}", flush=True)
        venv.create(env_dir, with_pip=True)
    for cmd in cmds:
        if code := run(cmd, env_dir):
            return code
    stamp.write_text(digest.hexdigest() + "\n")
    return 0


# `bench --profile`: the accelerator the peers run on (the module docstring says why each).
@dataclass(frozen=True)
class BenchProfile:
    """How `dev.py bench` installs and runs the peers for one accelerator.

    Attributes:
      venv: the profile's venv.
      torch: the torch requirement, installed first ("" for no torch).
      jax: the jax requirement installed with the project ("" for the project's own).
      extras: the project's extras.
      env: added to peers.py's environment.
    """

    venv: Path
    torch: str
    jax: str
    extras: str
    env: dict[str, str]


BENCH_PROFILES: dict[str, BenchProfile] = {
    "cpu": BenchProfile(
        VENV, TORCH, "", "bench,interop", {"JAX_PLATFORMS": "cpu", "CUDA_VISIBLE_DEVICES": ""}
    ),
    "cuda": BenchProfile(
        ROOT / ".venv-bench-cuda",
        "torch==2.14.1",  # PyPI's Linux build of 2.14.1 is for CUDA 13, as jax[cuda13]
        "jax[cuda13]",
        "bench,interop",
        {"JAX_PLATFORMS": "cuda"},
    ),
    "tpu": BenchProfile(
        ROOT / ".venv-bench-tpu", "", "jax[tpu]", "bench", {"JAX_PLATFORMS": "tpu"}
    ),
}


def bench_args(argv: Sequence[str]) -> tuple[str, bool, list[str]]:
    """Split `bench`'s arguments into (profile, dry run?, the arguments for peers.py).

    The profile is `--profile NAME` (or `--profile=NAME`), else `JAXRNN_BENCH_PROFILE`,
    else `cpu`.

    Raises:
      ValueError: for a profile that `BENCH_PROFILES` lacks, or `--profile` without a name.
    """
    profile, dry_run, rest = os.environ.get("JAXRNN_BENCH_PROFILE") or "cpu", False, []
    args = iter(argv)
    for arg in args:
        if arg == "--dry-run":
            dry_run = True
        elif arg == "--profile":
            profile = next(args, "")
            if not profile:
                raise ValueError("`--profile` needs a name")
        elif arg.startswith("--profile="):
            profile = arg.partition("=")[2]
        else:
            rest.append(arg)
    if profile not in BENCH_PROFILES:
        raise ValueError(
            f"unknown bench profile {profile!r} (from --profile or JAXRNN_BENCH_PROFILE; "
            f"expected one of {', '.join(BENCH_PROFILES)})"
        )
    return profile, dry_run, rest


def bench(argv: Sequence[str]) -> int:
    """Install the profile's venv, then run `benchmarks/peers.py` in it."""
    try:
        name, dry_run, rest = bench_args(argv)
    except ValueError as error:
        print(f"dev.py bench: {error}", file=sys.stderr)
        return 2
    profile = BENCH_PROFILES[name]
    if code := install(profile.venv, profile.extras, profile.torch, profile.jax, dry_run):
        return code
    py = str(profile.venv / ("Scripts/python.exe" if WINDOWS else "bin/python"))
    cmd = [py, str(ROOT / "benchmarks" / "peers.py"), *rest]
    if dry_run:
        shown = "".join(f"{k}={shlex.quote(v)} " for k, v in profile.env.items())
        print("+ " + shown + shlex.join(cmd), flush=True)
        return 0
    return run(cmd, profile.venv, profile.env)


def device_check(argv: Sequence[str]) -> int:
    """Run `benchmarks/device_check.py ARGS` with this interpreter: no venv, no install."""
    cmd = [sys.executable, str(ROOT / "benchmarks" / "device_check.py"), *argv]
    print("+ " + shlex.join(cmd), flush=True)
    return subprocess.run(cmd, cwd=ROOT, check=False).returncode


def source_version() -> str:
    """The version written in `jaxrnn/__init__.py` (the only place it is written)."""
    text = (ROOT / "jaxrnn" / "__init__.py").read_text(encoding="utf-8")
    found = re.findall(r'^__version__ = "([^"]+)"$', text, flags=re.MULTILINE)
    return found[0] if len(found) == 1 else ""


# `floors`: the dependency floors, installed from git, and the smoke tests.
FLOORS_EXTRAS = ("nnx",)  # the extras whose floors are tested with the dependencies'
FLOORS_TOOLS = ("pytest", "beartype")  # from the `test` extra: what conftest.py imports
_FLOOR = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*>=\s*([^,;\s]+)\s*$")


def floor_pins(pyproject: str) -> list[str]:
    """`name==floor` for each requirement of `dependencies` and of the `FLOORS_EXTRAS`.

    Every one of them must have the form `name>=floor` (a floor and no other bound,
    no environment marker): a requirement that has none would leave the floors step
    testing whatever release is newest.
    """
    import tomllib  # Python >= 3.11, checked in main()

    project = tomllib.loads(pyproject)["project"]
    requirements = list(project["dependencies"])
    for extra in FLOORS_EXTRAS:
        requirements += project["optional-dependencies"][extra]
    pins = []
    for requirement in requirements:
        match = _FLOOR.match(requirement)
        if match is None:
            raise ValueError(
                f"pyproject.toml: requirement {requirement!r}: expected `name>=floor`, the floor "
                "that `python3 dev.py floors` installs and tests"
            )
        pins.append(f"{match[1]}=={match[2]}")
    return pins


def test_tools(pyproject: str) -> list[str]:
    """The requirements of the `test` extra named in `FLOORS_TOOLS`, as written there."""
    import tomllib

    test = tomllib.loads(pyproject)["project"]["optional-dependencies"]["test"]
    return [r for r in test if re.split(r"[\s\[<>=!~;]", r, maxsplit=1)[0] in FLOORS_TOOLS]


def git(*args: str) -> str:
    """The output of `git ARGS` in the repository root (raising if git fails)."""
    return subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout


def interpreter_version(python: str) -> str:
    """`X.Y` of the Python interpreter `python`."""
    return subprocess.run(
        [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def install_floors(
    python: str, env_dir: Path, commit: str, pins: list[str], tools: list[str]
) -> int:
    """Make `env_dir` a venv holding the `pins` and jaxrnn at `commit`, installed from git."""
    version = interpreter_version(python)
    digest = hashlib.sha256("\0".join([version, *pins, *tools]).encode()).hexdigest()
    py = str(env_dir / ("Scripts/python.exe" if WINDOWS else "bin/python"))
    pip = [py, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    url = f"git+{ROOT.as_uri()}@{commit}"
    stamp, installed = env_dir / ".jaxrnn-floors.stamp", env_dir / ".jaxrnn-floors.commit"
    if stamp.exists() and stamp.read_text().strip() == digest:
        # The floors are there: only jaxrnn itself changes with the commit.
        if installed.exists() and installed.read_text().strip() == commit:
            return 0
        if code := run([*pip, "--no-deps", "--force-reinstall", f"jaxrnn @ {url}"]):
            return code
    else:
        # A new venv: nothing newer than a floor may be left from an earlier install.
        if code := run([python, "-m", "venv", "--clear", str(env_dir)]):
            return code
        constraints = env_dir / "floors.txt"
        constraints.write_text("".join(f"{pin}\n" for pin in pins))
        extras = ",".join(FLOORS_EXTRAS)
        requirement = f"jaxrnn[{extras}] @ {url}"
        if code := run_all(
            [[*pip, "--upgrade", "pip"], [*pip, "-c", str(constraints), requirement, *tools]]
        ):
            return code
        stamp.write_text(digest + "\n")
    installed.write_text(commit + "\n")
    return 0


def floors(python: str | None = None) -> int:
    """Install the floors and jaxrnn from git in a venv of their own; run the smoke tests."""
    python = python or sys.executable
    try:
        suffix = "" if python == sys.executable else f"-{interpreter_version(python)}"
    except (OSError, subprocess.CalledProcessError) as error:
        print(f"dev.py floors: cannot run the interpreter {python!r} ({error})", file=sys.stderr)
        return 2
    env_dir = ROOT / f".venv-floors{suffix}"
    py = str(env_dir / ("Scripts/python.exe" if WINDOWS else "bin/python"))
    committed = ["conftest.py", "pyproject.toml", "tests"]
    try:
        commit = git("rev-parse", "HEAD").strip()
        pyproject = git("show", f"{commit}:pyproject.toml")
        dirty = git("status", "--porcelain", "--", "jaxrnn", *committed)
        archive = subprocess.run(
            ["git", "archive", "--format=tar", commit, *committed],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as error:
        print(f"dev.py floors: needs git and a commit to install ({error})", file=sys.stderr)
        return 2
    if dirty:
        print(f"dev.py floors: testing commit {commit[:12]}, without these changes:\n{dirty}")
    try:
        pins, tools = floor_pins(pyproject), test_tools(pyproject)
    except ValueError as error:
        print(f"dev.py floors: {error}", file=sys.stderr)
        return 2
    if code := install_floors(python, env_dir, commit, pins, tools):
        return code
    with tempfile.TemporaryDirectory(prefix="jaxrnn-floors-") as tests_root:
        # The commit's tests without its package, so that they import the installed copy.
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}  # 3.11.4+
            tar.extractall(tests_root, **safe)  # type: ignore[arg-type]
        smoke = sorted(
            path.relative_to(tests_root).as_posix()
            for path in Path(tests_root, "tests").glob("test_*.py")
            if "@pytest.mark.smoke" in path.read_text(encoding="utf-8")
        )
        # Where jaxrnn is imported from, and the versions the tests run with.
        probe = (
            "import importlib.metadata as m, sys, jaxrnn; print(jaxrnn.__file__); "
            "print(', '.join(n + ' ' + m.version(n) for n in sys.argv[1:]))"
        )
        names = [pin.split("==")[0] for pin in pins]
        where = subprocess.run(
            [py, "-c", probe, *names], cwd=tests_root, capture_output=True, text=True, check=False
        )
        if where.returncode or not where.stdout.startswith(str(env_dir)):
            problem = where.stdout + where.stderr
            print(f"dev.py floors: jaxrnn not imported from {env_dir}: {problem}", file=sys.stderr)
            return 1
        print(f"dev.py floors: {where.stdout.splitlines()[1]}", flush=True)
        if not smoke:
            print("dev.py floors: no test is marked @pytest.mark.smoke", file=sys.stderr)
            return 1
        cmd = [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "smoke", *smoke]
        print(f"+ cd {shlex.quote(tests_root)} && {shlex.join(cmd)}", flush=True)
        return subprocess.run(cmd, cwd=tests_root, check=False).returncode


def main(argv: Sequence[str]) -> int:
    """Dispatch `demo`, `test`, `lint`, `floors`, `bench` or `device-check`; return its code."""
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(__doc__)
        return 0 if argv else 2
    command, rest = argv[0], list(argv[1:])
    if command not in {*PROFILES, "floors", "device-check"}:
        print(
            f"dev.py: unknown command {command!r} "
            "(expected demo, test, lint, floors, bench or device-check)",
            file=sys.stderr,
        )
        return 2
    if command == "lint" and rest:
        print("dev.py: `lint` takes no arguments", file=sys.stderr)
        return 2
    if command == "floors" and len(rest) > 1:
        print("dev.py: `floors` takes at most one argument, a Python interpreter", file=sys.stderr)
        return 2
    if sys.version_info < (3, 11):  # noqa: UP036 -- dev.py may be run by an older python3
        print(f"dev.py: Python >= 3.11 required, found {sys.version.split()[0]}", file=sys.stderr)
        return 2
    if command == "floors":
        return floors(*rest)
    if command == "bench":
        return bench(rest)
    if command == "device-check":
        return device_check(rest)
    if code := ensure_env(command):
        return code
    if command == "demo":
        return run([tool("jaxrnn"), "demo", *rest])
    lint = [[tool("ruff"), "check", "."], [tool("ruff"), "format", "--check", "."], [tool("mypy")]]
    pytest = [PY, "-m", "pytest", "-n", "2", *rest]
    if command == "lint":
        return run_all(lint)
    if rest:
        return run(pytest)
    return run_all([*lint, pytest]) or floors()


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        sys.exit(130)

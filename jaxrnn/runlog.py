"""Run directories: one run per directory, locked, logged line by line, never overwritten.

A run directory holds ``metrics.jsonl`` (one JSON object per logged step),
``summary.json``, ``checkpoints/`` (see :mod:`jaxrnn.checkpoint`) and a
``.lock`` file. :class:`RunDir` opens one for a run:

* it takes an exclusive lock on ``.lock`` (released by the operating system
  when the process ends, however it ends), so a second process opening the
  same directory gets a :class:`RunDirError` naming the directory and the
  process that holds it;
* a directory that already holds a run is refused unless the run is resumed
  (``resume=True``) or moved aside (``overwrite=True`` moves the old files
  to a sibling ``<name>.old-<time>`` directory; nothing is deleted);
* metric lines are appended and flushed one at a time; whole files are
  replaced atomically (:func:`atomic_write`).

:func:`read_metrics` reads a run's metric lines back, skipping damaged ones.
:class:`StopSignals` turns SIGINT and SIGTERM into a flag the training loop
checks after each step, which then checkpoints and raises :class:`Stopped`.
This module does not import JAX.

Example:
  >>> import tempfile
  >>> from jaxrnn import runlog
  >>> path = tempfile.mkdtemp()
  >>> with runlog.RunDir(path) as run:
  ...     run.log({"step": 10, "loss": 0.5})
  >>> runlog.read_metrics(path)
  [{'step': 10, 'loss': 0.5}]
  >>> runlog.RunDir(path)
  Traceback (most recent call last):
  ...
  jaxrnn.runlog.RunDirError: out: ... already holds a run (metrics.jsonl); pass ...
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import threading
import time
import warnings
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

__all__ = [
    "ConfigMismatch",
    "Progress",
    "RunDir",
    "RunDirError",
    "StopSignals",
    "Stopped",
    "atomic_write",
    "read_metrics",
]

METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
CHECKPOINTS = "checkpoints"
LOCK = ".lock"


class RunDirError(ValueError):
    """A run directory that cannot be used as asked.

    It holds another run, another process is writing to it, or it has nothing
    to resume.

    Example:
      >>> import tempfile
      >>> from jaxrnn import runlog
      >>> path = tempfile.mkdtemp()
      >>> with runlog.RunDir(path):
      ...     try:
      ...         runlog.RunDir(path)
      ...     except runlog.RunDirError as e:
      ...         print(str(e).split("(")[0].endswith("is in use by another run "))
      True
    """


def atomic_write(path: str | os.PathLike[str], text: str) -> None:
    r"""Replace the file at ``path`` with ``text`` in one rename: never half-written.

    Example:
      >>> import pathlib, tempfile
      >>> from jaxrnn import runlog
      >>> path = pathlib.Path(tempfile.mkdtemp()) / "summary.json"
      >>> runlog.atomic_write(path, "{}\n")
      >>> path.read_text()
      '{}\n'
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_metrics(run_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    r"""The metric lines of a run (``run_dir/metrics.jsonl``, or that file itself).

    A line that is not a JSON object with an integer ``"step"`` (cut short by
    a kill, or damaged) is skipped with one warning naming the file and the
    line numbers; the lines after it are kept. A run without metrics gives
    ``[]``.

    Args:
      run_dir: a run directory, or the path of a ``metrics.jsonl``.

    Returns:
      One dict per logged step, in file order.

    Example:
      >>> import pathlib, tempfile
      >>> from jaxrnn import runlog
      >>> run = pathlib.Path(tempfile.mkdtemp())
      >>> _ = (run / "metrics.jsonl").write_text('{"step": 1}\n{"st\n{"step": 2}\n')
      >>> import warnings
      >>> with warnings.catch_warnings(record=True) as caught:
      ...     warnings.simplefilter("always")
      ...     lines = runlog.read_metrics(run)
      >>> lines, str(caught[0].message).endswith("skipped 1 damaged line(s): 2")
      ([{'step': 1}, {'step': 2}], True)
    """
    path = Path(run_dir)
    if path.is_dir():
        path = path / METRICS
    if not path.exists():
        return []
    lines, damaged = [], []
    for number, text in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        if not text.strip():
            continue
        try:
            line = json.loads(text)
        except json.JSONDecodeError:
            line = None
        step = line.get("step") if isinstance(line, dict) else None
        if isinstance(step, int) and not isinstance(step, bool):
            lines.append(line)
        else:
            damaged.append(number)
    if damaged:
        shown = ", ".join(map(str, damaged[:10])) + (", …" if len(damaged) > 10 else "")
        warnings.warn(f"{path}: skipped {len(damaged)} damaged line(s): {shown}", stacklevel=2)
    return lines


class RunDir:
    """An output directory opened by one run: locked, checked, with a metrics log.

    Args:
      path: the directory (created if missing).
      resume: the run continues the one already there (its metric lines are
        kept; see :meth:`keep_metrics`).
      overwrite: a run already there is moved aside to
        ``<path>.old-<YYYYmmdd-HHMMSS>`` (next to ``path``) first.

    A directory holds a run when it has a ``metrics.jsonl``, a
    ``summary.json`` or a ``checkpoints/``; a non-empty directory that holds
    none is refused even with ``overwrite`` (nothing but runs is ever moved).

    Raises:
      RunDirError: ``path`` holds a run and neither ``resume`` nor
        ``overwrite`` was given; it holds other files; ``resume`` finds no
        run; ``path`` is a file; or another process holds the lock.

    Use it as a context manager (or call :meth:`close`): the lock is
    released and the metrics file closed on exit.

    Example:
      >>> import pathlib, tempfile
      >>> from jaxrnn import runlog
      >>> path = pathlib.Path(tempfile.mkdtemp()) / "run"
      >>> with runlog.RunDir(path) as run:
      ...     run.log({"step": 1, "loss": 0.7})
      >>> with runlog.RunDir(path, overwrite=True) as run:  # the old run is moved aside
      ...     run.moved_to.name.startswith("run.old-"), runlog.read_metrics(run.moved_to)
      (True, [{'step': 1, 'loss': 0.7}])
    """

    def __init__(
        self, path: str | os.PathLike[str], *, resume: bool = False, overwrite: bool = False
    ) -> None:
        if resume and overwrite:
            raise ValueError("overwrite: cannot both resume a run and move it aside")
        self.path = Path(path).expanduser()
        self.moved_to: Path | None = None
        self._metrics: TextIO | None = None
        if self.path.exists() and not self.path.is_dir():
            raise RunDirError(f"out: {self.path} is a file, expected a directory")
        if resume and not _holds_run(self.path):
            raise RunDirError(f"resume: nothing to resume, no run in {self.path}")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self._lock = open(self.path / LOCK, "a+")  # noqa: SIM115 - held until close()
        except OSError as e:
            raise RunDirError(f"out: cannot write to {self.path}: {e.strerror or e}") from None
        try:
            _lock(self._lock, self.path)
            self._check(resume, overwrite)
        except BaseException:
            self._lock.close()
            raise

    def _check(self, resume: bool, overwrite: bool) -> None:
        old = sorted(p.name for p in self.path.iterdir() if p.name != LOCK)
        if not old or resume:
            return
        listed = ", ".join(old[:3]) + (", …" if len(old) > 3 else "")
        if not _holds_run(self.path):
            raise RunDirError(
                f"out: {self.path} holds files that are not a run ({listed}); choose a new or "
                "empty directory"
            )
        if not overwrite:
            raise RunDirError(
                f"out: {self.path} already holds a run ({listed}); pass resume=True to continue "
                "it or overwrite=True to move it aside"
            )
        self.moved_to = self._move_aside(old)

    def _move_aside(self, names: list[str]) -> Path:
        here = self.path.resolve()
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for suffix in ["", *(f"-{i}" for i in range(1, 1000))]:
            target = here.with_name(f"{here.name}.old-{stamp}{suffix}")
            try:
                target.mkdir()
                break
            except FileExistsError:
                continue
        for name in names:
            os.rename(here / name, target / name)
        return target

    @property
    def checkpoints(self) -> Path:
        """Where the run's checkpoints live: ``path/checkpoints``."""
        return self.path / CHECKPOINTS

    def keep_metrics(self, last_step: int) -> list[dict[str, Any]]:
        """Cut ``metrics.jsonl`` back to the steps up to ``last_step``; return those lines.

        For a resume from the checkpoint of ``last_step``; damaged lines are dropped.
        """
        lines = [line for line in read_metrics(self.path) if line["step"] <= last_step]
        atomic_write(self.path / METRICS, "".join(json.dumps(line) + "\n" for line in lines))
        return lines

    def log(self, line: dict[str, Any]) -> None:
        """Append one metric line (a JSON object) and flush it to the file."""
        if self._metrics is None:
            self._metrics = open(self.path / METRICS, "a")  # noqa: SIM115 - closed in close()
        self._metrics.write(json.dumps(line, allow_nan=True) + "\n")
        self._metrics.flush()

    def write_summary(self, summary: dict[str, Any]) -> Path:
        """Write ``summary.json`` atomically as strict JSON (non-finite numbers as null)."""
        path = self.path / SUMMARY
        atomic_write(path, json.dumps(_finite(summary), indent=1, allow_nan=False) + "\n")
        return path

    def close(self) -> None:
        """Close the metrics file and release the lock."""
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None
        if not self._lock.closed:
            self._lock.close()  # closing the descriptor releases the lock

    def __enter__(self) -> RunDir:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (strict JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _holds_run(path: Path) -> bool:
    return any((path / name).exists() for name in (METRICS, SUMMARY, CHECKPOINTS))


def _lock(file: TextIO, path: Path) -> None:
    """Take an exclusive, non-blocking lock on ``file``; say who holds it if taken."""
    try:
        if os.name == "nt":  # pragma: no cover - exercised on Windows only
            import msvcrt

            file.seek(0)
            msvcrt.locking(file.fileno(), msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
        else:
            import fcntl

            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        file.seek(0)
        holder = file.read().strip() or "another process"
        raise RunDirError(
            f"out: {path} is in use by another run ({holder}); wait for it to finish or choose "
            "another output directory"
        ) from None
    file.seek(0)
    file.truncate()
    file.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    file.flush()


class ConfigMismatch(ValueError):
    """A resume whose ``config`` differs from the one stored with the run.

    Raised by :func:`jaxrnn.training.fit` (also as ``training.ConfigMismatch``).

    Attributes:
      differences: ``{key: (saved, given)}`` for each differing entry.

    Example:
      >>> import tempfile, jax, jaxrnn
      >>> from jaxrnn import tasks, training
      >>> def run(**kwargs):
      ...     return training.fit(training.readout(jaxrnn.gru(4), 1), tasks.adding(5),
      ...                         training.optimizer(1e-2), steps=2, batch_size=2,
      ...                         key=jax.random.key(0), progress=False, **kwargs)
      >>> out = tempfile.mkdtemp()
      >>> _ = run(out=out, checkpoint_every=2, config={"hidden": 4})
      >>> try:
      ...     run(out=out, resume=True, config={"hidden": 8})
      ... except training.ConfigMismatch as e:
      ...     e.differences
      {'hidden': (4, 8)}
    """

    def __init__(self, path: Path, differences: dict[str, tuple[Any, Any]]):
        self.differences = differences
        listed = ", ".join(f"{k} (saved {s!r}, given {g!r})" for k, (s, g) in differences.items())
        super().__init__(f"resume: the run in {path} was made with another config: {listed}")


class Stopped(Exception):
    """A run stopped by SIGINT or SIGTERM; it finished its step and checkpointed.

    Raised by :func:`jaxrnn.training.fit` (also as ``training.Stopped``).

    Attributes:
      signal: the signal's number.
      step: the last step done.
      checkpoint: the checkpoint written (None without an output directory).
      state: the :class:`~jaxrnn.training.TrainState` after ``step``.
      exit_code: the conventional exit status, 128 + ``signal`` (130, 143).

    Example:
      >>> import os, signal, tempfile, jax, jaxrnn
      >>> from jaxrnn import tasks, training
      >>> stop = lambda params, batch: os.kill(os.getpid(), signal.SIGTERM) or {}
      >>> try:  # SIGTERM arrives at the first evaluation (step 2)
      ...     training.fit(training.readout(jaxrnn.gru(4), 1), tasks.adding(5),
      ...                  training.optimizer(1e-2), steps=4, batch_size=2, eval_every=2,
      ...                  key=jax.random.key(0), out=tempfile.mkdtemp(), extra_metrics=stop,
      ...                  progress=False)
      ... except training.Stopped as e:
      ...     e.step, e.exit_code, e.checkpoint.name
      (2, 143, 'step_00000002')
    """

    def __init__(self, signum: int, step: int, checkpoint: Path | None, state: Any) -> None:
        self.signal, self.step, self.checkpoint, self.state = signum, step, checkpoint, state
        self.exit_code = 128 + signum
        where = "no output directory" if checkpoint is None else f"checkpoint {checkpoint}"
        super().__init__(f"stopped by {signal.Signals(signum).name} after step {step}; {where}")


class StopSignals:
    """While entered, SIGINT and SIGTERM are recorded in ``received`` instead of acting.

    A second one acts at once (the handler from before the outermost
    ``StopSignals`` is back). Nested, an inner one starts with the outer one's
    received signal, so a stop asked for during a program's start-up is kept.
    Only in the main thread (where Python runs signal handlers), and only when
    ``enabled``.

    Example:
      >>> import os, signal
      >>> from jaxrnn import runlog
      >>> with runlog.StopSignals() as stops:
      ...     os.kill(os.getpid(), signal.SIGTERM)  # a job scheduler's stop
      >>> stops.received == signal.SIGTERM
      True
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.received: int | None = None
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = signum
        signal.signal(signum, self._first[signum])

    def __enter__(self) -> StopSignals:
        self._first: dict[int, Any] = {}
        if self.enabled:
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._old[signum] = old = signal.signal(signum, self._handle)
                outer = getattr(old, "__self__", None)
                if isinstance(outer, StopSignals):  # nested: a stop already asked for counts
                    self.received = self.received or outer.received
                    self._first[signum] = outer._first[signum]
                else:
                    self._first[signum] = old
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._old.items():
            signal.signal(signum, handler)
            outer = getattr(handler, "__self__", None)
            if isinstance(outer, StopSignals) and self.received is not None:
                outer.received = outer.received or self.received


class Progress:
    """One progress line per logged step: bar, step, loss, metric, ‖g‖, speed, ETA.

    On a terminal the line is rewritten in place; otherwise a line is printed
    per evaluation only (``show(..., force=True)``).

    Args:
      stream: where to write (e.g. ``sys.stderr``).
      steps: the run's total number of steps.
      metric_name: the key of the task's metric in each line.

    Example:
      >>> import sys
      >>> from jaxrnn import runlog
      >>> line = {"step": 50, "loss": 0.25, "grad_norm": 1.5, "steps_per_s": 10.0}
      >>> runlog.Progress(sys.stdout, 200, "correct").show(line, force=True)
      ██████·················· 50/200  loss 0.25  |g| 1.5  10.0 steps/s  ETA 15s
    """

    def __init__(self, stream: TextIO, steps: int, metric_name: str) -> None:
        self.stream, self.steps, self.metric_name = stream, steps, metric_name
        self.tty = bool(getattr(stream, "isatty", lambda: False)())

    def show(self, line: dict[str, Any], force: bool = False) -> None:
        """Write ``line`` (a metric dict) if on a terminal or ``force``."""
        if not (self.tty or force):
            return
        step, width = line["step"], 24
        done = int(width * step / self.steps)
        text = (
            f"{'█' * done}{'·' * (width - done)} {step:>{len(str(self.steps))}}/{self.steps}"
            f"  loss {line['loss']:.4g}"
        )
        if self.metric_name in line:
            text += f"  {self.metric_name} {line[self.metric_name]:.3f}"
        text += f"  |g| {line['grad_norm']:.3g}  {format_rate(line['steps_per_s'])}"
        if "eval_loss" in line:
            text += f"  eval {line['eval_loss']:.4g}"
        rate = line["steps_per_s"]
        if step < self.steps and rate > 0 and math.isfinite(rate):
            text += f"  ETA {format_seconds((self.steps - step) / rate)}"
        self.stream.write(("\r" + text) if self.tty else (text + "\n"))
        self.stream.flush()

    def close(self) -> None:
        """End the rewritten line on a terminal."""
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def format_rate(steps_per_second: float | None) -> str:
    """``12.5`` -> ``'12.5 steps/s'``; ``0.04`` -> ``'25.0 s/step'``; None -> ``'n/a'``."""
    if steps_per_second is None or not math.isfinite(steps_per_second):
        return "n/a"
    if 0 < steps_per_second < 0.5:
        return f"{1 / steps_per_second:.1f} s/step"
    return f"{steps_per_second:.1f} steps/s"


def format_seconds(seconds: float) -> str:
    """``75.2`` -> ``'1m15s'``; ``3725`` -> ``'1h02m'``; ``4.2`` -> ``'4s'``."""
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"

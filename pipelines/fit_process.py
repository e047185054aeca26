"""A model's fit in a child process: the process that answers requests keeps its interpreter lock while a
panel trains (a fit in a thread of its own took the lock for the Python parts of building feature rows and
backtesting, and a cold forecast waited on it).

Each fit runs in a process of its own, forked from a server process that has imported the training code
once (multiprocessing's `forkserver`): starting one costs milliseconds, not the seconds of a fresh
interpreter, and all the memory a fit took goes back to the system when it ends. The series go to the child
pickled; the model comes back through the registry's own file format (saved by the child, loaded here),
the same round trip a restart makes. Log records of the fit are sent back as they happen and handled here,
and an error raised in the fit is raised here, with the child's traceback as its cause.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import pickle
import signal
import sys
import tempfile
import threading
import traceback
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from pipelines.backends import LocalBackend
from pipelines.portfolio import load_model
from pipelines.series import SeriesSet
from pipelines.training import train_model
from spicepod import FlightcastError

FIT_NICE = 5  # where there is no idle scheduling class, a fit runs this much nicer than the runtime
# What the fork server imports once, so each fit starts with the training code loaded: LightGBM (without the
# integrations a fit never uses, see lightgbm_core) would take each fit a second to import again;
# statsforecast (the statistical methods) takes two, and is preloaded only where a model may use it.
PRELOAD = ["pipelines.lightgbm_core", "pipelines.training", "pipelines.portfolio_training", "pipelines.fit_process"]
LIBRARY_PRELOAD = ["pipelines.statsforecast_core"]  # statsforecast.models, without Dask

_context: Any = None
_context_lock = threading.Lock()
_library_wanted = False


def preload_library() -> None:
    """The fork server preloads statsforecast whatever the fits of this process need (when it has not started
    yet). A process has one fork server, set up by its first fit; one that runs fits of every kind, such as
    several runtimes in one process, calls this first."""
    global _library_wanted
    with _context_lock:
        _library_wanted = True


def _fork_context(library: bool) -> Any:
    global _context
    with _context_lock:
        if _context is None:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(PRELOAD + (LIBRARY_PRELOAD if library or _library_wanted else []))
            _context = context
        return _context


class ChildTraceback(Exception):
    """Where a fit failed in its child process (the cause of the error raised here)."""

    def __init__(self, text: str):
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return "\n" + self.text


class FitProcesses:
    """Runs fits in child processes; `close` kills the fits under way (the runtime stops)."""

    def __init__(self, library: bool = True) -> None:
        """`library`: whether fits may use statsforecast's methods (the fork server then preloads it)."""
        # The fork server starts with the first fit, not here: a runtime that loads its stored versions never
        # pays for it (seconds of imports).
        self._library = library
        self._running: set[Any] = set()
        self._lock = threading.Lock()
        self._closed = False

    def train(self, series: SeriesSet, **kwargs: Any) -> Any:
        """`train_model(series, **kwargs)`, fitted in a child process; blocks until it is done."""
        context = _fork_context(self._library)
        with tempfile.TemporaryDirectory(prefix="flightcast-fit-") as folder:
            receive, send = context.Pipe(duplex=False)
            child = context.Process(target=_fit, args=(send, series, kwargs, folder, _log_levels()),
                                    name="flightcast-fit", daemon=True)
            with self._lock:
                if self._closed:
                    raise FlightcastError("the runtime is stopping: no training starts")
                child.start()
                self._running.add(child)
            send.close()
            try:
                _follow(receive, child)
            finally:
                receive.close()
                child.join()
                with self._lock:
                    self._running.discard(child)
            return load_model(Path(folder))

    @property
    def running(self) -> int:
        """Fits under way."""
        return len(self.pids)

    @property
    def pids(self) -> list[int]:
        """The process ids of the fits under way."""
        with self._lock:
            return [child.pid for child in self._running]

    def close(self) -> None:
        with self._lock:
            self._closed = True
            running = list(self._running)
        for child in running:
            child.kill()


def _log_levels() -> dict[str, int]:
    """The level each logger has here, so the child sends just the records that would be handled here."""
    named = [name for name in logging.root.manager.loggerDict if name.startswith("flightcast")]
    return {"": logging.root.level, **{name: logging.getLogger(name).getEffectiveLevel() for name in named}}


def _follow(receive: Connection, child: Any) -> None:
    """Handle the child's log records until it reports its end; raise what it raised."""
    while True:
        try:
            kind, payload = receive.recv()
        except EOFError:
            child.join()
            raise FlightcastError(f"the training process ended without a result (exit code {child.exitcode}; "
                                  "killed for lack of memory, or the runtime is stopping)") from None
        if kind == "log":
            logging.getLogger(payload.name).handle(payload)
        elif kind == "error":
            error, text = payload
            raise error from ChildTraceback(text)
        else:
            return


# --- what runs in the child ---------------------------------------------------------------------------------


class _SendRecords(logging.Handler):
    """Sends each log record to the parent, its message and any traceback formatted here (its arguments and
    exception may not pickle); the parent's formatters print the traceback text as they would their own."""

    def __init__(self, send: Connection):
        super().__init__()
        self.send = send

    def emit(self, record: logging.LogRecord) -> None:
        try:
            record.msg, record.args = record.getMessage(), None
            if record.exc_info and not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
            self.send.send(("log", record))
        except Exception:  # a log line must never fail the fit
            pass


def _fit(send: Connection, series: SeriesSet, kwargs: dict, folder: str, levels: dict[str, int]) -> None:
    _die_with_parent()
    try:
        _background_priority()
    except OSError:  # not allowed here: the fit runs at the runtime's priority
        pass
    _leave_a_core()
    logging.root.handlers[:] = [_SendRecords(send)]
    for name, level in levels.items():
        logging.getLogger(name or None).setLevel(level)
    try:
        train_model(backend=LocalBackend(series), **kwargs).save(Path(folder))
    except BaseException as exc:  # everything goes back to the parent, which decides
        send.send(("error", (_picklable(exc), traceback.format_exc())))
    else:
        send.send(("done", None))
    finally:
        send.close()


def _picklable(exc: BaseException) -> BaseException:
    """The error itself when it survives a pickle round trip, else one that says what it was."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def _background_priority() -> None:
    """The fit takes only CPU time no other task wants (Linux's SCHED_IDLE): any thread of the runtime, or of
    the client waiting on it, that wakes on the fit's core runs at once. With a nice value alone, the scheduler
    let the fit finish its slice first (milliseconds), and a request that came meanwhile waited that long.
    On a machine whose every core other work keeps busy, a fit waits for it."""
    if hasattr(os, "SCHED_IDLE"):
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    else:
        os.nice(FIT_NICE)


def _leave_a_core() -> None:
    """The fit's process runs on every core but one, and LightGBM in it uses as many threads: the process that
    answers requests keeps a core to itself rather than waiting for the scheduler to hand it a slice between the
    fit's threads."""
    try:
        cores = sorted(os.sched_getaffinity(0))
    except AttributeError:  # no affinity on this system: LightGBM's threads alone leave the core
        cores = list(range(os.cpu_count() or 1))
    if len(cores) < 2:
        return
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cores[1:])
    try:
        from lightgbm.basic import _LIB

        _LIB.LGBM_SetMaxThreads(ctypes.c_int(len(cores) - 1))
    except (ImportError, AttributeError):  # a LightGBM without the setting: its fits take every core
        pass


def _die_with_parent() -> None:
    """On Linux, the fit is killed when its parent (the fork server, which ends with the runtime) dies."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        try:
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
        except (OSError, AttributeError):
            pass
        if os.getppid() == 1:  # the parent already died before the call above
            os._exit(1)

"""A run stage's independent runs, executed side by side in worker processes.

``Workers(n, threads)`` executes tasks with ``n`` worker processes (spawned, not forked: a fork after torch
has started its thread pools can hang), each computing with ``threads`` torch threads; with ``n == 1``, or a
single task while no worker has started, the tasks run one after the other in this process, through the same
loop. A run's numbers depend on its config
and its thread count only, never on ``n``: every task computes with exactly ``threads`` threads, in a worker
or here.

The defaults fit the machine: ``threads`` 1 on CPU, ``workers`` = usable CPUs // ``threads``; ``--workers`` /
``--threads`` on ``python -m common.runner``, or ``REPRO_WORKERS`` / ``REPRO_THREADS``, set them. Under a
multi-process launch (world size > 1) or on a GPU the runs go one at a time (``workers`` 1) on the
launcher's threads, as before.

The parent keeps at most ``n`` tasks submitted, so it knows what each worker runs; its progress bar names
them. Workers show no per-batch bars (``in_worker()``). A failed task stops new submissions; the tasks in
flight finish (their records are written), then the first error is raised here, as it was raised there. A
worker dies with its parent (Linux: ``PR_SET_PDEATHSIG``; elsewhere a watchdog thread), so a stage killed
mid-way leaves no orphan training into the checkpoints the restarted stage resumes from.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

import torch
from tqdm.auto import tqdm

from common.errors import UserError

WORKERS_ENV = "REPRO_WORKERS"
THREADS_ENV = "REPRO_THREADS"

_in_worker = False


class WorkersError(UserError, ValueError):
    """A number of workers or threads that is not a positive integer."""


def in_worker() -> bool:
    """True inside a worker process (which shows no per-batch progress bars)."""
    return _in_worker


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _positive(value: int | str | None, name: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise WorkersError(f"{name} must be a positive integer; got {value!r}")
    return number


def choose(workers: int | None, threads: int | None, one_at_a_time: bool) -> tuple[int, int]:
    """``(workers, threads)``: the given values, else ``REPRO_WORKERS`` / ``REPRO_THREADS``, else the machine's.

    ``one_at_a_time`` (a multi-process launch, or a GPU): 1 worker, on the threads torch has now unless set.
    """
    workers = _positive(workers, "--workers") or _positive(os.environ.get(WORKERS_ENV), WORKERS_ENV)
    threads = _positive(threads, "--threads") or _positive(os.environ.get(THREADS_ENV), THREADS_ENV)
    if one_at_a_time:
        if workers and workers > 1:
            print(
                f"note: {workers} workers asked for, but runs go one at a time under a multi-process launch or on "
                "a GPU",
                file=sys.stderr,
            )
        return 1, threads or torch.get_num_threads()
    threads = threads or 1
    return workers or max(1, usable_cpus() // threads), threads


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Torch computes on ``threads`` threads inside the block (as in a worker), and as before after it."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _die_with(parent: int) -> None:
    """End this process when ``parent`` ends."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # it died before the line above
            os._exit(1)
        return

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _start_worker(parent: int, threads: int) -> None:
    global _in_worker
    _in_worker = True
    _die_with(parent)
    torch.set_num_threads(threads)


class Workers:
    """``run(fn, tasks, labels, desc)``: ``fn(task)`` for every task, on ``workers`` processes; see the module."""

    def __init__(self, workers: int, threads: int) -> None:
        self.workers, self.threads = workers, threads
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        if self._pool is not None:  # on an error or Ctrl-C, tasks not yet started never start
            self._pool.shutdown(wait=True, cancel_futures=exc_type is not None)
            self._pool = None

    def _submit(self, fn: Callable[[Any], Any], task: Any, here: bool) -> Future:
        if here:  # on the same threads as a worker's
            future: Future = Future()
            try:
                with torch_threads(self.threads):
                    future.set_result(fn(task))
            except Exception as err:
                future.set_exception(err)
            return future
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_worker,
                initargs=(os.getpid(), self.threads),
            )
        return self._pool.submit(fn, task)

    def run(
        self,
        fn: Callable[[Any], Any],
        tasks: Sequence[Any],
        labels: Sequence[str],
        desc: str,
        progress: bool = True,
    ) -> None:
        """``fn(task)`` for each task (``fn`` and the tasks must pickle), under a progress bar naming the
        running tasks' ``labels``; raises the first error a task raised."""
        # One task and no worker started yet: it runs here (a worker would only add its start-up).
        here = self.workers == 1 or (self._pool is None and len(tasks) == 1)
        queue = list(zip(labels, tasks, strict=True))[::-1]
        running: dict[Future, str] = {}
        errors: list[BaseException] = []
        with tqdm(total=len(tasks), desc=desc, disable=not (tasks and progress), dynamic_ncols=True) as bar:
            while queue or running:
                while queue and not errors and len(running) < self.workers:
                    label, task = queue.pop()
                    bar.set_postfix_str(", ".join([*running.values(), label]))
                    running[self._submit(fn, task, here)] = label
                if not running:
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    label = running.pop(future)
                    if future.exception() is not None:
                        errors.append(future.exception())
                    bar.update(1)
                bar.set_postfix_str(", ".join(running.values()))
        if errors:
            for other in errors[1:]:
                print(f"another run failed too: {type(other).__name__}: {other}", file=sys.stderr)
            raise errors[0]

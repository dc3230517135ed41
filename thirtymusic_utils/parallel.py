"""Independent runs on the machine's cores: one worker process per core, results in the order asked.

The study's embedding model is a tiny torch model trained batch by batch: one core does all its work,
and chapter 04 trains it six times (as it ran, and the ledger's retrainings). Each training seeds its
own random state, so running them side by side in worker processes changes nothing but the wall time
(tests compare the two). The study's kNN paths do not need this: their sparse products already run
on every core in threads (``models.scoring.map_blocks``; measured on the full profile, two tie
orders took 70 s one after another and 72 s in two processes). Workers are spawned (not forked:
torch's OpenMP threads do not survive a fork), so a script that calls :func:`process_map` needs the
usual ``if __name__ == "__main__":`` guard; they receive the large shared arguments once each and
run with this process's torch thread count unless told otherwise.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from tqdm import tqdm

__all__ = ["available_cores", "default_workers", "process_map"]

T = TypeVar("T")
R = TypeVar("R")

_SHARED: tuple = ()


def available_cores() -> int:
    """CPU cores this process may run on (``os.sched_getaffinity``, else ``os.cpu_count``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def default_workers(n_tasks: int) -> int:
    """Worker processes for ``n_tasks`` independent runs: the cores this process may use
    (:func:`available_cores`), no more than the tasks, at least one."""
    return max(1, min(int(n_tasks), available_cores()))


def _init(shared: tuple, threads: int) -> None:
    global _SHARED
    _SHARED = shared
    if threads > 0:
        import torch

        torch.set_num_threads(threads)


def _call(fn: Callable[..., R], task: Any) -> R:
    return fn(*_SHARED, task)


def process_map(
    fn: Callable[..., R],
    tasks: Sequence[T],
    *,
    shared: tuple = (),
    workers: int = 0,
    threads: int | None = None,
    desc: str | None = None,
    progress: bool = True,
) -> list[R]:
    """``[fn(*shared, task) for task in tasks]``, the tasks run in ``workers`` processes.

    ``fn`` must be a module-level function (it is pickled by name). ``shared`` is sent to each worker
    once, not once a task. ``workers``: 0 picks :func:`default_workers`; with one worker, or one
    task, everything runs here, in this process. ``threads``: torch's CPU threads in each worker;
    None gives them this process's (a float sum may round differently on another thread count, so
    a task gives here and in a worker the same bits), 0 leaves torch's default. A task's exception
    is raised here, with the worker's traceback.
    """
    tasks = list(tasks)
    if threads is None:
        torch = sys.modules.get("torch")
        threads = torch.get_num_threads() if torch is not None else 0
    n = default_workers(len(tasks)) if workers <= 0 else max(1, min(int(workers), len(tasks)))
    bar = tqdm(total=len(tasks), desc=desc, disable=not progress or not tasks)
    try:
        if n <= 1:
            out = []
            for task in tasks:
                out.append(fn(*shared, task))
                bar.update()
            return out
        results: list[Any] = [None] * len(tasks)
        ctx = multiprocessing.get_context("spawn")
        pool = ProcessPoolExecutor(n, mp_context=ctx, initializer=_init, initargs=(shared, threads))
        with pool as ex:
            futures = {ex.submit(_call, fn, task): i for i, task in enumerate(tasks)}
            try:
                for fut in as_completed(futures):
                    results[futures[fut]] = fut.result()
                    bar.update()
            except BrokenProcessPool as e:
                raise RuntimeError(
                    f"a worker process of {getattr(fn, '__name__', fn)!r} died (its error, if any, "
                    "is printed above): out of memory, or a script calling process_map without "
                    "an 'if __name__ == \"__main__\":' guard, which each spawned worker re-runs"
                ) from e
            except BaseException:  # an error or an interrupt: stop the workers, do not wait
                procs = list((getattr(ex, "_processes", None) or {}).values())
                ex.shutdown(wait=False, cancel_futures=True)
                for proc in procs:  # runs already started would otherwise finish first (minutes)
                    proc.terminate()
                raise
        return results
    finally:
        bar.close()

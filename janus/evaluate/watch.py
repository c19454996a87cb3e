"""`--watch`: evaluate each new checkpoint of a workdir while training runs.

Half-written checkpoints are invisible: `janus.checkpoint.list_complete_steps` lists finished ones
only. A step that already has a result for this classifier (eval/<step>.json, e.g. from the
in-loop hook) is not evaluated again. The watch stops when
- the final step has a result (`final_step`, else the run's total steps from config.json), also
  when that was already so at the start (a finished run);
- `<workdir>/DONE` exists and every complete checkpoint has a result;
- no new checkpoint appeared for `timeout` seconds.
One watcher per workdir: it holds `<workdir>/eval/WATCH_LOCK` (`janus.workdir`, taken over when its
holder died); a second one prints who holds it and exits with status 2. It runs beside the
trainer (whose lock is `<workdir>/LOCK`). The evaluated steps are re-read every poll, since a
resumed trainer drops the results of the steps it recomputes.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable

import numpy as np

from janus.evaluate.results import evaluated_steps, write_result
from janus.evaluate.runner import Evaluator, log

DONE_MARKER = "DONE"
WATCH_LOCK = "WATCH_LOCK"  # <workdir>/eval/WATCH_LOCK: one watcher per workdir (janus.workdir)


class NoSetEvaluated(RuntimeError):
    """No set could be read for a checkpoint; `args` holds the result's notes (which say why)."""


def total_steps(workdir: str) -> int | None:
    """The run's total steps from config.json (the trainer's resolved.total_steps, else
    total_steps); None when unknown."""
    try:
        with open(os.path.join(workdir, "config.json")) as f:
            cfg = json.load(f)
    except (OSError, ValueError):
        return None
    total = (cfg.get("resolved") or {}).get("total_steps") or cfg.get("total_steps")
    return int(total) if isinstance(total, int) else None


def watch(
    evaluator: Evaluator,
    workdir: str,
    *,
    timeout: float = 3600.0,
    poll: float = 10.0,
    final_step: int | None = None,
    on_result: Callable[[dict], None] | None = None,
) -> list[int]:
    """Evaluates new complete checkpoints until a stop condition (module docstring).
    -> the steps evaluated, in order. With several processes, process 0 decides what to evaluate
    and when to stop, so all of them evaluate the same checkpoints together."""
    from janus import workdir as workdir_lib

    try:
        lock = workdir_lib.acquire_for_job(
            os.path.join(workdir, "eval"), name=WATCH_LOCK, what="janus.evaluate --watch", log=log
        )
    except workdir_lib.WorkdirBusy as e:
        log(f"watch: refusing to start: {e}")
        raise SystemExit(2) from None
    try:
        return _watch(evaluator, workdir, timeout, poll, final_step, on_result)
    finally:
        if lock is not None:
            lock.release()


def _watch(evaluator, workdir, timeout, poll, final_step, on_result) -> list[int]:
    from janus.checkpoint import list_complete_steps

    done = evaluated_steps(workdir, evaluator.opts.classifier, evaluator.opts.label_set)
    skipped: set[int] = set()  # deleted before they could be read
    evaluated: list[int] = []
    last_new = time.time()
    log(f"watch: {workdir}; {len(done)} step(s) already evaluated")
    while True:
        if final_step is None:
            final_step = total_steps(workdir)  # config.json may appear after the watch starts
        # Re-read each time: a resumed trainer drops the results of the steps it recomputes.
        done = (
            evaluated_steps(workdir, evaluator.opts.classifier, evaluator.opts.label_set) | skipped
        )
        # DONE before the listing: the trainer writes it after its last checkpoint, so a listing
        # taken after seeing it holds every checkpoint (the other order can miss the last one).
        finished = os.path.exists(os.path.join(workdir, DONE_MARKER))
        todo = [s for s in list_complete_steps(workdir) if s not in done]
        stop = None
        if final_step is not None and final_step in done:
            stop = f"final step {final_step} has a result"
        elif not todo and finished:
            stop = f"{DONE_MARKER} marker found and every checkpoint evaluated"
        elif not todo and time.time() - last_new > timeout:
            stop = f"no new checkpoint for {timeout:.0f}s; stopping"
        todo, stop = _as_process_0_sees_it(todo, stop)
        if stop:
            log(f"watch: {stop}")
            return evaluated
        for step in todo:
            try:
                result = evaluator.evaluate_step(workdir, step)
            except (FileNotFoundError, OSError, ValueError):
                # The trainer's keep policy may delete an old checkpoint while we read it.
                if step in list_complete_steps(workdir):
                    raise
                log(f"watch: checkpoint {step} was deleted before it could be evaluated; skipped")
                skipped.add(step)
                continue
            if not result["sets"]:  # every later checkpoint would fail the same way
                raise NoSetEvaluated(result["notes"])
            write_result(workdir, result, evaluator.opts.label_set)
            done.add(step)
            evaluated.append(step)
            last_new = time.time()
            if on_result:
                on_result(result)
        if not todo:
            time.sleep(poll)


def _as_process_0_sees_it(todo: list[int], stop: str | None) -> tuple[list[int], str | None]:
    """Process 0's (steps to evaluate, stop reason), on every process."""
    import jax

    if jax.process_count() == 1:
        return todo, stop
    from jax.experimental.multihost_utils import broadcast_one_to_all

    n, stopped = (int(x) for x in broadcast_one_to_all(np.array([len(todo), stop is not None])))
    steps = np.zeros(n, np.int64)
    if n:  # the other processes' lists may differ in length: send process 0's, padded
        steps[: min(n, len(todo))] = todo[:n]
        steps = broadcast_one_to_all(steps)
    return [int(s) for s in steps], (stop or "process 0 stopped") if stopped else None

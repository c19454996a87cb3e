"""Run a study: the sweep a config file declares, one run after another, then the report.

    python -m janus.sweep CONFIG[:VARIANT] --root ROOT [--seeds S,...] [--print] [--only N]
        [--dry_run] [-- FLAGS]

CONFIG is a config file with `get_config(arg)` and `get_sweep()`, the list of its runs' sweep
arguments (`["loss=ce,scale=1,data=curated", ...]`; configs/mini_study.py). `CONFIG:VARIANT`
calls `get_sweep(VARIANT)` instead, for a config that declares more than one sweep (e.g.
`configs/arch.py:mini`, its smoke-test sweep on JANuS-mini). Run i trains
`python -m janus.main --config=CONFIG:ARG_i --workdir=ROOT/NAME_i FLAGS...`, where NAME_i is
`run_name(ARG_i)` (`loss=ce,scale=1` -> `loss-ce_scale-1`) and FLAGS are the janus.main flags
given after `--` (the same for every run, e.g. `--config.total_steps=10`).

- Runs go one after another as subprocesses; each one's output is shown and appended to
  ROOT/NAME/sweep.log.
- Resumable: a run whose workdir has DONE (`janus.run_records.DONE_MARKER`) is skipped; any other
  restarts on its workdir, which resumes it from its latest checkpoint.
- A failed run is reported (exit status, log) and the others still run; the sweep then exits 1
  with a summary. Ctrl-C or SIGTERM stops the current run (SIGTERM: janus.main saves a
  checkpoint) and the sweep, which a rerun of the same command resumes.
- At the end: the report of every run with eval results (`janus.report` into ROOT/report:
  results.md/csv and the figures) and the summary table (val, V2, Sketch, R, A, ObjectNet,
  average robustness, robustness ratio).
- Seeds: `get_sweep()` may return `{"runs": [ARG, ...], "seeds": [0, 1, 2]}` instead of the list,
  and `--seeds 0,1,2` overrides the seeds on the command line. Each (cell, seed) is then a run:
  argument `ARG,seed=S`, name `NAME_sS` (`loss-ce_scale-1_s1`). Without seeds, the runs are the
  cells with their current names (the config's own seed). A seed sets `seed`, which drives the
  initialisation, the data order and augmentation, and the budget subset (unless
  `data.subset_seed` is set). Duplicate or malformed seeds, or a cell that sets `seed=` itself
  while seeds are declared, are a one-line error (exit 2).
- `--print`: only the runs' commands, one shell line each (shlex-quoted), for any scheduler.
  `--only N`: only the N-th run (0-based; with --print its command), without the report: what
  `launch/slurm.sbatch --sweep` runs per array task. `--dry_run`: each run's name, state (done /
  started / new) and command.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

from janus import config as config_lib
from janus import exit_codes
from janus.fileio import safe_name

LOG_NAME = "sweep.log"
REPORT_DIR = "report"


@dataclasses.dataclass(frozen=True)
class Run:
    index: int
    arg: str  # the sweep argument, e.g. "loss=ce,scale=1" (with ",seed=S" when seeds are declared)
    name: str  # its workdir's name under the root
    workdir: str
    argv: tuple[str, ...]  # janus.main's command line, from "python"
    cell: str = ""  # the cell's name (runs of one cell differ only by seed)
    seed: int | None = None  # None: no seeds declared (the config's own seed)

    @property
    def command(self) -> str:
        return shlex.join(self.argv)


def load_sweep(config_path: str, variant: str | None = None) -> list[str]:
    """`get_sweep()` (or `get_sweep(variant)`) of a config file: its cells' sweep arguments."""
    return load_study(config_path, variant)[0]


def load_study(config_path: str, variant: str | None = None) -> tuple[list[str], list[int] | None]:
    """(the cells' sweep arguments, the declared seeds or None) of a config file's sweep: a list
    of arguments, or {"runs": [...], "seeds": [...]}."""
    module = config_lib.load_config_module(config_path)
    if not callable(getattr(module, "get_sweep", None)):
        raise ValueError(f"{config_path} declares no sweep: it needs a get_sweep() function")
    if variant is None:
        sweep = module.get_sweep()
    else:
        try:
            sweep = module.get_sweep(variant)
        except TypeError as e:
            raise ValueError(
                f"{config_path}:{variant}: its get_sweep() takes no variant ({e})"
            ) from e
    seeds = None
    if isinstance(sweep, dict):
        unknown = set(sweep) - {"runs", "seeds"}
        if unknown or "runs" not in sweep:
            raise ValueError(
                f"{config_path}: get_sweep() returned a dict with keys {sorted(sweep)}; "
                "expected 'runs' and optionally 'seeds'"
            )
        if sweep.get("seeds") is not None:
            seeds = parse_seeds(sweep["seeds"], f"{config_path}: get_sweep()['seeds']")
        sweep = sweep["runs"]
    args = list(sweep)
    if not args or not all(isinstance(a, str) for a in args):
        raise ValueError(f"{config_path}: get_sweep() must return a non-empty list of strings")
    return args, seeds


def parse_seeds(seeds, where: str = "--seeds") -> list[int]:
    """'0,1,2' (or a list of ints) -> [0, 1, 2]: distinct non-negative integers, at least one."""
    items = seeds.split(",") if isinstance(seeds, str) else list(seeds)
    out = []
    for item in items:
        text = str(item).strip()
        if isinstance(item, bool) or not text.isdigit():
            raise ValueError(
                f"{where}: seed {item!r} is not a non-negative integer (got {seeds!r})"
            )
        out.append(int(text))
    if not out:
        raise ValueError(f"{where}: no seeds (got {seeds!r})")
    dup = sorted({s for s in out if out.count(s) > 1})
    if dup:
        raise ValueError(f"{where}: duplicate seeds {dup} (got {seeds!r})")
    return out


def run_name(arg: str) -> str:
    """A readable directory name for a sweep argument: 'loss=ce,scale=1,data=curated' ->
    'loss-ce_scale-1_data-curated'; characters other than letters, digits, '.', '+' and '-' in
    a value become '-' ('data=d/a*1' -> 'data-d-a-1'); no argument -> 'default'."""
    parts = []
    for item in arg.split(","):
        if not item.strip():
            continue
        if "=" not in item:
            raise ValueError(f"sweep argument {item!r} in {arg!r} is not of the form key=value")
        key, value = (x.strip() for x in item.split("=", 1))
        parts.append(f"{key}-{safe_name(value)}")
    return "_".join(parts) or "default"


def plan(
    config_path: str,
    args: Sequence[str],
    root: str,
    flags: Sequence[str] = (),
    seeds: Sequence[int] | None = None,
) -> list[Run]:
    """The runs of a sweep, cell-major (each cell's seeds together); run names must be unique
    (the error names the clashing arguments). With `seeds`, run (cell, s) is `ARG,seed=s`
    named `NAME_s<s>`; without, a run per cell."""
    cells = [run_name(a) for a in args]
    if seeds is None:
        expanded = [(a, n, n, None) for a, n in zip(args, cells)]
    else:
        for arg in args:
            if "seed" in {i.split("=", 1)[0].strip() for i in arg.split(",")}:
                raise ValueError(
                    f"sweep argument {arg!r} sets seed= while the sweep declares seeds "
                    f"{list(seeds)}"
                )
        expanded = [
            (f"{a},seed={s}" if a else f"seed={s}", f"{n}_s{s}", n, s)
            for a, n in zip(args, cells)
            for s in seeds
        ]
    args = [e[0] for e in expanded]
    names = [e[1] for e in expanded]
    clashes = collections.defaultdict(list)
    for arg, name in zip(args, names):
        clashes[name].append(arg)
    clashes = {n: a for n, a in clashes.items() if len(a) > 1}
    if clashes:
        detail = "; ".join(f"{n}: {', '.join(map(repr, a))}" for n, a in clashes.items())
        raise ValueError(f"sweep runs with the same workdir name: {detail}")
    runs = []
    for i, (arg, name, cell, seed) in enumerate(expanded):
        workdir = os.path.join(root, name)
        config = f"{config_path}:{arg}" if arg else config_path
        argv = ("python", "-m", "janus.main", f"--config={config}", f"--workdir={workdir}", *flags)
        runs.append(Run(i, arg, name, workdir, argv, cell, seed))
    return runs


def is_done(workdir: str) -> bool:
    from janus.run_records import DONE_MARKER

    return os.path.exists(os.path.join(workdir, DONE_MARKER))


def state(run: Run) -> str:
    if is_done(run.workdir):
        return "done"
    return "started" if os.path.exists(os.path.join(run.workdir, "config.json")) else "new"


class _Stop:
    """SIGTERM to the sweep: forwarded to the current run (which saves and exits); no next run."""

    def __init__(self):
        self.signum = None
        self.proc = None

    def __call__(self, signum, frame):
        self.signum = signum
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signum)


def execute(run: Run, stop: _Stop) -> int:
    """Runs janus.main for `run`, its output shown and appended to <workdir>/sweep.log.
    -> its exit status."""
    os.makedirs(run.workdir, exist_ok=True)
    log_path = os.path.join(run.workdir, LOG_NAME)
    argv = [sys.executable, *run.argv[1:]]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(log_path, "a") as log:
        log.write(f"# janus.sweep {time.strftime('%Y-%m-%d %H:%M:%S')}: {run.command}\n")
        log.flush()
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True, bufsize=1
        )
        stop.proc = proc
        try:
            for line in proc.stdout:
                sys.stdout.write(line)
                sys.stdout.flush()
                log.write(line)
        except KeyboardInterrupt:  # Ctrl-C reached the run too (same process group)
            stop.signum = signal.SIGINT
        finally:
            status = proc.wait()
            stop.proc = None
        log.write(f"# exit status {status}\n")
    return status


def report(runs: Sequence[Run], root: str) -> int:
    """The report of the runs with eval results into ROOT/report, and the summary table."""
    from janus import report as report_lib
    from janus import report_cells, report_tables

    rundirs = [r.workdir for r in runs if os.path.isdir(os.path.join(r.workdir, "eval"))]
    rows, paths = report_lib.write_report(rundirs, os.path.join(root, REPORT_DIR))
    if not rows:
        print("no eval results: no report", flush=True)
        return 0
    print(f"report: {', '.join(paths)}")
    print(f"results (latest eval/<step>.json of each run):\n{report_tables.summary_table(rows)}")
    cells, refusals = report_cells.cell_rows(rows)
    if any(c["seeds"] > 1 for c in cells):
        print("cells (mean over seeds ± half-width of the 95% t-interval):")
        print(report_tables.markdown_table(cells, report_tables.CELL_COLUMNS, intervals=True))
    for r in refusals:
        print(f"janus.sweep: {r}", file=sys.stderr)
    return len(rows)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    flags = []
    if "--" in argv:
        at = argv.index("--")
        argv, flags = argv[:at], argv[at + 1 :]
    p = argparse.ArgumentParser(
        prog="python -m janus.sweep",
        description=__doc__.split("\n\n")[0],
        usage="python -m janus.sweep CONFIG[:VARIANT] --root ROOT [--seeds S,...] [--print] "
        "[--only N] [--dry_run] [-- janus.main flags]",
        epilog=exit_codes.epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "config",
        help="config file with get_config(arg) and get_sweep(); CONFIG:VARIANT for "
        "get_sweep(VARIANT)",
    )
    p.add_argument("--root", required=True, help="folder of the runs' workdirs (and report/)")
    p.add_argument(
        "--seeds",
        default=None,
        metavar="S,...",
        help="seeds of every cell, e.g. 0,1,2 (overrides get_sweep()'s seeds): run NAME_sS per "
        "(cell, seed)",
    )
    p.add_argument(
        "--print", action="store_true", help="only print one command per (cell, seed) run"
    )
    p.add_argument("--only", type=int, default=None, metavar="N", help="only the N-th run")
    p.add_argument("--dry_run", action="store_true", help="show each run's state and command")
    args = p.parse_args(argv)
    config, variant = args.config, None
    if ":" in os.path.basename(config):
        config, variant = config.rsplit(":", 1)
    try:
        cells, seeds = load_study(config, variant)
        if args.seeds is not None:
            seeds = parse_seeds(args.seeds)
        runs = plan(config, cells, args.root, flags, seeds)
    except (OSError, ValueError) as e:
        print(f"janus.sweep: {e}", file=sys.stderr)
        return 2
    total = len(runs)
    if args.only is not None:
        if not 0 <= args.only < len(runs):
            print(f"janus.sweep: --only {args.only}: the sweep has runs 0..{len(runs) - 1}",
                  file=sys.stderr)  # fmt: skip
            return 2
        runs = [runs[args.only]]
    if args.print:
        for run in runs:
            print(run.command)
        return 0
    if args.dry_run:
        for run in runs:
            print(f"[{run.index}] {run.name} ({state(run)}): {run.command}")
        return 0

    stop = _Stop()
    signal.signal(signal.SIGTERM, stop)
    failed, stopped = [], None
    for run in runs:
        head = f"[{run.index + 1}/{total}] {run.name}"
        if is_done(run.workdir):
            print(f"{head}: done, skipped", flush=True)
            continue
        print(f"{head} ({state(run)}): {run.command}", flush=True)
        status = execute(run, stop)
        if stop.signum is not None:
            stopped = run
            break
        if status != 0 or not is_done(run.workdir):  # exit 0 without DONE: stopped from outside
            log = os.path.join(run.workdir, LOG_NAME)
            why = f"exit status {status}" + ("" if status else ", not finished (no DONE)")
            print(f"{head}: FAILED, {why} (log: {log})", flush=True)
            failed.append((run, why, log))
    if stopped is not None:
        name = signal.Signals(stop.signum).name
        print(f"janus.sweep: stopped by {name} during {stopped.name}; rerun the same command to "
              "resume", file=sys.stderr)  # fmt: skip
        return 128 + stop.signum
    if args.only is None:
        report(runs, args.root)
    if failed:
        print(f"janus.sweep: {len(failed)} of {len(runs)} runs failed:", file=sys.stderr)
        for run, why, log in failed:
            print(f"  [{run.index}] {run.name}: {why}, log {log}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

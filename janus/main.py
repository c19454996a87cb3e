"""The training entrypoint, the same on a laptop CPU, a TPU VM pod and a GPU cluster.

    python -m janus.main --config configs/<name>.py[:key=value,...] --workdir DIR
        [--config.field=value ...] [--noinloop_eval]

Multi-host: `jax.distributed.initialize` is called ONLY when a cluster is detected (`cluster_env`):
- explicit coordinator variables (JANUS_COORDINATOR_ADDRESS, JANUS_NUM_PROCESSES, JANUS_PROCESS_ID;
  set by launch/local.py), optionally JANUS_NUM_CPU_DEVICES for CPU processes;
- SLURM with more than one task (SLURM_JOB_ID and SLURM_NTASKS > 1): jax reads SLURM's variables;
- a multi-host TPU slice (TPU_WORKER_HOSTNAMES or MEGASCALE_NUM_SLICES listing more than one host):
  jax auto-detects the coordinator.
A plain single machine never calls it. A run restarted on the same workdir resumes automatically.
Before jax starts, `janus.host_memory.keep_scratch_memory` keeps XLA's CPU scratch memory from one
step to the next (Linux with glibc; `JANUS_KEEP_SCRATCH=0` turns it off); the start-up line says
whether it did.

Exit status: 0 when training finished or was stopped by SIGTERM with its checkpoint saved; 130
after a Ctrl-C (SIGINT): the first one saves a checkpoint at the end of the step and exits, a
second one exits at once, saving nothing more (`loop.INTERRUPTED_EXIT`); 2 for an invalid config,
a workdir in use, a workdir, checkpoints/ or eval/ where no file can be written (checked before
compiling), a refused config change on resume, no checkpoint that restores, or damaged or missing
records (a shard, its index: one line); 1 for any other error (the traceback is on stderr; one
line for a checkpoint that could not be written or a non-finite loss). Once the run holds its
workdir, every failure's traceback is also appended to <workdir>/errors.log and the line names it
("(traceback: <path>)"); a workdir held by another run or refused as not writable is not written
to (`fail`). After an error the trainer has already closed its checkpoints, logs and input
threads, and the process then ends with `os._exit`: interpreter teardown would join leftover
background threads (orbax, grain, tensorboardX), and one stuck there must not turn a failed run
into a hung job. After a successful
run a watchdog ends a teardown that takes longer than `loop.CLEANUP_TIMEOUT_S`, printing every
thread's stack.
"""

from __future__ import annotations

import faulthandler
import functools
import os
import signal
import sys
import traceback

from absl import app, flags, logging
from ml_collections import config_flags

from janus import exit_codes, host_memory

FLAGS = flags.FLAGS
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "configs/<name>.py[:key=value,...]", lock_config=True
)
flags.DEFINE_string("workdir", None, "Run directory (config.json, metrics, checkpoints, evals).")
flags.DEFINE_bool("inloop_eval", True, "Run the config's evals.* hooks during training.")
flags.DEFINE_list(
    "allow_config_change",
    [],
    "On resume: config fields (dotted names, prefixes, fnmatch patterns or 'all') allowed to "
    "differ from the checkpoint's config; recorded in <workdir>/history.jsonl with the step.",
)
flags.mark_flags_as_required(["config", "workdir"])


def cluster_env(env: dict[str, str] | None = None) -> tuple[str, dict] | None:
    """-> (kind, jax.distributed.initialize kwargs) when this process is part of a cluster.

    - "explicit": JANUS_COORDINATOR_ADDRESS/_NUM_PROCESSES/_PROCESS_ID (launch/local.py,
      launch/slurm.sbatch).
    - "slurm": SLURM with more than one task; jax reads SLURM's variables (and, as jax's SLURM
      detection assumes one process per GPU, gives each process only GPU SLURM_LOCALID).
    - "tpu": a multi-host TPU slice. On a TPU VM created with gcloud, TPU_WORKER_HOSTNAMES is not
      in the environment (jax finds the slice through the metadata server: GceTpuCluster in
      jax/_src/clusters/cloud_tpu_cluster.py), so launch/tpu_vm.sh says so with
      JANUS_TPU_WORKERS=<workers in the slice>; on GKE TPU_WORKER_HOSTNAMES lists the hosts;
      MEGASCALE_NUM_SLICES > 1 is a multislice run. jax's own detection then finds the rest
      (`jax.distributed.initialize()` with no arguments, as JAX's multi-process guide says for
      Cloud TPU). A single-host TPU VM (JANUS_TPU_WORKERS=1) never initialises.
    """
    env = dict(os.environ if env is None else env)
    if env.get("JANUS_COORDINATOR_ADDRESS"):
        return "explicit", {
            "coordinator_address": env["JANUS_COORDINATOR_ADDRESS"],
            "num_processes": int(env["JANUS_NUM_PROCESSES"]),
            "process_id": int(env["JANUS_PROCESS_ID"]),
        }
    if env.get("SLURM_JOB_ID") and int(env.get("SLURM_NTASKS", "1") or 1) > 1:
        return "slurm", {}
    hosts = [h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h.strip()]
    if (
        len(hosts) > 1
        or int(env.get("JANUS_TPU_WORKERS", "1") or 1) > 1
        or int(env.get("MEGASCALE_NUM_SLICES", "1") or 1) > 1
    ):
        return "tpu", {}
    return None


def initialize_distributed(env: dict[str, str] | None = None) -> str | None:
    """Calls jax.distributed.initialize when (and only when) a cluster is detected. -> kind.

    On the explicit path jax's cluster detection is switched off (`cluster_detection_method=
    "deactivate"`, jax/_src/distributed.py): with coordinator, process count and id given but no
    `local_device_ids`, jax would still ask its SLURM detection for the local devices and get
    `[SLURM_LOCALID]` (jax/_src/clusters/cluster.py, auto_detect_unset_distributed_params), i.e.
    one GPU per process, where launch/slurm.sbatch runs one process per node for all its GPUs.
    Deactivated, every device the process can see (CUDA_VISIBLE_DEVICES) is its own.
    """
    import jax

    env = dict(os.environ if env is None else env)
    if env.get("JANUS_NUM_CPU_DEVICES"):
        jax.config.update("jax_num_cpu_devices", int(env["JANUS_NUM_CPU_DEVICES"]))
    found = cluster_env(env)
    if found is None:
        return None
    kind, kwargs = found
    if kind == "explicit":
        kwargs = dict(kwargs, cluster_detection_method="deactivate")
    logging.info("cluster detected (%s): jax.distributed.initialize(%s)", kind, kwargs)
    jax.distributed.initialize(**kwargs)
    return kind


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    # `kill -USR1 <pid>` prints every thread's stack to stderr: how to see where a stuck run is.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    if not FLAGS["verbosity"].present:
        # orbax/grain log every save at INFO; the progress lines are printed, not logged.
        logging.set_verbosity(logging.WARNING)
    scratch_kept = host_memory.keep_scratch_memory()
    kind = initialize_distributed()

    import jax

    from janus import config as config_lib
    from janus import loop, train
    from janus.metric_writer import say

    overridden = config_flags.get_override_values(FLAGS["config"])
    config = config_lib.prefer_command_line(_CONFIG.value, overridden)
    if jax.process_index() == 0:
        say(
            f"process {jax.process_index()}/{jax.process_count()} ({kind or 'single machine'}), "
            f"{jax.device_count()} devices ({jax.local_device_count()} local), "
            f"{jax.devices()[0].device_kind}; {host_memory.describe(scratch_kept)}"
        )
    try:
        config_lib.validate(
            config,
            num_devices=jax.device_count(),
            num_processes=jax.process_count(),
            check_data=False,
        )
        prepare_data(config, say)
        config_lib.validate(
            config, num_devices=jax.device_count(), num_processes=jax.process_count()
        )
    except config_lib.ConfigError as e:
        print(f"janus.main: invalid config: {e}", file=sys.stderr)
        sys.exit(2)

    make_hooks = None
    if FLAGS.inloop_eval and len(config.evals):
        from janus.evaluate.inloop import make_inloop_evaluators

        make_hooks = functools.partial(make_inloop_evaluators, workdir=FLAGS.workdir)
    try:
        result = train.train_and_evaluate(
            config,
            FLAGS.workdir,
            make_hooks=make_hooks,
            allow_changes=FLAGS.allow_config_change,
        )
    except BaseException as e:  # every failure (also Ctrl-C) ends the process here
        fail(e, FLAGS.workdir)
    # Interpreter teardown joins library threads and (multi-host) shuts jax.distributed down; if
    # that ever sticks, print every stack and end the process rather than hang the job.
    faulthandler.dump_traceback_later(loop.CLEANUP_TIMEOUT_S, exit=True)
    if jax.process_index() == 0:
        say(f"done at step {result.step}{' (stopped early)' if result.stopped_early else ''}")
        if not result.stopped_early:
            print_results(FLAGS.workdir)
    if result.stop_reason == "SIGINT":  # Ctrl-C, saved: a script's loop over runs stops here
        sys.exit(loop.INTERRUPTED_EXIT)


def print_results(workdir: str) -> None:
    """The run's final table: the latest `eval/<step>.json` per classifier, as `janus.report`
    reads it (`summary_table`). Nothing without eval results; a failure here is only a warning."""
    from janus import report, report_tables

    try:
        rows = report.load_rows([workdir])
        if rows:
            table = report_tables.summary_table(rows)
            print(f"results (latest {workdir}/eval/<step>.json):\n{table}", flush=True)
    except Exception as e:  # the run itself has finished: never fail it over the table
        print(f"warning: no results table: {type(e).__name__}: {e}", file=sys.stderr, flush=True)


def prepare_data(config, say) -> None:
    """Runs the config's dataset recipe (`data.prepare`) before the data are opened.

    "mini": JANuS-mini v2 is generated and built under data.train's parent dir when it is missing
    or stale (a build by janus.data.mini.prepare of an older generator or spec); processes on one
    machine wait for the first one's build (a file lock) and reuse it. Records that data.train
    names and that prepare did not build are used as they are."""
    from janus import config as config_lib

    if config_lib.data_recipe(config) == "mini":
        from janus.data.mini import prepare

        dirs = [d for d, _ in config_lib.train_dirs(config)]
        root, raw = prepare.layout(dirs[0])
        given = all(os.path.isfile(os.path.join(d, "info.json")) for d in dirs)
        if given and not os.path.isfile(os.path.join(root, prepare.BUILT_FILE)):
            return  # records the user built by hand: nothing to prepare
        prepare.prepare(root, raw, log=say)


def expected_failure(e: BaseException) -> tuple[int, str] | None:
    """(exit status, the message's one line) of a failure janus expects; None for one it does
    not (a bug, or what no check foresaw: status 1 with the traceback on stderr)."""
    from janus import checkpoint as ckpt_lib
    from janus import config as config_lib
    from janus import loop, train
    from janus.data.tfrecord import RecordsError
    from janus.metric_window import NonFiniteLossError

    if isinstance(e, KeyboardInterrupt):  # Ctrl-C outside the loop (setup)
        line = "interrupted (Ctrl-C); nothing saved since the last checkpoint"
        return loop.INTERRUPTED_EXIT, line
    if isinstance(e, train.RunRefused):  # workdir in use, drift on resume, no good checkpoint
        return exit_codes.EXPECTED_FAILURE, str(e)
    if isinstance(e, config_lib.ConfigError):  # found once the data are read, pre-compile
        return exit_codes.EXPECTED_FAILURE, f"invalid config: {e}"
    if isinstance(e, RecordsError):  # a shard, its index or a record damaged or missing
        return exit_codes.EXPECTED_FAILURE, (
            f"damaged records: {e}; rebuild them with the command in their info.json"
        )
    if isinstance(e, ckpt_lib.SaveFailed):  # e.g. checkpoints/ made read-only mid-run
        return exit_codes.ERROR, str(e)
    if isinstance(e, NonFiniteLossError):  # the message names the step and the last loss
        return exit_codes.ERROR, f"NonFiniteLossError: {e}"
    return None


def fail(e: BaseException, workdir: str) -> None:
    """Ends the process over `e`: an expected failure as one line on stderr (its status, no
    traceback), anything else as its traceback and status 1. Either way the traceback is
    appended to `<workdir>/errors.log` (`janus.workdir.append_error_log`) and the last line
    names it, but only in a workdir this run has held: one that another run holds, or that was
    refused as a file or not writable, is not written to."""
    import jax

    from janus import workdir as workdir_lib

    text = "".join(traceback.format_exception(e))
    log = None
    if workdir_lib.held_here(workdir):
        log = workdir_lib.append_error_log(
            workdir, text, command=" ".join(sys.argv), process_index=jax.process_index()
        )
    where = f" (traceback: {log})" if log else ""
    known = expected_failure(e)
    if known is None:
        print(text, end="", file=sys.stderr)
        if log:
            print(f"janus.main: the traceback above is also in {log}", file=sys.stderr)
        exit_now(exit_codes.ERROR)
    status, line = known
    print(f"janus.main: {line}{where}", file=sys.stderr)
    exit_now(status)


def exit_now(status: int) -> None:
    """Flushes the streams and ends the process immediately."""
    logging.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, except that a bad argument (an unknown or ill-typed config field, a
    bad config-file argument, a missing flag) is one line on stderr and exit status 2."""
    try:
        return FLAGS(argv)
    except SystemExit as e:  # absl's --help exits 1; asked-for help is a success (exit_codes)
        helped = e.code == 1 and {"-h", "--help", "--helpshort", "--helpfull"} & set(argv[1:])
        sys.exit(exit_codes.OK if helped else e.code)
    except (flags.Error, AttributeError, KeyError, ValueError, TypeError) as e:
        from janus import config as config_lib

        line = config_lib.flag_error_line(e, argv)
        what = "invalid config: " if "config" in line else "bad argument: "
        print(f"janus.main: {what}{line}", file=sys.stderr)
        sys.exit(2)


__doc__ += "\n" + exit_codes.epilog() + "\n"  # --help shows the module docstring

if __name__ == "__main__":
    # grain worker processes need absl flags parsed first (STACK.md); app.run does that.
    app.run(main, flags_parser=parse_flags)

"""python -m janus.evaluate --workdir DIR [--step N | --all | --watch] [--wise A,...] [options]

Evaluates checkpoints of a training workdir (or of a converted public checkpoint written by
janus.checkpoint.save_for_inference) on the shift sets and writes DIR/eval/<step>.json plus a row of
DIR/eval/results.csv. Without --step/--all/--watch: the latest complete checkpoint. A result that
exists already (a rerun, or the in-loop evaluation's at the end of training) is kept as
DIR/eval/previous/<step>.<n>.json; the new one takes its place.

--params ema evaluates the EMA of the parameters that a run with optimizer.ema_decay keeps in
its checkpoints, --params avg the averages that janus.average wrote under DIR/averaged/ (--step:
the last step averaged); their results are DIR/eval/<step>_ema.json and <step>_avg.json, with a
"params" field ("params" for the checkpoint's own parameters, the default).

--wise 0,0.25,0.5,0.75,1 evaluates WiSE-FT's weight-space ensembles of a fine-tuning workdir
(configs/finetune.py): (1-a) * its zero-shot start + a * the checkpoint, one result per a.

Where the sets live (later wins; a set without a location, or whose data is missing, is named in a
note and the other sets still run):
  default              only when no location below is given: a run trained on JANuS-mini (its
                       data.train records dir has suite "mini") reads val/v2/sketch/r/a/objectnet
                       from that records dir
  --data.tfds=DIR      a tfds data dir (imagenet2012, imagenet_v2, imagenet_sketch, imagenet_r,
                       imagenet_a, imagenet2012_real)
  --data.records=DIR   a janus records dir holding every set as a split
  --data.config=FILE   JSON {"val": SPEC, "sketch": SPEC, ...}
  --data.<set>=SPEC    one set; SPEC = records:DIR[#split] | tfds:DATA_DIR | folder:DIR | DIR

Each set's protocol follows where it is read: a tfds dir or a folder layout gets the ImageNet
protocol (R / A / ObjectNet restricted to label set & the set's classes), a split of a JANuS-mini
records dir the mini protocol. Sets of different suites are never averaged together (the metric is
null and a note names each set's suite).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from janus import display, exit_codes
from janus.evaluate import results, runner, sets, watch


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m janus.evaluate",
        description=__doc__.split("\n\n", 1)[1],
        epilog=exit_codes.epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--workdir", required=True, help="training workdir (holds checkpoints/)")
    when = p.add_mutually_exclusive_group()
    when.add_argument("--step", type=int, help="evaluate this checkpoint step")
    when.add_argument("--all", action="store_true", help="evaluate every complete checkpoint")
    when.add_argument("--watch", action="store_true", help="evaluate new checkpoints as they come")
    p.add_argument(
        "--watch_timeout",
        type=float,
        default=3600.0,
        help="--watch: stop after this many seconds without a new checkpoint",
    )
    p.add_argument("--watch_poll", type=float, default=10.0, help="--watch: seconds between polls")
    p.add_argument(
        "--params",
        default="params",
        choices=runner.WEIGHTS,
        help="which weights: the checkpoint's parameters, their EMA (optimizer.ema_decay) or "
        "janus.average's average (DIR/averaged/)",
    )
    p.add_argument(
        "--wise",
        default=None,
        metavar="A,A,...",
        help="WiSE-FT: evaluate (1-a) * zero-shot + a * fine-tuned for each a in [0, 1] of a "
        "configs/finetune.py workdir (its zeroshot/ and the --step checkpoint, default the "
        "latest); results eval/<step>_wise<a>.json",
    )
    p.add_argument(
        "--final_step",
        type=int,
        default=None,
        help="--watch: stop once this step is evaluated (default: config total_steps; "
        f"a {watch.DONE_MARKER} file in the workdir also stops it)",
    )
    p.add_argument(
        "--sets",
        default=",".join(sets.DEFAULT_SETS),
        help=f"comma-separated, from {','.join(sets.SET_NAMES)}",
    )
    p.add_argument("--data.records", dest="records", default=None)
    p.add_argument("--data.tfds", dest="tfds", default=None)
    p.add_argument("--data.config", dest="data_config", default=None)
    for name in sets.SET_NAMES:
        p.add_argument(f"--data.{name}", dest=f"data_{name}", default=None, help=argparse.SUPPRESS)
    p.add_argument(
        "--v2_variant",
        default="matched-frequency",
        choices=sets.V2_VARIANTS,
        help="ImageNet-V2 variant: the tfds config read (imagenet_v2/<variant>); with a folder or "
        "records spec, point it at that variant's data (the variant is recorded in the JSON)",
    )
    p.add_argument(
        "--label_set",
        default=None,
        help="default: the checkpoint config's label_set; another one is written to "
        "eval/<step>[_<classifier>]_ls-<label set>.json",
    )
    p.add_argument(
        "--classifier",
        default=None,
        choices=("head", "zeroshot", "linear_probe"),
        help="default: head for CE models, zeroshot for VL models",
    )
    p.add_argument("--templates", default="openai80", help="openai80 | openai7 | single")
    p.add_argument("--class_names", default="clip", help="clip | wordnet | file of 1000 names")
    p.add_argument("--batch_size", type=int, default=64, help="global eval batch size")
    p.add_argument("--resolution", type=int, default=None)
    p.add_argument("--max_examples", type=int, default=None, help="per set (quick checks)")
    p.add_argument(
        "--probe.train",
        dest="probe_train",
        default=None,
        help="linear_probe: training records dir (default: the run's data.train)",
    )
    p.add_argument("--probe.per_class", dest="probe_per_class", type=int, default=50)
    p.add_argument(
        "--probe.C",
        dest="probe_C",
        type=float,
        default=None,
        help="inverse L2 strength; default: picked on a 20%% hold-out",
    )
    return p


def options_from_args(args) -> runner.EvalOptions:
    data = {}
    if args.data_config:
        with open(args.data_config) as f:
            data.update(json.load(f))
        bad = [k for k in data if k not in sets.SET_NAMES]
        if bad:
            raise SystemExit(
                f"{args.data_config}: unknown set name(s) {bad}; known {sets.SET_NAMES}"
            )
    for name in sets.SET_NAMES:
        if getattr(args, f"data_{name}"):
            data[name] = getattr(args, f"data_{name}")
    chosen = [s.strip() for s in args.sets.split(",") if s.strip()]
    bad = [s for s in chosen if s not in sets.SET_NAMES]
    if bad:
        raise SystemExit(f"--sets: unknown set(s) {bad}; known {sets.SET_NAMES}")
    return runner.EvalOptions(
        sets=tuple(chosen),
        data=data,
        records=args.records,
        tfds=args.tfds,
        label_set=args.label_set,
        classifier=args.classifier,
        templates=args.templates,
        class_names=args.class_names,
        batch_size=args.batch_size,
        resolution=args.resolution,
        v2_variant=args.v2_variant,
        max_examples=args.max_examples,
        probe_train=args.probe_train,
        probe_per_class=args.probe_per_class,
        probe_C=args.probe_C,
        params=args.params,
    )


def _summary(result: dict) -> str:
    """One line per result; every accuracy and metric may be null (printed n/a)."""
    parts = [f"step {result['step']}"]
    parts += [f"{k}={display.metric(v.get('top1'))}" for k, v in result["sets"].items()]
    m = result["metrics"]
    parts.append(f"avg_rob={display.metric(m.get('avg_robustness'))}")
    parts.append(f"ratio={display.metric(m.get('robustness_ratio'))}")
    if result.get("suite") not in (None, "imagenet"):
        parts.append(f"suite={result['suite']}")
    return " ".join(parts)


def _say_kept_and_skipped(path: str, result: dict) -> None:
    """The lines a result needs beside its summary: the earlier result it replaced (kept in
    eval/previous/) and the images each set skipped as unreadable (first names)."""
    try:
        with open(path) as f:
            replaces = json.load(f).get("replaces")
    except (OSError, ValueError):
        replaces = None
    if replaces:
        print(f"  the earlier result is kept as {replaces}", flush=True)
    for name, reasons in (result.get("skipped") or {}).items():
        n = reasons.get("unreadable image")
        if n:
            first = ", ".join((result.get("skipped_files") or {}).get(name, []))
            print(f"  {name}: {n} unreadable image(s) left out of n (first: {first})", flush=True)


def _to_wandb(workdir: str, result: dict) -> None:
    """The result's table and summary in the run's W&B run, when its config logs to W&B
    (`janus.wandb_writer.log_eval`). Not under --watch: the training run may still be writing to
    its W&B run then, and W&B takes one writer per run."""
    import jax

    from janus import config, wandb_writer

    try:
        if jax.process_index() == 0 and wandb_writer.log_eval(workdir, result):
            print(f"  logged to W&B (log.wandb_project of {workdir}/config.json)", flush=True)
    except config.ConfigError as e:  # the result is written: W&B missing is only a warning
        print(f"janus.evaluate: not logged to W&B: {e}", file=sys.stderr, flush=True)


def _nothing_evaluated(notes) -> int:
    print("no set could be evaluated:\n  " + "\n  ".join(notes), file=sys.stderr)
    print("give the sets' locations with --data.* (see --help)", file=sys.stderr)
    return 2


class _NoMissingItemMetadataWarning(logging.Filter):
    """orbax warns "Metadata file does not exist: .../state/_CHECKPOINT_METADATA" for every
    checkpoint read item by item (janus.checkpoint.load_for_inference): that file lives one level
    up, beside the items, so the warning says nothing about the checkpoint."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Metadata file does not exist")


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    absl_logger = logging.getLogger("absl")
    if not any(isinstance(f, _NoMissingItemMetadataWarning) for f in absl_logger.filters):
        absl_logger.addFilter(_NoMissingItemMetadataWarning())
    if not args.watch and not os.path.isdir(args.workdir):
        # (--watch may start before the training run has made its workdir.)
        print(f"janus.evaluate: workdir {args.workdir} does not exist", file=sys.stderr)
        return 2
    from janus.checkpoint import NoEma, list_complete_steps, weights_workdir

    if args.params != "params" and (args.watch or args.wise is not None):
        print(
            f"janus.evaluate: --params {args.params} evaluates saved checkpoints: use --step or "
            "--all, not --watch or --wise",
            file=sys.stderr,
        )
        return 2
    opts = options_from_args(args)
    ev = runner.Evaluator(opts, cache_dir=os.path.join(args.workdir, "eval", "cache"))
    if args.watch:
        try:
            watch.watch(
                ev,
                args.workdir,
                timeout=args.watch_timeout,
                poll=args.watch_poll,
                final_step=args.final_step,
                on_result=lambda r: print(_summary(r), flush=True),
            )
        except watch.NoSetEvaluated as e:
            return _nothing_evaluated(e.args[0])
        return 0
    if args.wise is not None:
        return _evaluate_wise(ev, args)
    where = weights_workdir(args.workdir, args.params)
    steps = list_complete_steps(where)
    if not steps:
        hint = " (write one with python -m janus.average)" if args.params == "avg" else ""
        print(f"no complete checkpoint under {where}/checkpoints{hint}", file=sys.stderr)
        return 1
    if args.step is not None and args.step not in steps:
        print(f"step {args.step} not among complete checkpoints {steps}", file=sys.stderr)
        return 1
    todo = steps if args.all else [args.step if args.step is not None else steps[-1]]
    for step in todo:
        try:
            result = ev.evaluate_step(args.workdir, step)
        except NoEma as e:
            print(f"janus.evaluate: {e}", file=sys.stderr)
            return 2
        if not result["sets"]:
            return _nothing_evaluated(result["notes"])
        path = results.write_result(args.workdir, result, args.label_set)
        print(_summary(result), "->", path, flush=True)
        _say_kept_and_skipped(path, result)
        _to_wandb(args.workdir, result)
    return 0


def _evaluate_wise(ev: runner.Evaluator, args) -> int:
    from janus.evaluate import wise

    try:
        if args.all or args.watch:
            raise wise.WiseError("--wise evaluates one fine-tuned checkpoint: use --step or none")
        todo = wise.evaluate(ev, args.workdir, wise.parse_alphas(args.wise), args.step)
    except (wise.WiseError, FileNotFoundError) as e:
        print(f"janus.evaluate: {e}", file=sys.stderr)
        return 2
    for result in todo:
        if not result["sets"]:
            return _nothing_evaluated(result["notes"])
        path = results.write_result(args.workdir, result, args.label_set)
        print(f"alpha={result['alpha']:g}", _summary(result), "->", path, flush=True)
        _say_kept_and_skipped(path, result)
        _to_wandb(args.workdir, result)
    return 0


def run(argv=None) -> int:
    """`main`, where an unexpected error also leaves its traceback in `<--workdir>/errors.log`
    (`janus.workdir.append_error_log`; when the workdir exists), named on stderr after it, and
    exit status 1 (exit_codes)."""
    try:
        return main(argv)
    except Exception as e:
        import traceback

        from janus import workdir as workdir_lib

        text = "".join(traceback.format_exception(e))
        print(text, end="", file=sys.stderr)
        workdir = _parser().parse_args(argv).workdir  # main parsed them already
        log = workdir_lib.append_error_log(workdir, text, command=" ".join(sys.argv))
        if log:
            print(f"janus.evaluate: the traceback above is also in {log}", file=sys.stderr)
        return exit_codes.ERROR


if __name__ == "__main__":
    from janus import host_memory

    host_memory.keep_scratch_memory()
    sys.exit(run())

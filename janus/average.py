"""python -m janus.average --workdir DIR --last N

Averages the last N complete checkpoints of a training workdir, uniformly, array by array: the
parameters and the BatchNorm statistics (as timm's avg_checkpoints.py averages every entry of the
state dict). The average is written as DIR/averaged/checkpoints/<last step averaged>/ in the
training layout, without optimizer state, with the config of that last checkpoint plus
"averaged_steps", the steps that went in. `python -m janus.evaluate --workdir DIR --params avg`
evaluates it like any checkpoint (its result: DIR/eval/<step>_avg.json, which names the steps).
An average written before for the same last step is replaced.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Mapping

import numpy as np

from janus import exit_codes


class AverageError(ValueError):
    """Too few checkpoints, or checkpoints of different models; the message names the steps."""


def average(trees: Mapping[int, Mapping]) -> dict:
    """The uniform mean of variables trees {step: {"params", "batch_stats"?}}, each array summed
    in float64 and stored in its own dtype. Trees with other arrays or shapes are an error naming
    the two steps and the first difference."""
    from janus.checkpoint import flat_paths

    steps = sorted(trees)
    first = trees[steps[0]]
    paths = flat_paths(first)
    for s in steps[1:]:
        if (other := flat_paths(trees[s])) != paths:
            only = sorted(set(paths) ^ set(other))
            raise AverageError(
                f"checkpoints {steps[0]} and {s} hold different arrays, e.g. {only[:3]}"
            )

    def mean(*leaves, path=()):
        shapes = {np.shape(x) for x in leaves}
        if len(shapes) > 1:
            raise AverageError(
                f"{'/'.join(path)}: shapes {[np.shape(x) for x in leaves]} in checkpoints {steps}"
            )
        total = sum(np.asarray(x, np.float64) for x in leaves)
        return (total / len(leaves)).astype(np.asarray(leaves[0]).dtype)

    def walk(nodes, path=()):
        if isinstance(nodes[0], Mapping):
            return {k: walk([n[k] for n in nodes], path + (str(k),)) for k in nodes[0]}
        return mean(*nodes, path=path)

    return walk([trees[s] for s in steps])


def average_last(workdir: str, last: int) -> tuple[str, list[int]]:
    """Writes the average of the last `last` complete checkpoints of `workdir`.
    -> (the averaged step dir, the steps averaged)."""
    from janus import checkpoint as ckpt_lib

    if last < 1:
        raise AverageError(f"--last {last}: average at least 1 checkpoint")
    steps = ckpt_lib.list_complete_steps(workdir)
    if len(steps) < last:
        raise AverageError(
            f"{ckpt_lib.checkpoints_dir(workdir)} has {len(steps)} complete checkpoint(s) "
            f"(steps {steps}); --last {last} needs {last}"
        )
    steps = steps[-last:]
    where = ckpt_lib.checkpoints_dir(workdir)
    loaded = {s: ckpt_lib.load_for_inference(where / str(s)) for s in steps}
    config = {**loaded[steps[-1]][0], "averaged_steps": steps}
    variables = average({s: v for s, (_, v, _) in loaded.items()})
    out = ckpt_lib.weights_workdir(workdir, "avg")
    previous = os.path.join(out, ckpt_lib.CHECKPOINTS, str(steps[-1]))
    if os.path.isdir(previous):
        shutil.rmtree(previous)
    return ckpt_lib.save_for_inference(out, steps[-1], config, variables), steps


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m janus.average",
        description=__doc__.split("\n\n", 1)[1],
        epilog=exit_codes.epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--workdir", required=True, help="training workdir (holds checkpoints/)")
    p.add_argument("--last", type=int, required=True, help="average this many latest checkpoints")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if not os.path.isdir(args.workdir):
        print(f"janus.average: workdir {args.workdir} does not exist", file=sys.stderr)
        return exit_codes.EXPECTED_FAILURE
    try:
        path, steps = average_last(args.workdir, args.last)
    except AverageError as e:
        print(f"janus.average: {e}", file=sys.stderr)
        return exit_codes.EXPECTED_FAILURE
    print(f"averaged steps {', '.join(map(str, steps))} -> {path}", flush=True)
    return exit_codes.OK


if __name__ == "__main__":
    sys.exit(main())

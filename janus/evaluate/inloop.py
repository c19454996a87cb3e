"""In-loop evaluation hooks: the trainer calls them without importing the evaluator (janus.main
passes `make_inloop_evaluators` to janus.train, so data flows one way).

Config: `evals.<name> = dict(every_steps=N, set="val" | "val,v2" | "all", classifier=None,
data={set: spec}, records=None, tfds=None, label_set=None, templates="openai80",
batch_size=64, max_examples=None)` - the same fields as `runner.EvalOptions` (`set` -> sets).
Each hook(step, variables) evaluates the given variables with the trainer's model object, writes
`<workdir>/eval/<step>.json` + results.csv when a workdir is known, and returns scalars
{"<set>/top1", "<set>/top5", "avg_robustness", "robustness_ratio"} for the trainer's writer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import numpy as np

from janus.evaluate import results, runner, sets

_FIELDS = {f.name for f in dataclasses.fields(runner.EvalOptions)}


def _as_dict(config) -> dict:
    return config.to_dict() if hasattr(config, "to_dict") else dict(config)


def options_from_eval_config(ev: Mapping) -> runner.EvalOptions:
    ev = dict(ev)
    chosen = ev.pop("set", ev.pop("sets", "val"))
    if isinstance(chosen, str):
        chosen = sets.DEFAULT_SETS if chosen == "all" else [s.strip() for s in chosen.split(",")]
    kwargs = {k: v for k, v in ev.items() if k in _FIELDS and v is not None}
    kwargs["data"] = dict(kwargs.get("data") or {})
    return runner.EvalOptions(sets=tuple(chosen), **kwargs)


def _to_host(variables):
    """Global (possibly sharded, multi-process) arrays -> host numpy, on every process."""
    import jax
    from jax.experimental import multihost_utils

    def one(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(x)

    return jax.tree.map(one, dict(variables))


def make_inloop_evaluators(config, model, mesh=None, *, workdir: str | None = None) -> list:
    """One hook per `config.evals.<name>`; each has `.name` and `.every_steps` for the loop.

    `mesh` is accepted for the trainer's call signature but not used: the hook gathers the
    variables to the host and evaluates on a mesh of this process' devices, like the CLI."""
    cfg = _as_dict(config)
    workdir = workdir or cfg.get("workdir")
    hooks = []
    for name, ev in (cfg.get("evals") or {}).items():
        hooks.append(_make_hook(name, ev, cfg, model, workdir))
    return hooks


def _make_hook(name: str, ev: Mapping, cfg: dict, model, workdir: str | None) -> Callable:
    opts = options_from_eval_config({k: v for k, v in ev.items() if k != "every_steps"})
    cache = f"{workdir}/eval/cache" if workdir else None
    evaluator = runner.Evaluator(opts, cache_dir=cache)

    def hook(step: int, variables) -> dict:
        # DESIGN.md's schema names the step's checkpoint; the note says these were live parameters.
        result = evaluator.evaluate_variables(
            cfg, _to_host(variables), step=int(step), checkpoint=f"checkpoints/{step}", model=model
        )
        result["notes"].append(f"in-loop evaluation (evals.{name}) of the live parameters")
        if workdir:
            results.write_result(workdir, result)
        out = {}
        for s, r in result["sets"].items():
            for k in ("top1", "top5"):
                if r.get(k) is not None:
                    out[f"{s}/{k}"] = float(r[k])
        for k in ("avg_robustness", "robustness_ratio"):
            if result["metrics"].get(k) is not None:
                out[k] = float(result["metrics"][k])
        return out

    hook.name = name
    hook.every_steps = int(ev["every_steps"])
    return hook

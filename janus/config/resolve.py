"""From a config's fields to the run's numbers: mesh shape, data dirs, budget, durations.

`resolve_durations(config, num_train_examples)` is the ONE place where epochs/examples become
steps (training length and warmup). `resolve_run` gathers everything a start resolves into one
frozen `ResolvedRun`, which the loop, config.json and the resume check all read.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping

from janus.config.errors import ConfigError


def mesh_axes(config) -> list[tuple[str, int]]:
    axes = [tuple(a) for a in config["mesh"]]
    for a in axes:
        if len(a) != 2 or not isinstance(a[0], str) or not isinstance(a[1], int):
            raise ConfigError(f"config field 'mesh' entry {a!r} is not (name: str, size: int)")
    return axes


def resolve_mesh_shape(axes: list[tuple[str, int]], num_devices: int) -> list[tuple[str, int]]:
    """Replaces the one -1 size by the remaining devices; errors name the 'mesh' field."""
    known = math.prod(s for _, s in axes if s != -1)
    free = [n for n, s in axes if s == -1]
    if len(free) > 1:
        raise ConfigError(f"config field 'mesh' {axes}: at most one axis may have size -1")
    if known <= 0 or num_devices % known:
        raise ConfigError(
            f"config field 'mesh' {axes}: fixed axis sizes ({known}) do not divide "
            f"the {num_devices} devices"
        )
    out = [(n, num_devices // known if s == -1 else s) for n, s in axes]
    if math.prod(s for _, s in out) != num_devices:
        raise ConfigError(f"config field 'mesh' {axes} does not use all {num_devices} devices")
    return out


def train_dirs(config) -> list[tuple[str, float]]:
    """data.train as [(dir, weight)]."""
    t = config["data"]["train"]
    out = []
    if isinstance(t, str):
        # "dirA" or a mixture "dirA*2+dirB" (weight after '*', default 1).
        for part in t.split("+"):
            path, _, weight = part.strip().partition("*")
            try:
                out.append((path, float(weight) if weight else 1.0))
            except ValueError as e:
                raise ConfigError(
                    f"config field 'data.train' = {t!r}: bad weight {weight!r}"
                ) from e
        return out
    for i, item in enumerate(t):
        if isinstance(item, str):
            out.append((item, 1.0))
        elif isinstance(item, Mapping) and "dir" in item:
            out.append((str(item["dir"]), float(item.get("weight", 1.0))))
        elif isinstance(item, list | tuple) and len(item) == 2:
            out.append((str(item[0]), float(item[1])))
        else:
            raise ConfigError(
                f"config field 'data.train[{i}]' = {item!r}: expected a dir or {{dir, weight}}"
            )
    return out


def data_recipe(config) -> str | None:
    """data.prepare, with "none" / "" (what `--config.data.prepare=none` gives) meaning None."""
    value = (config["data"].get("prepare") or "").strip()
    return None if value.lower() in ("", "none") else value


@dataclasses.dataclass(frozen=True)
class Durations:
    total_steps: int
    warmup_steps: int
    steps_per_epoch: float
    num_train_examples: int


def resolve_budget(config, count_examples: Callable[[str, int | None], int]) -> int | None:
    """data.budget, or data.budget_scale x the size of data.budget_reference (or data.train)."""
    d = config["data"]
    if d["budget_scale"] is None:
        return d["budget"]
    if d["budget"] is not None:
        raise ConfigError("set only one of data.budget and data.budget_scale")
    ref = d["budget_reference"] or train_dirs(config)[0][0]
    return int(round(d["budget_scale"] * count_examples(ref, None)))


def resolve_durations(config, num_train_examples: int) -> Durations:
    """THE place where epochs/examples become steps. Rounds up (never trains less than asked)."""
    batch = config["input"]["batch_size"]
    if num_train_examples <= 0:
        raise ConfigError(f"no training examples (data.train = {config['data']['train']!r})")
    per_epoch = num_train_examples / batch

    def steps(value_steps, value_epochs, value_examples, what):
        if value_steps is not None:
            return int(value_steps)
        if value_epochs is not None:
            return int(math.ceil(value_epochs * per_epoch))
        if value_examples is not None:
            return int(math.ceil(value_examples / batch))
        raise ConfigError(f"no duration given for {what}")

    total = steps(
        config["total_steps"], config["total_epochs"], config["total_examples"], "training"
    )
    o = config["optimizer"]
    if all(o[f] is None for f in ("warmup_steps", "warmup_epochs", "warmup_examples")):
        warm = 0
    else:
        warm = steps(o["warmup_steps"], o["warmup_epochs"], o["warmup_examples"], "warmup")
    # Short runs (tests, tiny budgets): warmup never takes more than the whole run.
    warm = min(warm, total)
    return Durations(total, warm, per_epoch, num_train_examples)


def to_dict(config) -> dict:
    """ConfigDict (or dict) -> plain JSON-able dict (tuples become lists)."""
    d = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    return json.loads(json.dumps(d, default=lambda o: list(o) if isinstance(o, tuple) else str(o)))


@dataclasses.dataclass(frozen=True)
class ResolvedRun:
    """A config resolved on its devices and data, once per start."""

    config: dict  # the config's fields as plain JSON (`to_dict`)
    durations: Durations
    budget: int | None  # examples, after data.budget_scale; None = all
    mesh: dict[str, int]  # axis name -> size
    num_devices: int
    num_processes: int
    device_kind: str

    def record(self) -> dict:
        """The config plus its "resolved" section: config.json, and the config each checkpoint
        stores (a resume compares against it)."""
        d = self.durations
        return self.config | {
            "resolved": {
                "total_steps": d.total_steps,
                "warmup_steps": d.warmup_steps,
                "num_train_examples": d.num_train_examples,
                "budget": self.budget,
                "steps_per_epoch": d.steps_per_epoch,
                "num_devices": self.num_devices,
                "num_processes": self.num_processes,
                "mesh": dict(self.mesh),
                "device_kind": self.device_kind,
            }
        }


def resolve_run(
    config,
    *,
    num_train_examples: int,
    budget: int | None,
    mesh: Mapping[str, int],
    num_processes: int,
    device_kind: str,
) -> ResolvedRun:
    """`config` with the numbers its data and devices give it (`mesh`: the built mesh's shape)."""
    return ResolvedRun(
        config=to_dict(config),
        durations=resolve_durations(config, num_train_examples),
        budget=budget,
        mesh=dict(mesh),
        num_devices=math.prod(mesh.values()),
        num_processes=num_processes,
        device_kind=device_kind,
    )

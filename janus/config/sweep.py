"""Config-file arguments: `configs/x.py:k=v,k2=v2`, presets, and command-line precedence.

- `apply_sweep(config, arg, extra_keys)`: every config accepts the COMMON_SWEEP_KEYS; a config
  adds its own. An unknown key is an error naming it, the closest valid key and the valid ones.
- `prefer_command_line(config, overridden)`: `--config.total_steps=N` clears total_epochs (and
  likewise for the other EXCLUSIVE_FIELDS), as the sweep keys do.
- `apply_preset(config, name)`: the accelerator presets (`preset=gpu|tpu|cpu`).
- `pop_choice(args, key, known, default)`: a key a config file reads itself (`setup=paper|mini`).
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence

import ml_collections

from janus.config.errors import ConfigError, did_you_mean


@dataclasses.dataclass(frozen=True)
class SweepKey:
    doc: str
    apply: Callable[[ml_collections.ConfigDict, object], None]


# Groups of fields of which at most one is set. Setting one, by a sweep key or by
# --config.<field>=value (`prefer_command_line`), clears the others of its group.
EXCLUSIVE_FIELDS = (
    ("total_steps", "total_epochs", "total_examples"),
    ("optimizer.warmup_steps", "optimizer.warmup_epochs", "optimizer.warmup_examples"),
    ("data.budget", "data.budget_scale"),
)


def _assign(c, path: str, value) -> None:
    *parents, leaf = path.split(".")
    node = c
    for p in parents:
        node = node[p]
    node[leaf] = value


def _set(path: str, cast: Callable | None = None):
    """A sweep-key action: config.<path> = value, clearing the fields exclusive with it."""

    def apply(c, v):
        for group in EXCLUSIVE_FIELDS:
            if path in group:
                for other in group:
                    _assign(c, other, None)
        _assign(c, path, cast(v) if cast else v)

    return apply


def prefer_command_line(config, overridden: Iterable[str]) -> ml_collections.ConfigDict:
    """`--config.total_steps=N` on a config that sets total_epochs means "train N steps": for each
    EXCLUSIVE_FIELDS group with exactly one field among `overridden` (the dotted paths set by
    --config.<field>=value, `config_flags.get_override_values`), the group's other fields are
    cleared, as the sweep keys do. -> config."""
    named = set(overridden)
    for group in EXCLUSIVE_FIELDS:
        chosen = [f for f in group if f in named]
        if len(chosen) == 1:
            for other in group:
                if other != chosen[0]:
                    _assign(config, other, None)
    return config


def host_worker_count() -> int:
    """Input worker processes that use the host's cores: all but one (the training loop's)."""
    return max(1, (os.cpu_count() or 2) - 1)


# Accelerator presets (the `preset=` config argument, README "Accelerator preset"): fields set
# for a kind of device, computed when applied (the worker count reads this host's cores).
# Parameters stay float32 whatever model.dtype (the models' param_dtype); the train step always
# donates the train state's buffers (janus.train_step.compile_train_step), so no field is needed.
# On the CPU bf16 compute is slower than float32 (benchmarks/RESULTS.md), so "cpu" keeps float32.
ACCELERATOR_PRESETS: dict[str, Callable[[], dict[str, object]]] = {
    "gpu": lambda: {"model.dtype": "bfloat16", "data.worker_count": host_worker_count()},
    "tpu": lambda: {"model.dtype": "bfloat16", "data.worker_count": host_worker_count()},
    "cpu": lambda: {"model.dtype": "float32", "data.worker_count": 0},
}


def apply_preset(c: ml_collections.ConfigDict, name) -> ml_collections.ConfigDict:
    """Sets the fields of ACCELERATOR_PRESETS[name] on `c`; returns it."""
    if name not in ACCELERATOR_PRESETS:
        raise ConfigError(
            f"unknown preset {name!r}{did_you_mean(str(name), ACCELERATOR_PRESETS)}; "
            f"known: {', '.join(ACCELERATOR_PRESETS)}"
        )
    for path, value in ACCELERATOR_PRESETS[name]().items():
        _assign(c, path, value)
    return c


def _set_res(c, v):
    c.input.resolution = int(v)
    c.input.pp = re.sub(r"rrc\(\d+", f"rrc({int(v)}", c.input.pp)


COMMON_SWEEP_KEYS: dict[str, SweepKey] = {
    "seed": SweepKey("random seed", _set("seed")),
    "loss": SweepKey("ce | multilabel_ce | sigmoid | infonce | siglip", _set("loss")),
    "model": SweepKey("image tower name (model.name)", _set("model.name")),
    "label_set": SweepKey("label set name or file", _set("label_set")),
    "budget": SweepKey("training examples (data.budget; clears scale)", _set("data.budget", int)),
    "scale": SweepKey(
        "budget as a multiple of data.budget_reference's size, e.g. 1/16 (data.budget_scale)",
        _set("data.budget_scale", float),
    ),
    "batch": SweepKey("global batch size", _set("input.batch_size")),
    "res": SweepKey("input resolution", _set_res),
    "lr": SweepKey("peak learning rate", _set("optimizer.lr")),
    "wd": SweepKey("weight decay", _set("optimizer.weight_decay")),
    "opt": SweepKey("optimizer name", _set("optimizer.name")),
    "steps": SweepKey("train for N steps (clears epochs/examples)", _set("total_steps", int)),
    "epochs": SweepKey("train for N epochs (clears steps/examples)", _set("total_epochs", float)),
    "examples": SweepKey("train for N examples (clears steps/epochs)", _set("total_examples", int)),
    "data": SweepKey("records dir (data.train)", _set("data.train")),
    "preset": SweepKey(
        "accelerator preset: gpu | tpu (bf16 compute, float32 params, data workers = host cores"
        " - 1) | cpu (float32, in-process data)",
        apply_preset,
    ),
}


def parse_value(text: str):
    """'3' -> 3, '1e-3' -> 0.001, '1/16' -> 0.0625, 'True' -> True, anything else -> the string."""
    text = text.strip()
    m = re.fullmatch(r"(\d+)/(\d+)", text)
    if m:
        if int(m.group(2)) == 0:
            raise ConfigError(f"config argument value {text!r} divides by zero")
        return int(m.group(1)) / int(m.group(2))
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        # TypeError: e.g. '{[]: 1}' (an unhashable key); the text stays a string.
        return text


def parse_sweep_arg(arg: str | Mapping[str, object] | None) -> dict[str, object]:
    """'k=v,k2=v2' -> {k: v, k2: v2}. Values may not contain commas. An already parsed mapping
    (a config file passing its remaining keys on to another) is copied."""
    out: dict[str, object] = {}
    if not arg:
        return out
    if isinstance(arg, Mapping):
        return dict(arg)
    for item in arg.split(","):
        if not item.strip():
            continue
        if "=" not in item:
            raise ConfigError(f"config argument {item!r} in {arg!r} is not of the form key=value")
        k, v = item.split("=", 1)
        out[k.strip()] = parse_value(v)
    return out


def pop_choice(args: dict, key: str, known: Sequence[str], default: str) -> str:
    """Takes `key` out of a parsed config argument (a key the config file reads itself, e.g.
    `setup=paper|mini`): its value, `default` when absent; any other value is an error naming
    the key."""
    value = str(args.pop(key, default))
    if value not in known:
        raise ConfigError(f"config argument {key}={value!r}; known: {', '.join(known)}")
    return value


def load_config_module(path: str):
    """The module of a config file (configs/ is not a package), e.g. for a config that builds on
    another one beside it, or for the sweep runner's get_sweep()."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such config file")
    name = "janus_config_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def apply_sweep(
    config: ml_collections.ConfigDict,
    arg: str | Mapping[str, object] | None,
    extra_keys: Mapping[str, SweepKey] | None = None,
) -> ml_collections.ConfigDict:
    """Applies the config-file argument ('k=v,...') to `config` in order; returns it."""
    keys = {**COMMON_SWEEP_KEYS, **(extra_keys or {})}
    # A config that reads some keys itself passes the rest on already parsed.
    parsed = arg if isinstance(arg, Mapping) else parse_sweep_arg(arg)
    for k, v in parsed.items():
        if k not in keys:
            raise ConfigError(
                f"unknown config argument key {k!r}{did_you_mean(k, keys)}; "
                f"valid keys: {', '.join(sorted(keys))}"
            )
        try:
            keys[k].apply(config, v)
        except (TypeError, KeyError, ValueError, ArithmeticError) as e:
            raise ConfigError(f"config argument {k}={v!r}: {e}") from e
    return config


def sweep_doc(extra_keys: Mapping[str, SweepKey] | None = None) -> str:
    keys = {**COMMON_SWEEP_KEYS, **(extra_keys or {})}
    return "\n".join(f"  {k}: {s.doc}" for k, s in sorted(keys.items()))

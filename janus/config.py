"""Run configuration: the paper's recipe, sweep strings, validation and duration resolution.

Configs are ml_collections ConfigDicts built by `configs/<name>.py:get_config(arg)`. This module
holds what every config shares:

- `paper_config()`: the JANuS training recipe as defaults (AdamW 5e-4, betas 0.9/0.999, eps 1e-8,
  weight decay 0.2, cosine with 2000 warmup steps, global batch 512, 256 epochs, 224 px,
  SimCLR-style augmentation). Canonical field names follow shared/DESIGN.md.
- `apply_sweep(config, arg, extra_keys)`: the `configs/x.py:k=v,k2=v2` argument. Every config
  accepts the COMMON_SWEEP_KEYS; a config adds its own. An unknown key is an error naming it, the
  closest valid key and the valid ones (`flag_error_line` makes any flag-parsing error one line).
- `validate(config, num_devices=..., num_processes=...)`: everything checkable before compiling
  (unknown keys, wrong types, batch divisibility, label set, model name, data directories).
- `prefer_command_line(config, overridden)`: `--config.total_steps=N` clears total_epochs (and
  likewise for the other EXCLUSIVE_FIELDS), as the sweep keys do.
- `resolve_durations(config, num_train_examples)`: the ONE place where epochs/examples become steps
  (training length and warmup).
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import json
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping

import ml_collections

# SimCLR-style augmentation as the paper lists it (random resized crop, colour jitter, grayscale,
# Gaussian blur, flip), by op names.
SIMCLR_PP = (
    "decode|rrc({res},scale=(0.08,1.0))|flip|color_jitter(0.4,0.4,0.4,0.1,p=0.8)"
    "|grayscale(p=0.2)|blur(p=0.5)|normalize"
)
EVAL_PP = "decode|resize_small({small})|center_crop({res})|normalize"

# Parameters never weight-decayed, matched against the '/'-joined parameter path (explicit list).
NO_DECAY_PATTERNS = (
    r"(^|/)bias$",  # every bias
    r"(^|/)(bn|norm|ln|layernorm|batchnorm|gn)[^/]*/scale$",  # norm scales (flax names)
    r"(^|/)(BatchNorm|LayerNorm|GroupNorm|RMSNorm)_\d+/scale$",  # auto-named norm layers
    r"(^|/)[^/]*(norm|ln_\w+|bn\d*)[^/]*/scale$",  # ln_1, ln_final, bn1, norm_pre, ...
    r"(^|/)logit_scale$",
    r"(^|/)logit_bias$",
    r"(^|/)(cls|class_embedding)$",  # ViT class token (1-D, like OpenCLIP's ndim < 2 rule)
)

LOSSES_CE = ("ce", "multilabel_ce", "sigmoid")
LOSSES_VL = ("infonce", "siglip")


def is_vl(loss: str) -> bool:
    """Vision-language losses train the CLIP two-tower model on captions."""
    return loss in LOSSES_VL


def paper_config() -> ml_collections.ConfigDict:
    """The JANuS recipe: CLIP-RN50 on IN100, the paper's optimiser and schedule."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.label_set = "in100"
    c.loss = "ce"
    # CE family: restrict training logits to the label set (1000-way head, trained on 100 classes).
    c.restrict_to_label_set = True
    c.label_smoothing = 0.0

    c.model = ml_collections.ConfigDict()
    c.model.name = "clip_rn50"
    c.model.dtype = "float32"
    # CLIP text tower kwargs (width, layers, heads, context_length, vocab_size); None = default.
    c.model.text = ml_collections.config_dict.placeholder(dict)

    c.data = ml_collections.ConfigDict()
    # A records dir, or a mixture "dirA*w1+dirB*w2" (weights default to 1); a config file may also
    # build the field as a list of {"dir": ..., "weight": ...}.
    c.data.train = "data/in100"
    c.data.budget = ml_collections.config_dict.placeholder(int)  # examples; None = all
    # Budget as a multiple of the examples in data.budget_reference (e.g. 1/16 .. 2 x IN100).
    c.data.budget_scale = ml_collections.config_dict.placeholder(float)
    c.data.budget_reference = ml_collections.config_dict.placeholder(str)
    c.data.class_balanced = False
    c.data.multi_hot = False  # multilabel losses: "labels" [b, 1000] from all matched labels
    c.data.worker_count = 0  # grain worker processes (0 = in the main process)
    # A dataset recipe janus.main runs before training when data.train is missing or stale:
    # "mini" = JANuS-mini v2 (janus.data.mini.prepare). None ("none"): the records must exist.
    c.data.prepare = ml_collections.config_dict.placeholder(str)

    c.input = ml_collections.ConfigDict()
    c.input.batch_size = 512  # GLOBAL batch over all processes and devices
    c.input.resolution = 224
    c.input.pp = SIMCLR_PP.format(res=224)
    c.input.context_length = 77

    # Exactly one of these three (resolve_durations turns it into steps).
    c.total_steps = ml_collections.config_dict.placeholder(int)
    c.total_epochs = ml_collections.config_dict.placeholder(float)
    c.total_examples = ml_collections.config_dict.placeholder(int)
    c.total_epochs = 256.0

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.name = "adamw"  # adamw | sgd | lamb
    c.optimizer.lr = 5e-4  # peak learning rate (not scaled by batch size)
    c.optimizer.b1 = 0.9
    c.optimizer.b2 = 0.999
    c.optimizer.eps = 1e-8
    c.optimizer.momentum = 0.9  # sgd
    c.optimizer.nesterov = False  # sgd
    c.optimizer.weight_decay = 0.2
    c.optimizer.schedule = "cosine"  # cosine | linear | constant (after warmup)
    c.optimizer.end_lr_factor = 0.0  # final lr = lr * end_lr_factor
    # Warmup: at most one of steps/epochs/examples.
    c.optimizer.warmup_steps = ml_collections.config_dict.placeholder(int)
    c.optimizer.warmup_epochs = ml_collections.config_dict.placeholder(float)
    c.optimizer.warmup_examples = ml_collections.config_dict.placeholder(int)
    c.optimizer.warmup_steps = 2000
    c.optimizer.clip_norm = ml_collections.config_dict.placeholder(float)  # global-norm clipping
    c.optimizer.grad_accum_steps = 1  # microbatches per step (one update per global batch)
    c.optimizer.no_decay = ",".join(NO_DECAY_PATTERNS)  # comma-separated regexes on param paths
    c.optimizer.freeze = (
        ""  # regex on param paths never updated (e.g. "^image_tower/": linear probe)
    )

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.every_steps = 1000
    c.checkpoint.keep = 3  # the last K
    c.checkpoint.keep_every = ml_collections.config_dict.placeholder(int)  # plus every M-th step
    c.checkpoint.async_save = True
    c.checkpoint.init_from = ml_collections.config_dict.placeholder(str)  # a checkpoint dir/workdir
    c.checkpoint.init_include = ".*"  # regex on param paths to take from init_from
    c.checkpoint.init_exclude = ""  # regex on param paths to keep freshly initialised

    c.log = ml_collections.ConfigDict()
    c.log.every_steps = 50

    c.evals = ml_collections.ConfigDict()  # evals.<name> = dict(set=..., every_steps=..., ...)

    # Mesh axes (name, size); -1 = all remaining devices. A tuple, so --config.mesh can set it.
    c.mesh = (("data", -1),)
    c.sharding = "replicate"  # parameter strategy: replicate | fsdp
    c.stop_after_steps = ml_collections.config_dict.placeholder(
        int
    )  # stop early (tests, debugging)
    return c


# --------------------------------------------------------------------------------------------------
# Sweep strings: "configs/x.py:k=v,k2=v2"


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


# --------------------------------------------------------------------------------------------------
# Validation


class ConfigError(ValueError):
    """A config field is wrong; the message names the field."""


def did_you_mean(name: str, valid: Iterable[str]) -> str:
    """ "; did you mean 'x'?" for the valid name closest to `name` ("" when none is close)."""
    import difflib

    valid = list(valid)
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
    if not close and "." in name:  # compare the last part: optimizer.lrr -> optimizer.lr
        leaf = name.rsplit(".", 1)
        same_parent = [v for v in valid if v.rsplit(".", 1)[0] == leaf[0]]
        tails = difflib.get_close_matches(leaf[1], [v.rsplit(".", 1)[-1] for v in same_parent])
        close = [f"{leaf[0]}.{tails[0]}"] if tails else []
    return f"; did you mean {close[0]!r}?" if close else ""


def flag_error_line(error: BaseException, argv: Iterable[str] = ()) -> str:
    """One line for an error raised while absl parses --config / --config.<field>=value.

    - an unknown field (`--config.optimizer.lrr=1`: ml_collections raises AttributeError/KeyError)
      -> "unknown config field 'optimizer.lrr'; did you mean 'optimizer.lr'?";
    - a bad value (`--config.optimizer.lr=abc`) -> "config field 'optimizer.lr' = 'abc': ...";
    - an error of the config file's argument (`configs/x.py:lrr=1`, a ConfigError from
      apply_sweep) -> its message.
    """
    cause: BaseException | None = error
    innermost = None  # config_flags re-raises a ConfigError with the traceback as its message
    while cause is not None:
        if isinstance(cause, ConfigError):
            innermost = cause
        cause = cause.__cause__ or cause.__context__
    if innermost is not None and "\n" not in str(innermost):
        return str(innermost)
    full = str(error).strip()
    # config_flags puts the config file's traceback into the message: keep its ConfigError.
    m = re.search(r"ConfigError: (.+)", full)
    if m:
        return m.group(1).strip()
    if "Traceback (most recent call last)" in full:  # another error in the config file
        last = [line for line in full.splitlines() if line.strip()][-1].strip()
        return f"error in the config file: {last}"
    text = full.splitlines()[0] if full else type(error).__name__
    m = re.match(r"flag --config\.([\w.]+)=(.*?): (.*)$", text)
    if m:
        path, value, why = m.groups()
        return f"config field {path!r} = {value!r}: {why}"
    if isinstance(error, AttributeError | KeyError):
        # ml_collections names only the leaf; find the --config.<path> it came from.
        for a in argv:
            if not a.startswith("--config."):
                continue
            path = a[len("--config.") :].split("=", 1)[0]
            if path in SCHEMA or path.split(".")[0] in FREE_FORM:
                continue
            return f"unknown config field {path!r}{did_you_mean(path, SCHEMA)}"
        # A free-form section (model.*): the --config.<path> whose last part the error names,
        # with ml_collections' own suggestion.
        paths = [a[len("--config.") :].split("=", 1)[0] for a in argv if a.startswith("--config.")]
        m = re.search(r'Did you mean "(.+?)" instead of "(.+?)"', full)
        leaf = m.group(2) if m else full.strip("'\"\\ ")
        path = next((p for p in paths if p.rsplit(".", 1)[-1] == leaf), leaf)
        hint = f"; did you mean {m.group(1)!r}?" if m else ""
        return f"unknown config field {path!r}{hint}"
    m = re.match(r"flag --(\w+)=(.*?): (.*)$", text)
    if m and m.group(1) == "config":
        return f"--config={m.group(2)}: {m.group(3)}"
    return text


_NUM = (int, float)
_OPT_INT = (int, type(None))
_OPT_NUM = (int, float, type(None))
_OPT_STR = (str, type(None))

# field path -> allowed types. "model.*" and "evals.*" are free-form beyond the listed keys.
SCHEMA: dict[str, tuple[type, ...]] = {
    "seed": (int,),
    "label_set": (str,),
    "loss": (str,),
    "restrict_to_label_set": (bool,),
    "label_smoothing": _NUM,
    "model": (Mapping,),
    "model.name": (str,),
    "model.dtype": (str,),
    "model.text": (Mapping, type(None)),
    "data": (Mapping,),
    "data.train": (str, list, tuple),
    "data.budget": _OPT_INT,
    "data.budget_scale": _OPT_NUM,
    "data.budget_reference": _OPT_STR,
    "data.class_balanced": (bool,),
    "data.multi_hot": (bool,),
    "data.worker_count": (int,),
    "data.prepare": _OPT_STR,
    "input": (Mapping,),
    "input.batch_size": (int,),
    "input.resolution": (int,),
    "input.pp": (str,),
    "input.context_length": (int,),
    "total_steps": _OPT_INT,
    "total_epochs": _OPT_NUM,
    "total_examples": _OPT_INT,
    "optimizer": (Mapping,),
    "optimizer.name": (str,),
    "optimizer.lr": _NUM,
    "optimizer.b1": _NUM,
    "optimizer.b2": _NUM,
    "optimizer.eps": _NUM,
    "optimizer.momentum": _NUM,
    "optimizer.nesterov": (bool,),
    "optimizer.weight_decay": _NUM,
    "optimizer.schedule": (str,),
    "optimizer.end_lr_factor": _NUM,
    "optimizer.warmup_steps": _OPT_INT,
    "optimizer.warmup_epochs": _OPT_NUM,
    "optimizer.warmup_examples": _OPT_INT,
    "optimizer.clip_norm": _OPT_NUM,
    "optimizer.grad_accum_steps": (int,),
    "optimizer.no_decay": (str,),
    "optimizer.freeze": (str,),
    "checkpoint": (Mapping,),
    "checkpoint.every_steps": (int,),
    "checkpoint.keep": (int,),
    "checkpoint.keep_every": _OPT_INT,
    "checkpoint.async_save": (bool,),
    "checkpoint.init_from": _OPT_STR,
    "checkpoint.init_include": (str,),
    "checkpoint.init_exclude": (str,),
    "log": (Mapping,),
    "log.every_steps": (int,),
    "evals": (Mapping,),
    "mesh": (list, tuple),
    "sharding": (str,),
    "stop_after_steps": _OPT_INT,
    # Optional: only configs/finetune.py has this section (FINETUNE_MODES; validate_finetune).
    "finetune": (Mapping,),
    "finetune.mode": (str,),
    "finetune.lp_fraction": _NUM,
    "finetune.lp_lr": _NUM,
    "finetune.templates": (str,),
    "finetune.class_names": (str,),
}
# finetune.mode: ft = the whole model at optimizer.lr; lp = a linear probe (the head only, at
# finetune.lp_lr); lpft = lp for finetune.lp_fraction of the run, then ft (Kumar et al. 2022).
# janus.finetune.optimizer_plan turns the mode into the optimizer's settings.
FINETUNE_MODES = ("ft", "lp", "lpft")
DATA_RECIPES = ("mini",)  # data.prepare values
FREE_FORM = ("model", "evals")  # sub-keys not listed in SCHEMA are allowed here
OPTIMIZERS = ("adamw", "sgd", "lamb")
SCHEDULES = ("cosine", "linear", "constant")


def to_dict(config) -> dict:
    """ConfigDict (or dict) -> plain JSON-able dict (tuples become lists)."""
    d = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    return json.loads(json.dumps(d, default=lambda o: list(o) if isinstance(o, tuple) else str(o)))


def _flatten(d: Mapping, prefix: str = "") -> dict[str, object]:
    out = {}
    for k, v in d.items():
        path = f"{prefix}{k}"
        out[path] = v
        if isinstance(v, Mapping) and path not in ("model.text",) and not path.startswith("evals."):
            out.update(_flatten(v, path + "."))
    return out


def _type_name(types: tuple[type, ...]) -> str:
    return " | ".join("None" if t is type(None) else t.__name__ for t in types)


def _check_schema(d: Mapping) -> None:
    for path, value in _flatten(d).items():
        top = path.split(".")[0]
        if path not in SCHEMA:
            if top in FREE_FORM and path != top:
                continue
            parent = path.rsplit(".", 1)[0] if "." in path else ""
            siblings = sorted(
                p.rsplit(".", 1)[-1]
                for p in SCHEMA
                if (p.rsplit(".", 1)[0] if "." in p else "") == parent
            )
            raise ConfigError(
                f"unknown config field {path!r}; known fields"
                f"{' of ' + parent if parent else ''}: {', '.join(siblings)}"
                f"{did_you_mean(path, [f'{parent}.{x}' if parent else x for x in siblings])}"
            )
        types = SCHEMA[path]
        ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
        if not ok:
            raise ConfigError(
                f"config field {path!r} = {value!r} has type {type(value).__name__}; "
                f"expected {_type_name(types)}"
            )


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


def validate(
    config,
    *,
    num_devices: int | None = None,
    num_processes: int = 1,
    check_data: bool = True,
    check_registries: bool = True,
) -> None:
    """Raises ConfigError naming the field for anything wrong that can be seen before compiling."""
    d = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    _check_schema(d)
    loss = d["loss"]
    if loss not in LOSSES_CE + LOSSES_VL:
        raise ConfigError(
            f"config field 'loss' = {loss!r}; known losses: {', '.join(LOSSES_CE + LOSSES_VL)}"
        )
    set_fields = [f for f in ("total_steps", "total_epochs", "total_examples") if d[f] is not None]
    if len(set_fields) != 1:
        raise ConfigError(
            "exactly one of total_steps, total_epochs, total_examples must be set; "
            f"set: {set_fields or 'none'} (the sweep keys steps=/epochs=/examples= switch the unit)"
        )
    if d[set_fields[0]] <= 0:
        raise ConfigError(f"config field {set_fields[0]!r} = {d[set_fields[0]]!r} must be > 0")
    o = d["optimizer"]
    warm = [f for f in ("warmup_steps", "warmup_epochs", "warmup_examples") if o[f] is not None]
    if len(warm) > 1:
        raise ConfigError(f"at most one of optimizer.warmup_steps/epochs/examples; set: {warm}")
    if o["name"] not in OPTIMIZERS:
        raise ConfigError(
            f"config field 'optimizer.name' = {o['name']!r}; known: {', '.join(OPTIMIZERS)}"
        )
    if o["schedule"] not in SCHEDULES:
        raise ConfigError(
            f"config field 'optimizer.schedule' = {o['schedule']!r}; known: {', '.join(SCHEDULES)}"
        )
    regexes = [("optimizer.no_decay", p) for p in o["no_decay"].split(",")]
    regexes += [("optimizer.freeze", o["freeze"])]
    regexes += [(f"checkpoint.{k}", d["checkpoint"][k]) for k in ("init_include", "init_exclude")]
    for field, pat in regexes:
        try:
            re.compile(pat)
        except re.error as e:
            raise ConfigError(f"config field {field!r}: bad regex {pat!r}: {e}") from e
    for field in ("checkpoint.every_steps", "log.every_steps", "input.batch_size"):
        a, b = field.split(".")
        if d[a][b] <= 0:
            raise ConfigError(f"config field {field!r} = {d[a][b]!r} must be > 0")
    if not o["lr"] > 0 or not math.isfinite(o["lr"]):
        raise ConfigError(f"config field 'optimizer.lr' = {o['lr']!r} must be > 0")
    if not o["weight_decay"] >= 0 or not math.isfinite(o["weight_decay"]):
        raise ConfigError(
            f"config field 'optimizer.weight_decay' = {o['weight_decay']!r} must be >= 0"
        )
    if not 0 <= d["label_smoothing"] < 1:
        raise ConfigError(
            f"config field 'label_smoothing' = {d['label_smoothing']!r} must be in [0, 1)"
        )
    for unit in ("steps", "epochs", "examples"):
        # Comparable before the data are counted only in the same unit; across units
        # resolve_durations caps warmup at the run (short test runs of a long recipe).
        warmup, total = o[f"warmup_{unit}"], d[f"total_{unit}"]
        if warmup is not None and warmup < 0:
            raise ConfigError(f"config field 'optimizer.warmup_{unit}' = {warmup!r} must be >= 0")
        if warmup is not None and total is not None and warmup >= total > 0:
            raise ConfigError(
                f"config field 'optimizer.warmup_{unit}' = {warmup!r} must be shorter than the "
                f"run (total_{unit} = {total!r}); lower it or set optimizer.warmup_{unit}=0"
            )
    if d["checkpoint"]["keep"] < 1:
        raise ConfigError("config field 'checkpoint.keep' must be >= 1")
    data = d["data"]
    if data["budget"] is not None and data["budget_scale"] is not None:
        raise ConfigError("set only one of data.budget and data.budget_scale")
    for field in ("budget", "budget_scale"):
        if data[field] is not None and data[field] <= 0:
            raise ConfigError(f"config field 'data.{field}' = {data[field]!r} must be > 0")
    keep_every = d["checkpoint"]["keep_every"]
    if keep_every is not None and keep_every <= 0:
        raise ConfigError(
            f"config field 'checkpoint.keep_every' = {keep_every} must be > 0 (or None)"
        )
    if d["sharding"] not in ("replicate", "fsdp"):
        raise ConfigError(f"config field 'sharding' = {d['sharding']!r}; known: replicate, fsdp")
    for name, ev in d["evals"].items():
        if not isinstance(ev, Mapping) or not isinstance(ev.get("every_steps"), int):
            raise ConfigError(f"config field 'evals.{name}' needs an int every_steps")
        for k in ("every_steps", "batch_size"):
            v = ev.get(k)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v <= 0):
                raise ConfigError(f"config field 'evals.{name}.{k}' = {v!r} must be an int > 0")

    batch = d["input"]["batch_size"]
    accum = o["grad_accum_steps"]
    if accum < 1 or batch % accum:
        raise ConfigError(
            f"config field 'optimizer.grad_accum_steps' = {accum} must divide "
            f"input.batch_size = {batch}"
        )
    if batch % num_processes:
        raise ConfigError(
            f"config field 'input.batch_size' = {batch} is not divisible by the "
            f"{num_processes} processes"
        )
    axes = mesh_axes(d)
    if num_devices is not None:
        shape = resolve_mesh_shape(axes, num_devices)
        # The batch is split over every mesh axis (data and fsdp are both data-parallel for inputs).
        dp = math.prod(s for _, s in shape)
        if (batch // accum) % dp:
            raise ConfigError(
                f"config field 'input.batch_size' = {batch} (microbatch {batch // accum}) is not "
                f"divisible by the {dp} data-parallel devices of mesh {shape}"
            )

    if check_registries:
        from janus.data import labelsets

        try:
            labelsets.resolve_label_set(d["label_set"])
        except (ValueError, FileNotFoundError, OSError) as e:
            raise ConfigError(f"config field 'label_set' = {d['label_set']!r}: {e}") from e
        _check_model_name(d["model"]["name"])
        from janus.data.input.preprocess import build_pp

        try:
            build_pp(d["input"]["pp"])
        except (ValueError, KeyError, TypeError, SyntaxError) as e:
            raise ConfigError(f"config field 'input.pp' = {d['input']['pp']!r}: {e}") from e
    if d.get("finetune") is not None:
        _validate_finetune(d)
    if data_recipe(d) not in (None, *DATA_RECIPES):
        raise ConfigError(
            f"config field 'data.prepare' = {d['data']['prepare']!r}; known: {DATA_RECIPES} or none"
        )
    if check_data:
        for i, (path, weight) in enumerate(train_dirs(d)):
            where = f"data.train[{i}]" if len(train_dirs(d)) > 1 else "data.train"
            if not os.path.isdir(path):
                raise ConfigError(
                    f"config field {where!r}: data directory {path!r} does not exist "
                    "(build it with `python -m janus.data.build ...`)"
                )
            if not os.path.exists(os.path.join(path, "info.json")):
                raise ConfigError(
                    f"config field {where!r}: {path!r} has no info.json; not a records directory"
                )
            if weight <= 0:
                raise ConfigError(f"config field {where!r}: weight {weight} must be > 0")


def _validate_finetune(d: Mapping) -> None:
    """The finetune section (configs/finetune.py): a CE classifier over a CLIP checkpoint's image
    embedding (model.clip_head), initialised from checkpoint.init_from."""
    f = d["finetune"]
    missing = [
        k for k in ("mode", "lp_fraction", "lp_lr", "templates", "class_names") if k not in f
    ]
    if missing:
        raise ConfigError(f"config section 'finetune' lacks {missing}")
    mode = f["mode"]
    if mode not in FINETUNE_MODES:
        raise ConfigError(f"config field 'finetune.mode' = {mode!r}; known: {FINETUNE_MODES}")
    if d["loss"] not in LOSSES_CE or not (d["model"] or {}).get("clip_head"):
        raise ConfigError(
            "fine-tuning (config section 'finetune') trains a classifier over CLIP's image "
            f"embedding: it needs a CE-family loss (loss = {d['loss']!r}) and model.clip_head = "
            f"True (model.clip_head = {(d['model'] or {}).get('clip_head')!r})"
        )
    if not d["checkpoint"]["init_from"]:
        raise ConfigError(
            "config field 'checkpoint.init_from' must name the CLIP checkpoint to fine-tune "
            "(configs/finetune.py:clip=DIR)"
        )
    if not 0 < f["lp_fraction"] < 1:
        raise ConfigError(
            f"config field 'finetune.lp_fraction' = {f['lp_fraction']!r} must be in (0, 1)"
        )
    if not f["lp_lr"] > 0 or not math.isfinite(f["lp_lr"]):
        raise ConfigError(f"config field 'finetune.lp_lr' = {f['lp_lr']!r} must be > 0")


def data_recipe(config) -> str | None:
    """data.prepare, with "none" / "" (what `--config.data.prepare=none` gives) meaning None."""
    value = (config["data"].get("prepare") or "").strip()
    return None if value.lower() in ("", "none") else value


def _check_model_name(name: str) -> None:
    import janus.models as models

    known = None
    for attr in ("MODELS", "TOWERS"):
        reg = getattr(models, attr, None)
        if isinstance(reg, Mapping):
            known = set(reg) | (known or set())
    if known is not None and name not in known:
        raise ConfigError(
            f"config field 'model.name' = {name!r} is not a registered model; "
            f"known: {', '.join(sorted(known))}"
        )


# --------------------------------------------------------------------------------------------------
# Durations


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

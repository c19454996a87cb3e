"""The config's schema and `validate`: everything checkable before compiling.

Unknown keys, wrong types, batch divisibility, label set, model name, data directories; each
error names the field (`ConfigError`). `flag_error_line` makes any flag-parsing error one line.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping

from janus.config import records_check
from janus.config.errors import ConfigError, did_you_mean
from janus.config.recipe import LOSSES_CE, LOSSES_VL, is_vl
from janus.config.resolve import data_recipe, mesh_axes, resolve_mesh_shape

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
    "data.subset_seed": _OPT_INT,
    "data.multi_hot": (bool,),
    "data.worker_count": (int,),
    "data.loader": (str,),
    "data.prepare": _OPT_STR,
    "input": (Mapping,),
    "input.batch_size": (int,),
    "input.resolution": (int,),
    "input.pp": (str,),
    "input.context_length": (int,),
    "input.mixup": _NUM,
    "input.cutmix": _NUM,
    "input.mix_prob": _NUM,
    "input.mix_switch_prob": _NUM,
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
    "optimizer.step_boundaries": (list, tuple),
    "optimizer.step_factor": _NUM,
    "optimizer.warmup_steps": _OPT_INT,
    "optimizer.warmup_epochs": _OPT_NUM,
    "optimizer.warmup_examples": _OPT_INT,
    "optimizer.clip_norm": _OPT_NUM,
    "optimizer.grad_accum_steps": (int,),
    "optimizer.contrastive_accum": (str,),
    "optimizer.no_decay": (str,),
    "optimizer.freeze": (str,),
    "optimizer.ema_decay": _NUM,
    "optimizer.layer_decay": _NUM,
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
    "log.wandb_project": (str,),
    "log.wandb_mode": (str,),
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
SCHEDULES = ("cosine", "linear", "constant", "step")
CONTRASTIVE_ACCUM = ("global", "local")  # janus.train_step's modes
WANDB_MODES = ("online", "offline")


def _flatten(d: Mapping, prefix: str = "") -> dict[str, object]:
    out = {}
    for k, v in d.items():
        path = f"{prefix}{k}"
        out[path] = v
        if isinstance(v, Mapping) and path not in ("model.text",) and not path.startswith("evals."):
            out.update(_flatten(v, path + "."))
    return out


def _check_mixing(inp: Mapping, loss: str) -> None:
    """input.mixup/cutmix: alphas >= 0, probabilities in [0, 1]; labels are mixed, so CE only."""
    for k in ("mixup", "cutmix"):
        if not inp[k] >= 0 or not math.isfinite(inp[k]):
            raise ConfigError(f"config field 'input.{k}' = {inp[k]!r} must be >= 0 (0 = off)")
    for k in ("mix_prob", "mix_switch_prob"):
        if not 0 <= inp[k] <= 1:
            raise ConfigError(f"config field 'input.{k}' = {inp[k]!r} must be in [0, 1]")
    if (inp["mixup"] or inp["cutmix"]) and loss not in LOSSES_CE:
        raise ConfigError(
            f"input.mixup/input.cutmix mix the class labels, so they need a CE loss; loss = "
            f"{loss!r} (set input.mixup=0 and input.cutmix=0)"
        )


def _check_step_schedule(o: Mapping) -> None:
    """optimizer.step_boundaries: increasing fractions of the run in (0, 1), needed by the step
    schedule; optimizer.step_factor in (0, 1]."""
    bounds = list(o["step_boundaries"])
    ok = all(isinstance(b, _NUM) and not isinstance(b, bool) and 0 < b < 1 for b in bounds)
    if not ok or any(a >= b for a, b in zip(bounds, bounds[1:])):
        raise ConfigError(
            f"config field 'optimizer.step_boundaries' = {o['step_boundaries']!r} must be "
            "increasing fractions of the run in (0, 1), e.g. (1/3, 2/3)"
        )
    if o["schedule"] == "step" and not bounds:
        raise ConfigError(
            "config field 'optimizer.step_boundaries' is empty; optimizer.schedule = 'step' "
            "needs at least one boundary"
        )
    if not 0 < o["step_factor"] <= 1:
        raise ConfigError(
            f"config field 'optimizer.step_factor' = {o['step_factor']!r} must be in (0, 1]"
        )


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
    _check_step_schedule(o)
    if o["contrastive_accum"] not in CONTRASTIVE_ACCUM:
        raise ConfigError(
            f"config field 'optimizer.contrastive_accum' = {o['contrastive_accum']!r}; known: "
            f"{', '.join(CONTRASTIVE_ACCUM)}"
        )
    if not 0 <= o["ema_decay"] < 1:
        raise ConfigError(
            f"config field 'optimizer.ema_decay' = {o['ema_decay']!r} must be in [0, 1) (0 = off)"
        )
    if not 0 < o["layer_decay"] <= 1:
        raise ConfigError(
            f"config field 'optimizer.layer_decay' = {o['layer_decay']!r} must be in (0, 1] "
            "(1 = off)"
        )
    _check_mixing(d["input"], loss)
    if d["log"]["wandb_mode"] not in WANDB_MODES:
        raise ConfigError(
            f"config field 'log.wandb_mode' = {d['log']['wandb_mode']!r}; known: "
            f"{', '.join(WANDB_MODES)}"
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
    loader = data.get("loader", "grain")  # configs of runs from before the field: grain
    if loader not in ("grain", "dali"):
        raise ConfigError(f"config field 'data.loader' = {loader!r}; known: grain, dali")
    if loader == "dali" and is_vl(loss):
        msg = f"config field 'data.loader' = 'dali' makes no captions; loss {loss!r} needs 'grain'"
        raise ConfigError(msg)
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
        if d["data"].get("loader") == "dali":
            from janus.data.input.dali_loader import CropPlanner

            try:
                CropPlanner(d["input"]["pp"])
            except ValueError as e:
                raise ConfigError(f"config field 'data.loader' = 'dali': {e}") from e
    if d.get("finetune") is not None:
        _validate_finetune(d)
    if data_recipe(d) not in (None, *DATA_RECIPES):
        raise ConfigError(
            f"config field 'data.prepare' = {d['data']['prepare']!r}; known: {DATA_RECIPES} or none"
        )
    if check_data:
        records_check.check_train_dirs(d)


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

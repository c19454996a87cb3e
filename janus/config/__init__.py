"""Run configuration, one module per job; this package names the API the rest of janus uses.

Configs are ml_collections ConfigDicts built by `configs/<name>.py:get_config(arg)` from
`paper_config()`. In the order a run meets them:

- `recipe`: `paper_config()`, the JANuS recipe as defaults, and the names it is built from
  (losses, no-decay patterns);
- `sweep`: the config file's `k=v,...` argument (`apply_sweep`, COMMON_SWEEP_KEYS), the
  accelerator presets, and `prefer_command_line` for `--config.<field>=value`;
- `schema`: the field schema and `validate`, everything checkable before compiling; every error is
  a `ConfigError` (`errors`) naming the field;
- `resolve`: the run's numbers from its fields: mesh shape, data dirs, budget, and
  `resolve_durations`, the ONE place where epochs/examples become steps; `resolve_run` gathers
  them, once per start, into the `ResolvedRun` the loop and its checkpoints read.
"""

from janus.config.errors import ConfigError, did_you_mean
from janus.config.recipe import (
    LOSSES_CE,
    LOSSES_VL,
    NO_DECAY_PATTERNS,
    declare_drop_path,
    is_vl,
    paper_config,
)
from janus.config.resolve import (
    Durations,
    ResolvedRun,
    data_recipe,
    mesh_axes,
    resolve_budget,
    resolve_durations,
    resolve_mesh_shape,
    resolve_run,
    to_dict,
    train_dirs,
)
from janus.config.schema import SCHEDULES, flag_error_line, validate
from janus.config.sweep import (
    COMMON_SWEEP_KEYS,
    SweepKey,
    apply_preset,
    apply_sweep,
    load_config_module,
    parse_sweep_arg,
    pop_choice,
    prefer_command_line,
)

__all__ = [
    "COMMON_SWEEP_KEYS",
    "LOSSES_CE",
    "LOSSES_VL",
    "NO_DECAY_PATTERNS",
    "SCHEDULES",
    "ConfigError",
    "Durations",
    "ResolvedRun",
    "SweepKey",
    "apply_preset",
    "apply_sweep",
    "data_recipe",
    "declare_drop_path",
    "did_you_mean",
    "flag_error_line",
    "is_vl",
    "load_config_module",
    "mesh_axes",
    "paper_config",
    "parse_sweep_arg",
    "pop_choice",
    "prefer_command_line",
    "resolve_budget",
    "resolve_durations",
    "resolve_mesh_shape",
    "resolve_run",
    "to_dict",
    "train_dirs",
    "validate",
]

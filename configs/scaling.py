"""Parameter scaling: ResNet-26, CLIP-RN50 and CLIP-RN50x4 image towers at a fixed data budget.

Command:
    python -m janus.main --config configs/scaling.py:size=rn26,loss=ce --workdir runs/scale_rn26_ce
    python -m janus.main --config configs/scaling.py:size=rn50x4,loss=infonce --workdir runs/scale_rn50x4_vl
Sweep keys: the common ones plus `size` in rn26 (resnet26), rn50 (clip_rn50), rn50x4 (clip_rn50x4).
Data: data/in100 by default (`data=DIR` or `budget=N` to change).
Recipe: the paper's (see configs/in100.py). RN50x4 runs at 224 px like the others so that only the
parameter count changes (CLIP's own RN50x4 used 288 px: `res=288`).
Hardware it is sized for: RN26/RN50: 8 accelerators >= 16 GB; RN50x4: 8 accelerators >= 40 GB
(TPU v4-8 / 8x A100-80GB), or set `--config.sharding=fsdp --config.mesh="(('data',-1),('fsdp',8))"`.
Expected result: how in-distribution accuracy and effective robustness change with parameters at a
fixed budget; no figure has been reproduced with this code yet.
"""

from janus import config as config_lib

SIZES = {"rn26": "resnet26", "rn50": "clip_rn50", "rn50x4": "clip_rn50x4"}


def _set_size(c, v):
    if v not in SIZES:
        raise ValueError(f"size={v!r}; known: {', '.join(SIZES)}")
    c.model.name = SIZES[v]


EXTRA_KEYS = {"size": config_lib.SweepKey("rn26 | rn50 | rn50x4", _set_size)}


def get_config(arg=None):
    c = config_lib.paper_config()
    c.label_set = "in100"
    c.model.name = "clip_rn50"
    c.data.train = "data/in100"
    c.evals.val = dict(set="val", every_steps=5000)
    return config_lib.apply_sweep(c, arg, EXTRA_KEYS)

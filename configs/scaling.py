"""Parameter scaling: ResNet-26, CLIP-RN50 and CLIP-RN50x4 image towers at a fixed data budget.

Command:
    python -m janus.main --config configs/scaling.py:size=rn26,loss=ce --workdir runs/scale_rn26_ce
    python -m janus.main --config configs/scaling.py:size=rn50x4,loss=infonce --workdir runs/scale_rn50x4_vl
Sweep keys: the common ones plus `size` in rn26 (resnet26), rn50 (clip_rn50), rn50x4
(clip_rn50x4); `size` sets model.name, so `--config.model.name=clip_rn50x4` is the same.
Data: data/in100 by default (`data=DIR`, `budget=N` or `scale=k` to change).
Recipe: the paper's (see configs/in100.py). RN50x4 runs at 224 px like the others so that only the
parameter count changes (CLIP's own RN50x4 used 288 px: `res=288`).
Hardware it is sized for: 8 accelerators, 64 images of 224 px per device in float32. Per image and
training step (XLA cost analysis, CE head; benchmarks/RESULTS.md, Training step): RN26 16M
parameters, ~14 GFLOP; RN50 39M, ~34 GFLOP; RN50x4 88M, ~72 GFLOP. RN26/RN50 fit 16 GB devices
(8x V100/A100, TPU v4-8); RN50x4 wants >= 40 GB (8x A100-40GB/80GB), or shard the parameters with
`--config.sharding=fsdp --config.mesh="(('data',-1),('fsdp',8))"`.
Expected result: the paper's anchor is the RN50 point (1x IN100: CE val .87 / average robustness
.425, VL .85 / .415); the question is how in-distribution accuracy and average/effective
robustness move with parameters at that fixed budget. The paper gives no figure for RN26/RN50x4 to
quote, and none has been reproduced with this code (no accelerator on the development VM).
"""

from janus import config as config_lib

SIZES = {"rn26": "resnet26", "rn50": "clip_rn50", "rn50x4": "clip_rn50x4"}


def _set_size(c, v):
    if v not in SIZES:
        raise ValueError(f"size={v!r}; known: {', '.join(SIZES)}")
    c.model.name = SIZES[v]


EXTRA_KEYS = {"size": config_lib.SweepKey("rn26 | rn50 | rn50x4", _set_size)}


def get_config(arg=None):
    c = config_lib.paper_config()  # CLIP-RN50, label set in100, data/in100
    c.evals.val = dict(set="val", every_steps=5000)
    return config_lib.apply_sweep(c, arg, EXTRA_KEYS)

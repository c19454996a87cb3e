"""ViT-S/16 image tower, CE or VL, on IN100 or a JANuS mixture: the paper's architecture comparison.

Command:
    python -m janus.main --config configs/vit_s16.py:loss=ce --workdir runs/vit_s16_ce
    python -m janus.main --config configs/vit_s16.py:loss=infonce,data=data/janus --workdir runs/vit_s16_vl
Sweep keys: the common ones (janus.config.COMMON_SWEEP_KEYS) and `scale` (budget as a fraction of
data/in100).
Recipe: the paper's (AdamW 5e-4, wd 0.2, cosine, 2000 warmup steps, batch 512, 256 epochs, 224 px,
SimCLR augmentation) with global-norm clipping at 1.0, which ViTs trained from scratch usually need.
Hardware it is sized for: 8 accelerators with >= 16 GB (TPU v4-8 / 8x A100), float32.
Expected result: compare with the CLIP-RN50 runs of configs/in100.py at the same budget (report
tables); no figure has been reproduced with this code yet.
"""

from janus import config as config_lib


def _set_scale(c, v):
    c.data.budget = None
    c.data.budget_scale = float(v)


EXTRA_KEYS = {"scale": config_lib.SweepKey("budget as a fraction of IN100", _set_scale)}


def get_config(arg=None):
    c = config_lib.paper_config()
    c.label_set = "in100"
    c.model.name = "vit_s16"
    c.data.train = "data/in100"
    c.data.budget_reference = "data/in100"
    c.optimizer.clip_norm = 1.0
    c.evals.val = dict(set="val", every_steps=5000)
    return config_lib.apply_sweep(c, arg, EXTRA_KEYS)

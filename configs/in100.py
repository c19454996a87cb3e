"""CE or VL (InfoNCE) CLIP-RN50 on ImageNet-100 at a data budget: the paper's IN100 budget study.

Command:
    python -m janus.main --config configs/in100.py:loss=ce,scale=1/16 --workdir runs/in100_ce_1-16
    python -m janus.main --config configs/in100.py:loss=infonce,scale=1 --workdir runs/in100_vl_1
    (scale in 1/16, 1/8, 1/4, 1/2, 1 of the IN100 training set; 2x needs more data than IN100 holds:
    use configs/janus_mix.py:scale=2.)
Sweep keys: the common ones (janus.config.COMMON_SWEEP_KEYS) plus `scale` (the budget as a
fraction of data.budget_reference = data/in100, resolved at start from its manifest).
Data: `data/in100`, built with `python -m janus.data.build` (see README, Building datasets); VL runs
train on its template captions.
Recipe (paper): AdamW lr 5e-4, betas (0.9, 0.999), eps 1e-8, weight decay 0.2, cosine with 2000
warmup steps, global batch 512, 256 epochs of the budget, 224 px, SimCLR-style augmentation.
Hardware it is sized for: 8 accelerators with >= 32 GB (TPU v4-8 / 8x A100-40GB): 64 images of
224 px per device in float32. Not run at full size here (no accelerator on the development VM).
Expected result: in-distribution top-1 and the shift-set accuracies (eval/<step>.json) grow with the
budget; compare CE against VL at equal budget with `python -m janus.report`. No figure has been
reproduced with this code yet.
"""

from janus import config as config_lib


def _set_scale(c, v):
    c.data.budget = None
    c.data.budget_scale = float(v)


EXTRA_KEYS = {"scale": config_lib.SweepKey("budget as a fraction of IN100 (1/16 .. 1)", _set_scale)}


def get_config(arg=None):
    c = config_lib.paper_config()
    c.label_set = "in100"
    c.model.name = "clip_rn50"
    c.data.train = "data/in100"
    c.data.budget_reference = "data/in100"
    c.evals.val = dict(set="val", every_steps=5000)
    return config_lib.apply_sweep(c, arg, EXTRA_KEYS)

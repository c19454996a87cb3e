"""ViT-S/16 image tower, CE or VL, on IN100 or a JANuS mixture: the paper's architecture comparison.

Command:
    python -m janus.main --config configs/vit_s16.py:loss=ce,scale=1 --workdir runs/vit_s16_ce_1
    python -m janus.main --config configs/vit_s16.py:loss=infonce,data=data/in100*1+data/janus*1,budget=1000000 --workdir runs/vit_s16_vl_1M
Sweep keys: the common ones (janus.config.COMMON_SWEEP_KEYS: loss, budget, scale, data, ...), each
also a --config. field.
Recipe: the paper's (AdamW 5e-4, wd 0.2, cosine, 2000 warmup steps, batch 512, 256 epochs, 224 px,
SimCLR augmentation) with global-norm clipping at 1.0, which ViTs trained from scratch usually need.
Hardware it is sized for: 8 accelerators with >= 16 GB each (8x A100 or V100, a TPU v4-8), 64
images of 224 px per device in float32. ViT-S/16: 22M parameters, ~28 GFLOP per image per training
step (XLA cost analysis; benchmarks/RESULTS.md, Training step), a little less than CLIP-RN50's ~34,
so a step of 512 takes ~0.04 s on 8 A100s at an assumed 30% of their 156 TF32 TFLOP/s.
Expected result: the paper's ViT-S/16 stays below CLIP-RN50 at every budget, in both val top-1 and
average robustness, so below CE .87 / .425 and VL .85 / .415 at 1x IN100 (configs/in100.py). Not
reproduced at full size with this code (no accelerator on the development VM).
"""

from janus import config as config_lib


def get_config(arg=None):
    c = config_lib.paper_config()  # label set in100, data/in100
    c.model.name = "vit_s16"
    c.data.budget_reference = "data/in100"
    c.optimizer.clip_norm = 1.0
    c.evals.val = dict(set="val", every_steps=5000)
    return config_lib.declare_drop_path(config_lib.apply_sweep(c, arg))

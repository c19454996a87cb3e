"""CE or VL (InfoNCE) CLIP-RN50 on ImageNet-100 at a data budget: the paper's IN100 budget study.

Command:
    python -m janus.main --config configs/in100.py:loss=ce,scale=1/16 --workdir runs/in100_ce_1-16
    python -m janus.main --config configs/in100.py:loss=infonce,scale=1 --workdir runs/in100_vl_1
`scale` in 1/16, 1/8, 1/4, 1/2, 1 of the IN100 training set (data.budget_scale; `budget=N` gives
N examples instead). 2x needs more data than IN100 holds: configs/janus.py:scale=2.
Sweep keys: the common ones (janus.config.COMMON_SWEEP_KEYS), each also a --config. field.
Data: `data/in100`, built with `python -m janus.data.build` (README, Building datasets); VL runs
train on its template captions.
Recipe (paper): AdamW lr 5e-4, betas (0.9, 0.999), eps 1e-8, weight decay 0.2, cosine with 2000
warmup steps, global batch 512, 256 epochs of the budget, 224 px, SimCLR-style augmentation.
Hardware it is sized for: 8 accelerators with >= 16 GB each (8x A100 or V100, a TPU v4-8), 64
images of 224 px per device in float32, data parallel (ResNet-50-class activations at 64
images/device take roughly 10-15 GB). A training step of 512 costs ~17 TFLOP for CE and ~27 TFLOP
for VL (XLA cost analysis: ~34 / ~52 GFLOP per image; benchmarks/RESULTS.md, Training step); at an
assumed 30% of an A100's 156 TF32 TFLOP/s that is ~0.05 / ~0.07 s per step on 8 GPUs, so 256
epochs of 1x IN100 (~126k images, ~63k steps) take ~1 h (CE) if the input pipeline keeps up
(~10k JPEG decodes/s: give it the host's cores with --config.data.worker_count).
Expected result (the paper's JANuS runs, CLIP-style RN50, from its figures; evaluate with
`python -m janus.evaluate --workdir DIR`): at scale=1 (~120k samples) val top-1 / average robustness
(mean of v2, sketch, r, a on the IN100 label set) CE .87 / .425 and VL .85 / .415; smaller budgets
lower both. Not reproduced at full size with this code (no accelerator on the development VM).
"""

from janus import config as config_lib


def get_config(arg=None):
    c = config_lib.paper_config()  # CLIP-RN50, label set in100, data/in100: the paper's setting
    c.data.budget_reference = "data/in100"  # scale=1/16 is 1/16 of IN100's examples
    c.evals.val = dict(set="val", every_steps=5000)
    return config_lib.apply_sweep(c, arg)

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
Hardware it is sized for: 8 accelerators with >= 32 GB each (8x A100-40GB or a TPU v4-16 slice =
8 chips of 32 GB), 64 images of 224 px per device in float32, data parallel. Compute: ~3 x 5.4
GFLOP per image per step for CLIP-RN50 (benchmarks/RESULTS.md, Training step), so at 40% of an
A100's 156 TF32 TFLOP/s a step of 512 takes ~0.07 s on 8 GPUs and 256 epochs of 1x IN100 (~126k
images, 63k steps) ~1.2 h if the input pipeline keeps up (~7k JPEG decodes/s: give it the host's
cores with --config.data.worker_count).
Expected result (the paper's JANuS runs, CLIP-style RN50, from its figures; evaluate with
`python -m janus.evaluate --workdir DIR`): at scale=1 (~120k samples) val top-1 / average robustness
(mean of v2, sketch, r, a on the IN100 label set) CE .87 / .425 and VL .85 / .415; smaller budgets
lower both. Not reproduced at full size with this code (no accelerator on the development VM).
"""

from janus import config as config_lib


def get_config(arg=None):
    c = config_lib.paper_config()
    c.label_set = "in100"
    c.model.name = "clip_rn50"
    c.data.train = "data/in100"
    c.data.budget_reference = "data/in100"
    c.evals.val = dict(set="val", every_steps=5000)
    return config_lib.apply_sweep(c, arg)

"""CE or VL on the JANuS data: web image-caption data matched to the IN100 label set, mixed with
IN100, at a data budget up to ~2.4M samples (the paper's data-scaling study beyond IN100).

Command (the sweep dimensions are `loss`, `model`, `budget` or `scale`, `mix`; every one is also a
`--config.` field: loss, model.name, data.budget, data.budget_scale, data.train):
    python -m janus.main --config configs/janus.py:loss=infonce,model=clip_rn50,budget=250000 --workdir runs/janus_vl_250k
    python -m janus.main --config configs/janus.py:loss=ce,budget=2400000 --workdir runs/janus_ce_2.4M
    python -m janus.main --config configs/janus.py:loss=infonce,scale=9 --workdir runs/janus_vl_9x
    python -m janus.main --config configs/janus.py:mix=data/in100*1+data/laion100*3 --workdir runs/mix
`scale=k` is k x the size of data/in100 (data.budget_reference); `budget=` and `scale=` clear each
other. `mix` (= data.train) is records dirs joined by '+', each optionally '*weight'. CE on captioned
web data uses the matched labels (`loss=multilabel_ce` trains on every matched label).
Data: records dirs built by `python -m janus.data.build` (README, Building datasets); the default
mixture is data/in100 + data/janus. Budgets are drawn by janus.data.budget (nested: for one seed a
smaller budget is a subset of a larger one).
Recipe: the paper's (janus.config.paper_config): AdamW lr 5e-4, betas (0.9, 0.999), eps 1e-8,
weight decay 0.2, cosine with 2000 warmup steps, global batch 512, 256 epochs of the budget, 224 px,
SimCLR-style augmentation.
Hardware it is sized for: 8 accelerators with >= 16 GB each (8x A100 or V100, a TPU v4-8), 64
images of 224 px per device in float32, data parallel (CLIP-RN50 + text tower: 102M parameters;
ResNet-50-class activations at 64 images/device take roughly 10-15 GB). A training step of 512
costs ~27 TFLOP for VL and ~17 TFLOP for CE (XLA cost analysis: ~52 / ~34 GFLOP per image;
benchmarks/RESULTS.md, Training step); at an assumed 30% of an A100's 156 TF32 TFLOP/s that is
~0.07 s (VL) / ~0.05 s (CE) per step on 8 GPUs, so 256 epochs of 250k samples (125k steps) take
~2.5 h and of 2.4M samples (1.2M steps) about a day, if the input pipeline keeps up (~7-10k JPEG
decodes/s). On GPUs/TPUs add `preset=gpu` (or `tpu`) to the argument: bf16 compute with float32
parameters and the host's cores as data workers (README, Accelerator preset). For the largest budgets a
TPU v4-32 slice or 4 nodes x 8 GPUs (launch/tpu_vm.sh, launch/slurm.sbatch; same command).
Expected result (the paper's JANuS runs, CLIP-style RN50, from its figures; `python -m
janus.evaluate --workdir DIR` then `python -m janus.report`): val top-1 / average robustness over
v2, sketch, r, a on the IN100 label set: CE at ~2.4M samples .92 / .70; VL (InfoNCE) at ~9x IN100
(`scale=9`, ~1.1M samples) .85 / .48 (at 1x, configs/in100.py: CE .87 / .425, VL .85 / .415). Not
reproduced at full size with this code (no accelerator on the development VM).
"""

from janus import config as config_lib

EXTRA_KEYS = {
    "mix": config_lib.SweepKey(
        "records dirs joined by '+', each optionally '*weight' (= data.train)",
        lambda c, v: setattr(c.data, "train", str(v)),
    ),
}


def get_config(arg=None):
    c = config_lib.paper_config()  # CLIP-RN50, label set in100
    c.loss = "infonce"
    c.data.train = "data/in100*1+data/janus*1"
    c.data.budget = 2_400_000
    c.data.budget_reference = "data/in100"
    c.evals.val = dict(set="val", every_steps=10000)
    return config_lib.apply_sweep(c, arg, EXTRA_KEYS)

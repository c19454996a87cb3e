"""Input resolution, controlled: the same model, data, budget, recipe and steps; only the input
resolution varies (the paper's review rates resolution "low confidence, lacks controlled
experiments"). Both objectives, CE and InfoNCE, so that each has its own resolution curve.

Commands (from the repository root):
    python -m janus.sweep configs/resolution.py:mini --root runs/resolution_mini --seeds 0,1,2
    python -m janus.report runs/resolution_mini
    python -m janus.sweep configs/resolution.py --root runs/resolution --seeds 0,1,2   # real size
    python -m janus.sweep configs/resolution.py --root runs/resolution --print         # for a scheduler
    python -m janus.main --config configs/resolution.py:setup=mini,loss=ce,res=32,seed=0 --workdir runs/resolution_mini/setup-mini_loss-ce_res-32_s0  # one run
Grid: loss {ce, infonce} x resolution; run i's name is janus.sweep.run_name(get_sweep()[i]) plus
`_s<seed>`, e.g. `setup-mini_loss-ce_res-32_s0`. Sweep keys: the common ones (`res=N` sets
input.resolution and the crop size of the training chain's rrc op) and `setup=paper|mini`.
The eval resolution follows the training resolution: the evaluator resizes to N x 256/224 and
centre-crops N (janus.evaluate.inference.eval_pp reads input.resolution), the usual protocol, so
each run is tested at the size it was trained at (not FixRes's larger test size).

`:mini` (setup=mini): configs/mini.py's recipe (clip_rn_tiny, the curated source at the 1x budget
of 800 samples, 30 epochs = 375 steps of batch 64 at every resolution, AdamW 2e-3) at 32, 48, 64
and 96 px; 64 px is configs/mini.py's default run. JANuS-mini's images are stored at 64 px, so
96 px is the same pixels upsampled: a larger input and more compute, no new detail. The tiny
ResNet downsamples 32x: its attention pool sees 1x1 (32, 48 px), 2x2 (64) or 3x3 (96) positions.
Hardware: a 2-core x86-64 CPU VM (no GPU, 1 jax device). Estimated cost, from one run each,
measured 2026-12-07 on that VM loaded by other jobs (load average 9-17): the 64 px CE cell
(configs/mini.py's default run) took 6 min 46 s of wall clock (start and compile 95 s, 375 steps
~295 s, evaluation ~15 s), the 64 px InfoNCE cell 7 min 55 s (start 159 s, steps ~295 s). Taking
the steps' time to grow with the pixels (x 0.25, 0.56, 1, 2.25 for 32-96 px, x 4.06 summed; a
rough rule: on this VM the steps are not all compute) and the rest not, one seed of the 8 cells
is ~4 x 110 s + 4 x 180 s + 2 x 4.06 x 295 s = ~1 h loaded, the 24 runs of 3 seeds ~3 h loaded
(the default run takes about 1.7 min on an idle VM, configs/mini.py: ~45 min idle).

Real size (default setup=paper): the paper's CLIP-RN50 recipe on IN100 (configs/in100.py: AdamW
5e-4, wd 0.2, cosine, 2000 warmup steps, batch 512, 256 epochs of ~126k images, SimCLR-style
augmentation; the blur's sigma is in pixels, as in the paper's chain) at 128, 160, 224 and 288 px.
Hardware: 8 accelerators with >= 40 GB each (8x A100-40GB/80GB, H100; a TPU v4-8), 64 images per
device in float32; 288 px needs ~1.65x the activations of 224 px (use model.dtype=bfloat16, or
`preset=gpu`, on 16 GB devices). Estimated cost (not measured): training FLOPs per image grow with
the pixels from ~34 GFLOP (CE) / ~52 GFLOP (InfoNCE, of which ~18 is the text tower) at 224 px
(benchmarks/RESULTS.md, Training step): CE 11 / 17 / 34 / 56, InfoNCE 29 / 35 / 52 / 74 GFLOP at
128 / 160 / 224 / 288 px, ~310 GFLOP per image over the 8 cells; each run sees 256 x ~126k = 32M
images, so one seed costs ~1.0e19 FLOP, ~7.5 h at an assumed 30% of eight A100s' TF32 peak (~370
TFLOP/s), ~23 h for 3 seeds, if the input pipeline keeps up (~10k JPEG decodes/s).
Expected result (mini, CE cells, 3 seeds, measured 2026-12-07; docs/studies.md "Ablations"): val
.637 / .684 / .655 / .669 and robustness ratio .361 / .389 / .366 / .373 at 32 / 48 / 64 / 96 px; only
48 px is separated from 64 px on val and the ratio (higher). InfoNCE cells (3 seeds, measured
2026-12-07): val .603 / .646 / .615 / .646, ratio .360 / .384 / .343 / .362; against 64 px, 48 px is
higher in average robustness, 96 px in average robustness and ratio. Real size: not yet run.
"""

import os

from janus import config as config_lib

LOSSES = ("ce", "infonce")
RESOLUTIONS = {"paper": (128, 160, 224, 288), "mini": (32, 48, 64, 96)}
SEEDS = (0, 1, 2)


def get_config(arg=None):
    args = config_lib.parse_sweep_arg(arg)
    if config_lib.pop_choice(args, "setup", tuple(RESOLUTIONS), "paper") == "mini":
        mini = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mini.py")
        return config_lib.load_config_module(mini).get_config(args)
    c = config_lib.paper_config()  # CLIP-RN50, label set in100, data/in100: the paper's setting
    c.data.budget_reference = "data/in100"
    c.evals.val = dict(set="val", every_steps=5000)
    return config_lib.apply_sweep(c, args)


def get_sweep(variant=None):
    """The real-size grid, or with `variant="mini"` the JANuS-mini one; 3 seeds per cell."""
    setup = variant or "paper"
    if setup not in RESOLUTIONS:
        raise ValueError(f"configs/resolution.py has no sweep {variant!r}; known: mini")
    prefix = "setup=mini," if setup == "mini" else ""
    runs = [f"{prefix}loss={loss},res={r}" for loss in LOSSES for r in RESOLUTIONS[setup]]
    return {"runs": runs, "seeds": list(SEEDS)}

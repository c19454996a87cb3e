"""The optimizer, controlled: AdamW against SGD with momentum, and the paper's cosine schedule
against a step schedule, for CE and InfoNCE (the paper "does not explore the impact of different
optimization algorithms"). Everything else (model, data, budget, batch, steps, warmup,
augmentation) is the same in every run.

Commands (from the repository root):
    python -m janus.sweep configs/optimizer.py:mini --root runs/optimizer_mini --seeds 0,1,2
    python -m janus.report runs/optimizer_mini
    python -m janus.sweep configs/optimizer.py --root runs/optimizer --seeds 0,1,2   # real size
    python -m janus.sweep configs/optimizer.py --root runs/optimizer --print         # for a scheduler
    python -m janus.main --config configs/optimizer.py:setup=mini,loss=ce,opt=sgd,sched=step,seed=0 --workdir runs/optimizer_mini/setup-mini_loss-ce_opt-sgd_sched-step_s0  # one run
Grid: loss {ce, infonce} x opt {adamw, sgd} x sched {cosine, step}: 8 cells; run i's name is
janus.sweep.run_name(get_sweep()[i]) plus `_s<seed>`, e.g.
`setup-mini_loss-ce_opt-sgd_sched-step_s0`.
Sweep keys: the common ones, `setup=paper|mini`, and
- opt=adamw|sgd: optimizer.name with that optimizer's lr and weight decay below (all three; with
  `opt=`, change the lr by --config.optimizer.lr=..., not `lr=`); without it, the recipe's AdamW;
- sched=cosine|step: optimizer.schedule (default the recipe's cosine). `step` multiplies the lr
  by optimizer.step_factor = 0.1 at optimizer.step_boundaries = (1/3, 2/3) of the run
  (torchvision's ResNet recipe drops x0.1 at epochs 30 and 60 of 90; janus.optim.make_schedule).
  Both keep the same linear warmup (the recipe's), so the schedules differ only after it.
Each optimizer's lr and weight decay, chosen before any run and never tuned on the shift sets
(the same for CE and InfoNCE: neither source gives an SGD recipe for contrastive training):
- AdamW (b1 0.9, b2 0.999, eps 1e-8): real size the paper's lr 5e-4, weight decay 0.2; mini
  configs/mini.py's recipe, lr 2e-3, weight decay 0.05 (as every run of the mini study used it).
- SGD (momentum 0.9, no Nesterov, coupled weight decay as torch.optim.SGD): torchvision's ResNet
  reference recipe, lr 0.1 per 256 images, weight decay 1e-4, with the linear scaling rule (Goyal
  et al. 2017) for the batch: 0.1 x 512/256 = 0.2 at real size, 0.1 x 64/256 = 0.025 on mini.

`:mini` (setup=mini): configs/mini.py (clip_rn_tiny, curated source, the 1x budget of 800 samples,
30 epochs = 375 steps of batch 64, 2 warmup epochs, 64 px); the (ce, adamw, cosine) cell is its
default run. Hardware: a 2-core x86-64 CPU VM (no GPU, 1 jax device). Estimated cost, from one
run each, measured 2026-12-07 on that VM loaded by other jobs (load average 9-17): the (ce, adamw,
cosine) cell took 6 min 46 s of wall clock with its evaluation, the (infonce, adamw, cosine) cell
7 min 55 s. SGD and the step schedule cost the same per step, so one seed of the 8 cells is
~4 x 6.8 + 4 x 7.9 = ~1 h loaded, the 24 runs of 3 seeds ~3 h loaded (the default run takes about
1.7 min on an idle VM, configs/mini.py: ~45 min idle).

Real size (default setup=paper): the paper's CLIP-RN50 recipe on IN100 (configs/in100.py: batch
512, 256 epochs of ~126k images, 224 px, 2000 warmup steps, SimCLR-style augmentation).
Hardware: 8 accelerators with >= 16 GB each (8x A100 or V100, a TPU v4-8), 64 images of 224 px per
device in float32. Estimated cost (not measured): ~34 GFLOP (CE) / ~52 GFLOP (InfoNCE) per training
image (benchmarks/RESULTS.md, Training step; the optimizer's own cost is negligible), 32M images
per run, so one seed of the 8 cells costs 4 x (34 + 52) GFLOP x 32M = ~1.1e19 FLOP, ~8.3 h at an
assumed 30% of eight A100s' TF32 peak (~370 TFLOP/s), ~25 h for 3 seeds, if the input pipeline
keeps up (~10k JPEG decodes/s).
Expected result (mini, 3 seeds, measured 2026-12-07; docs/studies.md "Ablations"): CE val .655 /
.620 / .620 / .591 and robustness ratio .366 / .355 / .371 / .358 for AdamW + cosine / AdamW + step /
SGD + cosine / SGD + step: the optimizer and schedule lower val and average robustness, the ratio is
not separated from AdamW + cosine's. InfoNCE: AdamW .615 (cosine) / .570 (step) val; SGD unstable at
its lr, seed 2 stalled at the chance loss for ~150 steps (val .231 cosine, .128 step; seeds 0-1
.50-.58). Real size: not yet run.
"""

import os

from janus import config as config_lib

LOSSES = ("ce", "infonce")
OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "step")
SEEDS = (0, 1, 2)
SETUPS = ("paper", "mini")
# (lr, weight decay) per setup and optimizer; the docstring says where each comes from. AdamW's
# are the recipes' own (configs/mini.py, paper_config), so its cosine cell is the recipe's run.
SGD_LR_PER_256 = 0.1  # torchvision's ResNet reference recipe, scaled linearly with the batch
HYPERS = {
    "paper": {"adamw": (5e-4, 0.2), "sgd": (SGD_LR_PER_256 * 512 / 256, 1e-4)},
    "mini": {"adamw": (2e-3, 0.05), "sgd": (SGD_LR_PER_256 * 64 / 256, 1e-4)},
}


def _keys(setup: str) -> dict:
    def set_opt(c, v):
        if v not in OPTIMIZERS:
            raise ValueError(f"opt={v!r}; known: {', '.join(OPTIMIZERS)}")
        c.optimizer.name = v
        c.optimizer.lr, c.optimizer.weight_decay = HYPERS[setup][v]

    def set_sched(c, v):
        if v not in SCHEDULES:
            raise ValueError(f"sched={v!r}; known: {', '.join(SCHEDULES)}")
        c.optimizer.schedule = v

    return {
        "opt": config_lib.SweepKey("adamw | sgd, with its documented lr and weight decay", set_opt),
        "sched": config_lib.SweepKey("cosine | step (optimizer.schedule)", set_sched),
    }


def get_config(arg=None):
    args = config_lib.parse_sweep_arg(arg)
    setup = config_lib.pop_choice(args, "setup", SETUPS, "paper")
    if "opt" in args and {"lr", "wd"} & set(args):
        raise config_lib.ConfigError(
            f"config argument opt={args['opt']!r} sets optimizer.lr and optimizer.weight_decay; "
            "give lr=/wd= without opt=, or --config.optimizer.lr=... on the command line"
        )
    ours = {k: args.pop(k) for k in ("opt", "sched") if k in args}
    if setup == "mini":
        mini = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mini.py")
        c = config_lib.load_config_module(mini).get_config(args)
    else:
        c = config_lib.paper_config()  # CLIP-RN50, label set in100, data/in100, AdamW + cosine
        c.data.budget_reference = "data/in100"
        c.evals.val = dict(set="val", every_steps=5000)
        config_lib.apply_sweep(c, args)
    return config_lib.apply_sweep(c, ours, _keys(setup))


def get_sweep(variant=None):
    """The real-size grid, or with `variant="mini"` the JANuS-mini one; 3 seeds per cell."""
    if variant not in (None, "mini"):
        raise ValueError(f"configs/optimizer.py has no sweep {variant!r}; known: mini")
    prefix = "setup=mini," if variant == "mini" else ""
    runs = [
        f"{prefix}loss={loss},opt={opt},sched={sched}"
        for loss in LOSSES
        for opt in OPTIMIZERS
        for sched in SCHEDULES
    ]
    return {"runs": runs, "seeds": list(SEEDS)}

"""The architectures the paper names, CE and VL, at one fixed data budget on IN100.

The paper reports that the architecture strongly affects robustness when everything else is held
fixed: VOLO is its robust example and VGG its fragile one; convolutional and larger models fare
better. This sweep trains each tower with both objectives on the same data, budget and recipe.

Command (from the repository root):
    python -m janus.sweep configs/arch.py --root runs/arch               # 16 runs, then the report
    python -m janus.sweep configs/arch.py --root runs/arch --print       # one command per run
    python -m janus.main --config configs/arch.py:model=convnext_t,loss=ce --workdir runs/arch/model-convnext_t_loss-ce
    python -m janus.sweep configs/arch.py:mini --root runs/arch_mini     # smoke test, CPU
Grid: model {vgg16_bn, convnext_t, convnext_s, convnext_b, volo_d1, deit_s16, deit_b16, and
clip_rn50, the paper's anchor} x loss {ce, infonce}; run i's name is
janus.sweep.run_name(get_sweep()[i]), e.g. `model-vgg16_bn_loss-ce`. DeiT runs train the
non-distilled towers from scratch (distillation needs a teacher, which janus does not train
with); the distilled towers (`deit_*16_distilled`) are there for imported DeiT weights.
Sweep keys: the common ones (janus.config.COMMON_SWEEP_KEYS: model, loss, budget, scale, ...)
and `setup=paper|mini` (default paper).
Data and budget: data/in100 (README, Building datasets), all of it: the paper's 1x IN100 budget,
~126k images (`scale=1/4` or `budget=N` for another fixed budget). VL runs train on its template
captions.
Recipe: the paper's for every tower (AdamW 5e-4, wd 0.2, cosine, 2000 warmup steps, batch 512, 256
epochs, 224 px, SimCLR augmentation) with global-norm clipping at 1.0, which the transformers
trained from scratch need (configs/vit_s16.py), on every run so that only the tower changes.
The towers' own recipes, which this sweep keeps OFF (the paper holds the recipe fixed so that only
the tower changes); an ablation turns them on per run with the flags named below
(docs/training.md, Recipe features). Each tower's reference recipe and why it matters here:
- DeiT-S/B (Touvron et al. 2021; timm's train.py carries it): mixup 0.8 and CutMix 1.0
  (`--config.input.mixup=0.8 --config.input.cutmix=1.0`, mix_prob 1, switch 0.5: the defaults),
  RandAugment m9 n2 and random erasing 0.25 (the `randaug(2,9)` and `erase(0.25)` ops in
  input.pp), label smoothing 0.1 (`--config.label_smoothing=0.1`), drop path 0.1
  (`--config.model.drop_path_rate=0.1`), AdamW wd 0.05 for 300 epochs. DeiT's point was that a ViT
  trained on ImageNet-1k alone needs this much augmentation and regularisation.
- ConvNeXt-T/S/B (Liu et al. 2022; facebookresearch/ConvNeXt TRAINING.md, ImageNet-1K commands):
  drop path 0.1 / 0.4 / 0.5 for T / S / B and an EMA of the weights (`--model_ema true`; janus:
  `--config.optimizer.ema_decay=0.9999`), on its training script's DeiT-style augmentation
  defaults (mixup 0.8, CutMix 1.0, RandAugment m9, erasing 0.25, smoothing 0.1), layer scale 1e-6
  (janus' default); the paper credits the modern recipe alone with +2.7 points for a ResNet-50,
  so the ablation separates recipe from tower.
- VOLO-D1 (Yuan et al. 2021; sail-sg/volo README "Train volo_d1 on 224" and main.py's defaults):
  drop path 0.1, RandAugment `rand-m9-mstd0.5-inc1`, erasing 0.25, smoothing 0.1, and token
  labelling (with its MixToken) instead of batch mixup/CutMix (mixup and cutmix default to 0 there);
  janus does not reproduce token labelling (janus/models/volo.py), so its nearest recipe is DeiT's
  mixing with `--config.model.drop_path_rate=0.1`.
- VGG-16-BN and CLIP-RN50 predate these recipes (the paper's recipe is theirs).
E.g. `python -m janus.main --config configs/arch.py:model=deit_s16,loss=ce --config.input.mixup=0.8
--config.input.cutmix=1.0 --config.label_smoothing=0.1 --config.model.drop_path_rate=0.1 --workdir
runs/arch/deit_s16_deit_recipe`. Mixing needs a CE loss: with loss=infonce only the drop path applies.
The configs of the towers with stochastic depth (ViT, DeiT, ConvNeXt, VOLO, at either setup) declare
`model.drop_path_rate` = 0, so that the flag can set it.
Hardware it is sized for: 8 accelerators with >= 40 GB each (8x A100-40GB/80GB, H100; a TPU
v4-8 or larger), 64 images of 224 px per device in float32. The largest activations (VGG-16-BN,
ConvNeXt-B, DeiT-B) should take roughly 15-30 GB per device at that batch (an estimate, not
measured here); with less memory use `--config.model.dtype=bfloat16` or
`--config.sharding=fsdp --config.mesh="(('data',-1),('fsdp',8))"`.
Expected cost (an estimate, not measured): training FLOPs per image per step at 224 px from XLA's
cost analysis (`python benchmarks/train_step.py --flops MODEL:LOSS`; benchmarks/RESULTS.md,
Training step), CE / VL (VL adds the text tower): vgg16_bn 90 / 108 GFLOP, convnext_t 27 / 46,
convnext_s 53 / 71, convnext_b 94 / 112, volo_d1 42 / 60, deit_s16 28 / 46, deit_b16 106 / 124,
clip_rn50 34 / 52. A run sees 256 epochs x ~126k = 32M images, so the 16 runs cost ~3.5e19 FLOP
(1,093 GFLOP per image summed over the runs x 32M); at an assumed 30% of eight A100s' 156 TF32
TFLOP/s (~370 TFLOP/s) that is ~26 h of 8-GPU time, from ~0.7 h (convnext_t CE) to ~3 h (deit_b16
VL) per run, if the input pipeline keeps up (~10k JPEG decodes/s: --config.data.worker_count).
Expected result: the paper's ordering, VOLO-D1 the most robust and VGG-16-BN the least at a given
val accuracy, ConvNeXt and the larger models above the smaller ones; its figures come from public
ImageNet-1k checkpoints, so the values at this budget are not known, and they have not been
reproduced with this code (no accelerator on the development VM).
`:mini` runs each architecture family's test-size tower (vgg_tiny, convnext_tiny, volo_tiny,
deit_tiny, clip_rn_tiny) x {ce, infonce} on JANuS-mini with configs/mini.py's recipe cut to 100
steps (`steps=100` in each run's argument): a smoke test that every tower trains and evaluates with
both objectives; the towers are too small to say anything about the paper's question. Measured
(2026-11-30, the 2-core CPU VM shared with other jobs): the 10 runs in 14 min of wall clock (842
s, load average 7-10; JANuS-mini already built: building it in the first run took 511 s at load
average ~19), 0.2-0.8 s per step (convnext_tiny the slowest: XLA's CPU depthwise convolutions).
All 10 trained and evaluated; val top-1 after 100 steps .20 (vgg_tiny, infonce) to .56
(clip_rn_tiny, ce).
"""

import os

from janus import config as config_lib

LOSSES = ("ce", "infonce")
MODELS = (
    "vgg16_bn",
    "convnext_t",
    "convnext_s",
    "convnext_b",
    "volo_d1",
    "deit_s16",
    "deit_b16",
    "clip_rn50",
)
# The same families at test size, for the JANuS-mini smoke test.
MINI_MODELS = ("vgg_tiny", "convnext_tiny", "volo_tiny", "deit_tiny", "clip_rn_tiny")
SETUPS = ("paper", "mini")


def get_config(arg=None):
    args = config_lib.parse_sweep_arg(arg)
    setup = str(args.pop("setup", "paper"))
    if setup not in SETUPS:
        raise config_lib.ConfigError(f"config argument setup={setup!r}; known: {SETUPS}")
    if setup == "mini":
        mini = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mini.py")
        rest = ",".join(f"{k}={v}" for k, v in args.items())
        c = config_lib.load_config_module(mini).get_config(rest)
    else:
        c = config_lib.paper_config()  # label set in100, data/in100
        c.data.budget_reference = "data/in100"  # scale=1/4 is a quarter of IN100's examples
        c.optimizer.clip_norm = 1.0
        c.evals.val = dict(set="val", every_steps=5000)
        c = config_lib.apply_sweep(c, args)
    return config_lib.declare_drop_path(c)


def get_sweep(variant=None):
    """The paper grid, or with `variant="mini"` the JANuS-mini smoke test."""
    if variant is None:
        return [f"model={m},loss={loss}" for m in MODELS for loss in LOSSES]
    if variant != "mini":
        raise ValueError(f"configs/arch.py has no sweep {variant!r}; known: mini")
    return [f"setup=mini,model={m},loss={loss},steps=100" for m in MINI_MODELS for loss in LOSSES]

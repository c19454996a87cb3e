"""Fine-tuning a CLIP checkpoint with CE on a label set, for WiSE-FT (Wortsman et al., CVPR 2022).

Command (from the repository root; README "Fine-tuning and WiSE-FT"), after a CLIP run:
    python -m janus.main --config configs/mini.py:loss=infonce --workdir runs/mini_vl
    python -m janus.main --config configs/finetune.py:clip=runs/mini_vl --workdir runs/mini_ft
    python -m janus.main --config configs/finetune.py:clip=runs/mini_vl,mode=lp --workdir runs/mini_lp
    python -m janus.evaluate --workdir runs/mini_ft --wise 0,0.25,0.5,0.75,1
    python -m janus.report runs/mini_ft runs/mini_lp --out report/wise
The model is CLIP's image tower (+ projection) from `clip=` (a janus CLIP workdir, or a checkpoint
converted with `python -m janus.convert`) with a CE head over its normalised image embedding
(model.clip_head). The head starts as the zero-shot classifier (the label set's class names in
finetune.templates, as janus.evaluate builds them, times CLIP's logit scale), so step 0 is the
zero-shot model; it is saved as <workdir>/zeroshot/, the other end of `janus.evaluate --wise`.
Sweep keys (`configs/finetune.py:k=v,...`), besides janus.config.COMMON_SWEEP_KEYS:
- clip=DIR: the CLIP checkpoint (checkpoint.init_from; default runs/mini_vl). model.name and the
  tower's model.* must be that run's (`model=`/`arch=` set them for other towers);
- mode=ft|lp|lpft (finetune.mode): fine-tune everything (optimizer.lr 5e-4), a linear probe
  (the head only, finetune.lp_lr 5e-3), or LP-FT (Kumar et al. 2022): the probe for
  finetune.lp_fraction of the run, then everything with a fresh optimizer at optimizer.lr;
- templates=openai80|openai7|single: the zero-shot head's templates (finetune.templates);
- the keys of configs/mini.py (arch=resnet|vit, data=, scale=, root=DIR), whose main job gives the
  data, budget (800 samples), input (64 px, batch 64) and in-loop evaluation.
Layer-wise lr decay (BEiT / timm's ViT fine-tuning recipe), for a ViT-family CLIP only: add
`--config.optimizer.layer_decay=0.75` (block i of L trains at lr * 0.75 ** (L - i), the embedding at
lr * 0.75 ** (L + 1), the head at lr), e.g. `configs/finetune.py:clip=runs/mini_vl_vit,arch=vit` after
`configs/mini.py:loss=infonce,arch=vit`; another tower is a config error naming it (docs/training.md
"Weight averaging and layer decay"). `--config.optimizer.ema_decay=0.999` keeps an EMA of the weights
(`janus.evaluate --params ema`).
Other data (not run here): e.g. a converted OpenAI CLIP, `clip=ckpt/clip_rn50,model=clip_rn50,
res=224,label_set=in100,data=data/in100,batch=512` with `--noinloop_eval` (the in-loop evaluation
reads JANuS-mini's shift sets) and `janus.evaluate --wise ... --data.*` for the real sets.
Hardware: sized on a 2-core x86-64 VM without a GPU (1 jax device): 10 epochs of the 800-sample
JANuS-mini budget (125 steps of batch 64 at 64 px) train in about 1 min, plus compilation.
Expected result (measured 2026-11-30 on that VM, seed 0, from configs/mini.py:loss=infonce's CLIP at
val .640 / average robustness .225 zero-shot): ft val .659, average robustness .237; lp .663 / .230;
lpft .668 / .235; `--wise` alpha 0 equals the CLIP's zero-shot result exactly, alpha 1 the
fine-tuned checkpoint's (README "Fine-tuning and WiSE-FT" has every set and alpha 0.5).
"""

import os

from janus import config as config_lib

# Taken from the CLIP checkpoint: the image tower, its BatchNorm statistics, the projection.
IMAGE_SIDE = r"^(params|batch_stats)/image_(tower|projection)/"
MODES = ("ft", "lp", "lpft")


def _set_mode(c, v):
    if v not in MODES:
        raise ValueError(f"mode {v!r}; known: {MODES}")
    c.finetune.mode = v


def _set_clip(c, v):
    c.checkpoint.init_from = str(v)


def _set_templates(c, v):
    c.finetune.templates = str(v)


KEYS = {
    "clip": config_lib.SweepKey("the CLIP checkpoint (checkpoint.init_from)", _set_clip),
    "mode": config_lib.SweepKey("ft | lp | lpft", _set_mode),
    "templates": config_lib.SweepKey("openai80 | openai7 | single", _set_templates),
}


def get_config(arg=None):
    """JANuS-mini's main job (configs/mini.py: data, budget, input, in-loop evaluation) turned into
    fine-tuning; the sweep keys of both files apply after these defaults."""
    args = config_lib.parse_sweep_arg(arg)
    root = str(args.pop("root", "data/mini"))  # where JANuS-mini lives (tests use a small one)
    mini = config_lib.load_config_module(
        os.path.join(os.path.dirname(os.path.abspath(__file__)), "mini.py")
    )
    c = mini.get_config(f"root={root}")
    c.model.clip_head = True
    c.total_epochs = 10.0
    c.optimizer.lr = 5e-4  # ft, and lpft after its linear probe (1/4 of the CLIP run's peak)
    c.optimizer.weight_decay = 0.1
    c.optimizer.warmup_epochs = 1.0
    c.checkpoint.init_from = "runs/mini_vl"
    c.checkpoint.init_include = IMAGE_SIDE
    c.log.every_steps = 25
    c.finetune = dict(
        mode="ft",  # ft | lp | lpft (janus.finetune.optimizer_plan)
        lp_fraction=0.5,  # lpft: the share of the run that is a linear probe
        lp_lr=5e-3,  # lp, and lpft's linear probe: the peak learning rate
        templates="openai80",  # as janus.evaluate's --templates
        class_names="clip",  # as janus.evaluate's --class_names
    )
    return config_lib.apply_sweep(c, args, {**mini._keys(root), **KEYS})

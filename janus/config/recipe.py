"""The JANuS training recipe as a ConfigDict of defaults, and the names it is built from.

`paper_config()`: AdamW 5e-4, betas 0.9/0.999, eps 1e-8, weight decay 0.2, cosine with 2000 warmup
steps, global batch 512, 256 epochs, 224 px, SimCLR-style augmentation. Canonical field names
follow shared/DESIGN.md; every config in configs/ starts from it.
"""

from __future__ import annotations

import ml_collections

# SimCLR-style augmentation as the paper lists it (random resized crop, colour jitter, grayscale,
# Gaussian blur, flip), by op names.
SIMCLR_PP = (
    "decode|rrc({res},scale=(0.08,1.0))|flip|color_jitter(0.4,0.4,0.4,0.1,p=0.8)"
    "|grayscale(p=0.2)|blur(p=0.5)|normalize"
)

# Parameters never weight-decayed, matched against the '/'-joined parameter path (explicit list).
NO_DECAY_PATTERNS = (
    r"(^|/)bias$",  # every bias
    r"(^|/)(bn|norm|ln|layernorm|batchnorm|gn)[^/]*/scale$",  # norm scales (flax names)
    r"(^|/)(BatchNorm|LayerNorm|GroupNorm|RMSNorm)_\d+/scale$",  # auto-named norm layers
    r"(^|/)[^/]*(norm|ln_\w+|bn\d*)[^/]*/scale$",  # ln_1, ln_final, bn1, norm_pre, ...
    r"(^|/)logit_scale$",
    r"(^|/)logit_bias$",
    r"(^|/)(cls|class_embedding)$",  # ViT class token (1-D, like OpenCLIP's ndim < 2 rule)
)

LOSSES_CE = ("ce", "multilabel_ce", "sigmoid")
LOSSES_VL = ("infonce", "siglip")


def is_vl(loss: str) -> bool:
    """Vision-language losses train the CLIP two-tower model on captions."""
    return loss in LOSSES_VL


# Image towers with stochastic depth (janus.models: `drop_path_rate`), by registry-name prefix.
DROP_PATH_TOWERS = ("vit_", "deit_", "convnext_", "volo_")


def declare_drop_path(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Declares `model.drop_path_rate` = 0 (off) when `c`'s tower has stochastic depth, so that
    `--config.model.drop_path_rate=0.1` can set it (ml_collections overrides only the fields a
    config has; a tower without it would refuse the keyword). Config files call it last."""
    if c.model.name.startswith(DROP_PATH_TOWERS) and "drop_path_rate" not in c.model:
        c.model.drop_path_rate = 0.0
    return c


def paper_config() -> ml_collections.ConfigDict:
    """The JANuS recipe: CLIP-RN50 on IN100, the paper's optimiser and schedule."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.label_set = "in100"
    c.loss = "ce"
    # CE family: restrict training logits to the label set (1000-way head, trained on 100 classes).
    c.restrict_to_label_set = True
    c.label_smoothing = 0.0

    c.model = ml_collections.ConfigDict()
    c.model.name = "clip_rn50"
    c.model.dtype = "float32"
    # CLIP text tower kwargs (width, layers, heads, context_length, vocab_size); None = default.
    c.model.text = ml_collections.config_dict.placeholder(dict)

    c.data = ml_collections.ConfigDict()
    # A records dir, or a mixture "dirA*w1+dirB*w2" (weights default to 1); a config file may also
    # build the field as a list of {"dir": ..., "weight": ...}.
    c.data.train = "data/in100"
    c.data.budget = ml_collections.config_dict.placeholder(int)  # examples; None = all
    # Budget as a multiple of the examples in data.budget_reference (e.g. 1/16 .. 2 x IN100).
    c.data.budget_scale = ml_collections.config_dict.placeholder(float)
    c.data.budget_reference = ml_collections.config_dict.placeholder(str)
    c.data.class_balanced = False
    # Seed of the budget subset (which samples); None = the run's seed.
    c.data.subset_seed = ml_collections.config_dict.placeholder(int)
    c.data.multi_hot = False  # multilabel losses: "labels" [b, 1000] from all matched labels
    c.data.worker_count = 0  # grain worker processes (0 = in the main process)
    # "dali": janus.data.input.dali_loader, the same batches with DALI making the pixels (nvJPEG on
    # a GPU); decode|rrc|flip chains only (docs/data.md, "Input on GPU nodes"). Needs DALI.
    c.data.loader = "grain"
    # A dataset recipe janus.main runs before training when data.train is missing or stale:
    # "mini" = JANuS-mini v2 (janus.data.mini.prepare). None ("none"): the records must exist.
    c.data.prepare = ml_collections.config_dict.placeholder(str)

    c.input = ml_collections.ConfigDict()
    c.input.batch_size = 512  # GLOBAL batch over all processes and devices
    c.input.resolution = 224
    c.input.pp = SIMCLR_PP.format(res=224)
    c.input.context_length = 77
    # Batch mixing, on device in the train step (loss=ce only; timm's Mixup): alphas of the
    # Beta draws, 0 = off. When both are on, each batch is CutMix with mix_switch_prob.
    c.input.mixup = 0.0
    c.input.cutmix = 0.0
    c.input.mix_prob = 1.0  # chance that a batch is mixed at all
    c.input.mix_switch_prob = 0.5

    # Exactly one of these three (resolve_durations turns it into steps).
    c.total_steps = ml_collections.config_dict.placeholder(int)
    c.total_epochs = ml_collections.config_dict.placeholder(float)
    c.total_examples = ml_collections.config_dict.placeholder(int)
    c.total_epochs = 256.0

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.name = "adamw"  # adamw | sgd | lamb
    c.optimizer.lr = 5e-4  # peak learning rate (not scaled by batch size)
    c.optimizer.b1 = 0.9
    c.optimizer.b2 = 0.999
    c.optimizer.eps = 1e-8
    c.optimizer.momentum = 0.9  # sgd
    c.optimizer.nesterov = False  # sgd
    c.optimizer.weight_decay = 0.2
    c.optimizer.schedule = "cosine"  # cosine | linear | constant | step (after warmup)
    c.optimizer.end_lr_factor = 0.0  # final lr = lr * end_lr_factor (cosine, linear)
    # step: lr x step_factor from each boundary (a fraction of the run) on; torchvision's ResNet
    # recipe (x 0.1 at epochs 30 and 60 of 90) as fractions.
    c.optimizer.step_boundaries = (1 / 3, 2 / 3)
    c.optimizer.step_factor = 0.1
    # Warmup: at most one of steps/epochs/examples.
    c.optimizer.warmup_steps = ml_collections.config_dict.placeholder(int)
    c.optimizer.warmup_epochs = ml_collections.config_dict.placeholder(float)
    c.optimizer.warmup_examples = ml_collections.config_dict.placeholder(int)
    c.optimizer.warmup_steps = 2000
    c.optimizer.clip_norm = ml_collections.config_dict.placeholder(float)  # global-norm clipping
    c.optimizer.grad_accum_steps = 1  # microbatches per step (one update per global batch)
    # Contrastive losses with grad_accum_steps > 1: "global" = exact, every sample of the global
    # batch a negative (embeddings cached, then recomputed with gradients); "local" = each
    # microbatch's own loss (fewer negatives).
    c.optimizer.contrastive_accum = "global"
    c.optimizer.no_decay = ",".join(NO_DECAY_PATTERNS)  # comma-separated regexes on param paths
    # EMA of the parameters after each update (0 = off); kept in the checkpoint and evaluated
    # with `janus.evaluate --params ema`.
    c.optimizer.ema_decay = 0.0
    # Layer-wise lr decay (fine-tuning): block i of L gets lr * layer_decay ** (L - i); 1 = off.
    c.optimizer.layer_decay = 1.0
    c.optimizer.freeze = (
        ""  # regex on param paths never updated (e.g. "^image_tower/": linear probe)
    )

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.every_steps = 1000
    c.checkpoint.keep = 3  # the last K
    c.checkpoint.keep_every = ml_collections.config_dict.placeholder(int)  # plus every M-th step
    c.checkpoint.async_save = True
    c.checkpoint.init_from = ml_collections.config_dict.placeholder(str)  # a checkpoint dir/workdir
    c.checkpoint.init_include = ".*"  # regex on param paths to take from init_from
    c.checkpoint.init_exclude = ""  # regex on param paths to keep freshly initialised

    c.log = ml_collections.ConfigDict()
    c.log.every_steps = 50
    c.log.wandb_project = ""  # a Weights & Biases project logs beside TensorBoard ("" = off)
    c.log.wandb_mode = "online"  # online | offline (wandb's own modes)

    c.evals = ml_collections.ConfigDict()  # evals.<name> = dict(set=..., every_steps=..., ...)

    # Mesh axes (name, size); -1 = all remaining devices. A tuple, so --config.mesh can set it.
    c.mesh = (("data", -1),)
    c.sharding = "replicate"  # parameter strategy: replicate | fsdp
    c.stop_after_steps = ml_collections.config_dict.placeholder(
        int
    )  # stop early (tests, debugging)
    return c

"""JANuS-mini: a tiny model on the offline synthetic dataset (10 classes, label set mini10, 64 px).

Command (from the repository root; README Quickstart step 1):
    python -m janus.data.build synthetic --out data/mini
    python -m janus.main --config configs/mini.py --workdir runs/mini
    python -m janus.main --config configs/mini.py:loss=infonce --workdir runs/mini_vl  # CLIP-style
Sweep keys (`configs/mini.py:k=v,...`): the common ones (janus.config.COMMON_SWEEP_KEYS: seed, loss,
model, budget, batch, res, lr, wd, opt, steps, epochs, examples, data, label_set); `loss=infonce` or
`loss=siglip` also switches to the tiny CLIP model (clip_rn_tiny + a 2-layer text tower).
Hardware: a laptop CPU; sized on a 2-core x86-64 VM (no GPU), where it takes a few minutes.
In-loop evaluation every 150 steps on the val/v2/sketch/r/a/objectnet splits writes
runs/mini/eval/<step>.json (`--noinloop_eval` skips it).
Expected result: the training loss falls from about ln(10) = 2.3 and the training accuracy rises well
above chance (0.1); the synthetic classes are easy, the point is a working end-to-end run
(config.json, metrics.jsonl, TensorBoard events, checkpoints/) rather than a number.
"""

from janus import config as config_lib


def _set_loss(c, v):
    c.loss = v
    if config_lib.is_vl(v):
        c.model.name = "clip_rn_tiny"
        c.model.text = dict(width=64, layers=2, heads=2)
        c.optimizer.lr = 1e-3
    else:
        c.model.name = "resnet_tiny"
        c.model.text = None


EXTRA_KEYS = {
    "loss": config_lib.SweepKey(
        "ce | multilabel_ce | sigmoid | infonce | siglip (VL picks the tiny CLIP)", _set_loss
    ),
}


def get_config(arg=None):
    c = config_lib.paper_config()
    c.label_set = "mini10"
    c.loss = "ce"
    c.model.name = "resnet_tiny"
    c.data.train = "data/mini"
    c.input.batch_size = 64
    c.input.resolution = 64
    # Milder crops than the paper's SimCLR chain: 64 px images and a few hundred steps.
    c.input.pp = "decode|rrc(64,scale=(0.35,1.0))|flip|normalize"
    c.total_epochs = None
    c.total_steps = 300
    c.optimizer.lr = 2e-3
    c.optimizer.weight_decay = 0.05
    c.optimizer.warmup_steps = 30
    c.checkpoint.every_steps = 100
    c.checkpoint.keep = 2
    c.log.every_steps = 20
    # In-loop evaluation on the six JANuS-mini shift splits of the same records dir (eval/<step>.json).
    c.evals.mini = dict(every_steps=150, set="all", records=c.data.get_ref("train"), batch_size=64)
    return config_lib.apply_sweep(c, arg, EXTRA_KEYS)

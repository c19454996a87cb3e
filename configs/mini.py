"""JANuS-mini: a tiny model on the offline synthetic dataset (10 classes, label set mini10, 64 px).

Command (from the repository root; README Quickstart step 1):
    python -m janus.data.build synthetic --out data/mini
    python -m janus.main --config configs/mini.py --workdir runs/mini
    python -m janus.main --config configs/mini.py:loss=infonce --workdir runs/mini_vl  # CLIP-style
Sweep keys (`configs/mini.py:k=v,...`): the common ones (janus.config.COMMON_SWEEP_KEYS: seed, loss,
model, budget, scale, batch, res, lr, wd, opt, steps, epochs, examples, data, label_set), each also a
--config. field. Here `loss=infonce` or `loss=siglip` is a preset: it also switches to the tiny CLIP
model (model.name=clip_rn_tiny, model.text = a 2-layer text tower) and lr 1e-3, which
`--config.loss=infonce` alone does not.
Hardware: a laptop CPU; sized on a 2-core x86-64 VM (no GPU, 1 jax device): the CE run takes ~25 s
wall clock including start-up and compilation (~1,700 training images/s), the VL run ~55 s.
In-loop evaluation at steps 150 and 300 on the val/v2/sketch/r/a/objectnet splits writes
runs/mini/eval/<step>.json (`--noinloop_eval` skips it).
Expected result (measured on that VM, 2026-11-28, default seed; synthetic data, so these say that
the pipeline works and that the shift splits are hard, not anything about the paper):
- CE: training loss 2.3 (ln 10) -> ~0.05, training accuracy ~0.99; at step 300 top-1 val 1.00,
  v2 .97, sketch .11, r .17, a .38, objectnet .53, average robustness (v2/sketch/r/a) ~.41.
- VL (`loss=infonce`, zero-shot with the template captions): loss ~4.2 -> ~2.0 (i2t/t2i accuracy
  ~0.19: a batch of 64 holds many identical class captions); top-1 val .99, v2 .93, sketch .10,
  r .14, a .24, objectnet .48, average robustness ~.35.
A run writes config.json, data_manifest.json, metrics.jsonl, events.out.tfevents.*,
checkpoints/<step>/, eval/ and DONE.
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

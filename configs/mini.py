"""JANuS-mini v2: the main job. A small synthetic world with the structure of the JANuS data (a
curated ImageNet-100 analogue, LAION / YFCC / OpenImages analogues with noisy captions, five
shift sets in the real sets' layouts), built on first use, then trained and evaluated.

Command (from the repository root; README Quickstart):
    python -m janus.main --config configs/mini.py --workdir runs/mini
    python -m janus.main --config configs/mini.py:loss=infonce --workdir runs/mini_vl   # CLIP-style
    python -m janus.main --config configs/mini.py:data=mix,scale=4 --workdir runs/mini_mix4
The first run generates data/mini_raw (janus.data.mini.generate) and builds data/mini/<source>
from janus/data/mini/specs/mini_*.json with janus.data.build (janus.data.mini.prepare); later runs reuse it.
Sweep keys (`configs/mini.py:k=v,...`), besides janus.config.COMMON_SWEEP_KEYS:
- loss=ce|infonce|...: the objective; the image tower stays the same (the paper's controlled
  comparison: CE and VL runs differ only in the loss);
- scale=S: data budget S x the 1x budget (BUDGET_1X = 800 samples, 32 per class);
- data=curated|mix: the curated source only, or curated + web + flickr + oi in equal parts
  (any other value is a records dir or mixture string, as for the common key);
- arch=resnet|vit: clip_rn_tiny (CLIP's modified ResNet, small) or vit_tiny;
- root=DIR: where JANuS-mini lives (default data/mini; its raw data in DIR_raw).
Hardware: sized on a 2-core x86-64 VM without a GPU (1 jax device): 375 steps of batch 64 take
about 1 min; the first run also generates and builds JANuS-mini (about 75 s).
Expected result (measured 2026-11-30 on that VM, seed 0; synthetic data, so these figures say that
the pipeline works and how hard the shifts are, not anything about the paper's numbers): CE on the
curated 1x budget, training accuracy ~.79; top-1 val .656, V2 .540, Sketch .083, R .149, A .183,
ObjectNet .605 (its 4 classes); average robustness .239, robustness ratio .364 (2026-12-08). The other
settings (loss, budget, data, arch) are in README "JANuS-mini v2 study: measured results".
"""

from janus import config as config_lib
from janus.data.mini import generate

ROOT = "data/mini"  # records, one dir per source; the raw data are in ROOT + "_raw"
BUDGET_1X = 800
SOURCES = ("curated", "web", "flickr", "oi")
MIXTURES = {"curated": ("curated",), "mix": SOURCES}
ARCHS = {"resnet": "clip_rn_tiny", "vit": "vit_tiny"}


def _set_loss(c, v):
    c.loss = v
    c.model.text = dict(width=64, layers=2, heads=2) if config_lib.is_vl(v) else None


def _set_scale(c, v):
    c.data.budget = int(round(float(v) * BUDGET_1X))
    c.data.budget_scale = None


def _set_arch(c, v):
    if v not in ARCHS:
        raise ValueError(f"arch {v!r}; known: {sorted(ARCHS)}")
    c.model.name = ARCHS[v]


def _keys(root: str) -> dict:
    def set_data(c, v):
        c.data.train = "+".join(f"{root}/{s}" for s in MIXTURES[v]) if v in MIXTURES else v

    return {
        "loss": config_lib.SweepKey("ce | multilabel_ce | sigmoid | infonce | siglip", _set_loss),
        "scale": config_lib.SweepKey(
            f"budget in multiples of {BUDGET_1X} (data.budget)", _set_scale
        ),
        "data": config_lib.SweepKey(f"{' | '.join(MIXTURES)} or a records dir", set_data),
        "arch": config_lib.SweepKey(" | ".join(ARCHS), _set_arch),
    }


def get_config(arg=None):
    args = config_lib.parse_sweep_arg(arg)
    root = str(args.pop("root", ROOT))  # where JANuS-mini lives (tests use a small one)
    c = config_lib.paper_config()
    c.label_set = "mini25"
    c.loss = "ce"
    c.model.name = ARCHS["resnet"]
    c.data.train = f"{root}/curated"
    c.data.prepare = "mini"
    c.data.budget = BUDGET_1X
    c.input.batch_size = 64
    c.input.resolution = 64
    # Milder crops than the paper's SimCLR chain: 64 px images and a few hundred steps.
    c.input.pp = "decode|rrc(64,scale=(0.35,1.0))|flip|normalize"
    c.total_epochs = 30.0
    c.optimizer.lr = 2e-3
    c.optimizer.weight_decay = 0.05
    c.optimizer.warmup_steps = None
    c.optimizer.warmup_epochs = 2.0
    c.checkpoint.every_steps = 200
    c.checkpoint.keep = 2
    c.log.every_steps = 50
    # Every shift set, from the raw data in the real sets' layouts, at the end of training.
    c.evals.mini = dict(
        every_steps=1_000_000, set="all", data=generate.eval_sets(f"{root}_raw"), batch_size=125
    )
    return config_lib.declare_drop_path(config_lib.apply_sweep(c, args, _keys(root)))

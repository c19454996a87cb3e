"""Label-set size: CE models on nested random ImageNet-1k label sets of K classes, at a fixed
budget per class (the paper compared only 100 and 1000 classes).

Command:
    python -m janus.sweep configs/labelsize.py --root runs/labelsize          # the 4 runs, then the report
    python -m janus.main --config configs/labelsize.py:k=200 --workdir runs/labelsize/k-200
    python -m janus.data.labelsets random:100:0 random:200:0 random:500:0 random:1000:0  # the sets
Sweep keys: the common ones (janus.config.COMMON_SWEEP_KEYS) plus
- k=K (default 100): the label set `random:K:SEED` (janus.data.labelsets: the K classes of ImageNet-1k with the
  best hash(SEED, wnid); for one SEED the K-class set is a subset of every larger one);
- per_class=N: the budget per class (default 300), so data.budget = K x N, class-balanced;
- ls_seed=SEED: which random family of nested sets (default 0; the training seed is `seed=`).
The sweep is K in {100, 200, 500, 1000} with ls_seed 0. The evaluator restricts every shift set to
the run's label set (R, A and ObjectNet to its intersection with them: for seed 0, K=100 keeps 21
R / 14 A / 11 ObjectNet classes, K=200 34 / 29 / 24, K=500 100 / 101 / 70, K=1000 200 / 200 / 125).
Data: `data/in1000`, the ImageNet-1k training set as records, e.g.
    python -m janus.data.build --source kind=folder,name=in1k,path=/data/imagenet --label-set in1000 \\
        --out data/in1000
(every ImageNet-1k class has at least 732 training images, so per_class may go up to 732).
Recipe: the paper's (configs/in100.py): CLIP-RN50 image tower with a CE head, AdamW, 256 epochs of
the budget, batch 512, 224 px.
Hardware it is sized for: 8 accelerators with >= 16 GB each (8x A100, a TPU v4-8), 64 images per
device. Cost (an estimate, not measured): the 4 runs see (100 + 200 + 500 + 1000) x 300 x 256 =
138M images; at ~34 GFLOP per CE training image (benchmarks/RESULTS.md, Training step) and an
assumed 30% of 8 A100s' TF32 peak (~375 TFLOP/s) that is ~3.5 h in all, K=1000 about 2 h of it.
Expected result: the paper reports that CE models trained on fewer classes are more robust
(100 vs 1000 classes); this sweep measures how average robustness and the robustness ratio move
with K in between. Not run at this size with this code (no accelerator on the development VM);
configs/mini_labelsize.py is the same study on JANuS-mini, with measured results in the README.
"""

from janus import config as config_lib

SIZES = (100, 200, 500, 1000)
PER_CLASS = 300


def apply_label_size(c, args: dict, *, base: str | None, k: int, per_class: int):
    """Sets label_set = random:K:SEED[:BASE] and data.budget = K x per_class, class-balanced, from
    the `k`, `per_class` and `ls_seed` keys (taken out of `args`, so they may come in any order;
    the given k and per_class are the defaults)."""
    k = args.pop("k", k)
    per_class = args.pop("per_class", per_class)
    ls_seed = args.pop("ls_seed", 0)
    for key, value in (("k", k), ("per_class", per_class)):
        if not isinstance(value, int) or value < 1:
            raise config_lib.ConfigError(
                f"config argument {key}={value!r}: expected an integer >= 1"
            )
    if not isinstance(ls_seed, int):
        raise config_lib.ConfigError(f"config argument ls_seed={ls_seed!r}: expected an integer")
    c.label_set = f"random:{k}:{ls_seed}" + (f":{base}" if base else "")
    c.data.budget = k * per_class
    c.data.budget_scale = None
    c.data.class_balanced = True
    return c


def get_config(arg=None):
    args = config_lib.parse_sweep_arg(arg)
    c = config_lib.paper_config()  # CLIP-RN50 tower, the paper's recipe
    c.loss = "ce"
    c.model.text = None
    c.data.train = "data/in1000"
    c.evals.val = dict(set="val", every_steps=5000)
    apply_label_size(c, args, base=None, k=SIZES[0], per_class=PER_CLASS)
    return config_lib.apply_sweep(c, args)


def get_sweep():
    return [f"k={k}" for k in SIZES]

"""Label-set size on JANuS-mini v2: CE models on nested random subsets of its 25 classes, at a
fixed budget per class (configs/labelsize.py is the ImageNet-1k version).

Command (from the repository root; the first run builds JANuS-mini as configs/mini.py does):
    python -m janus.sweep configs/mini_labelsize.py --root runs/mini_labelsize
    python -m janus.main --config configs/mini_labelsize.py:k=10 --workdir runs/mini_ls10
Sweep keys: configs/mini.py's plus k=K (default 25; label set `random:K:SEED:mini25`, nested in K),
per_class=N (default 32, JANuS-mini's 1x budget per class; data.budget = K x N, class-balanced)
and ls_seed=SEED (default 0). The sweep is K in {5, 10, 15, 25} with ls_seed 0 (K=25 is mini25).
The shift sets are restricted to the run's label set.
Hardware: a 2-core x86-64 VM without a GPU (1 jax device): about 1 min per run at K=25 when the machine is idle (measured: 17 min for all four, loaded by 8 other jobs).
Expected result: README "Label-set size on JANuS-mini: measured results" (seed 0, one run per K).
"""

import os

from janus import config as config_lib

SIZES = (5, 10, 15, 25)
PER_CLASS = 32


def _sibling(name):
    """A config file beside this one, as a module."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.py")
    return config_lib.load_config_module(path)


def get_config(arg=None):
    args = config_lib.parse_sweep_arg(arg)
    labelsize = _sibling("labelsize")
    rest = dict(args)
    for key in ("k", "per_class", "ls_seed"):
        rest.pop(key, None)
    c = _sibling("mini").get_config(rest)
    return labelsize.apply_label_size(c, args, base="mini25", k=SIZES[-1], per_class=PER_CLASS)


def get_sweep():
    return [f"k={k}" for k in SIZES]

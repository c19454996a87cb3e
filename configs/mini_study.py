"""The JANuS study on JANuS-mini v2: objective x data budget x data mixture, plus a ViT.

Command (from the repository root; the first run builds JANuS-mini as configs/mini.py does):
    python -m janus.sweep configs/mini_study.py --root runs/mini_study
    python -m janus.sweep configs/mini_study.py --root runs/mini_study --print   # for a scheduler
    sbatch --array=0-13 launch/slurm.sbatch --sweep configs/mini_study.py --root runs/mini_study
    python -m janus.report runs/mini_study --out runs/mini_study/report          # figures again
The sweep runs `get_sweep()`'s 14 runs one after another, each one
    python -m janus.main --config configs/mini_study.py:<arg> --workdir runs/mini_study/<name>
and
skips finished ones, so rerunning it resumes the study; then it writes runs/mini_study/report/
(results.md/csv, the robustness_vs_val_<label set> and scaling figures) and prints the results table.
Grid (the paper's study, scaled down): loss {ce, infonce} x budget {1x, 2x, 4x} (`scale=`) x data
{curated only, curated + web + flickr + oi} (`data=curated|mix`) with the tiny ResNet
(`arch=resnet`), plus the tiny ViT (`arch=vit`) at 1x on curated data for both losses. The sweep
keys are configs/mini.py's; run i's name is janus.sweep.run_name(get_sweep()[i]), e.g.
`loss-ce_scale-1_data-curated_arch-resnet`.
Hardware: a 2-core x86-64 CPU VM (no GPU, 1 jax device).
Measured (2026-11-30, that VM, shared with a CI run for about half the time): the 14 runs in
36 min 5 s of wall clock, including generating and building JANuS-mini in the first run (49 s);
the slowest run (infonce, curated, 4x) 4.6 min.
Expected result (that run, seed 0; the full table and figures are in README "JANuS-mini v2 study:
measured results"): val grows with the budget (CE curated .66 -> .84); on curated data CE and
InfoNCE lie on one robustness-vs-val line (ratio .35-.42); the mixture raises CE's robustness
(4x: ratio .60) far more than InfoNCE's (.40); the ViT below the ResNet at 1x for both losses.
"""

import itertools
import os

from janus import config as config_lib

LOSSES = ("ce", "infonce")
SCALES = (1, 2, 4)  # data budget as a multiple of the 1x budget
DATA = ("curated", "mix")  # curated only; curated + web + flickr + oi
ARCHS = ("resnet",)
EXTRA = tuple(f"loss={loss},scale=1,data=curated,arch=vit" for loss in LOSSES)


def get_config(arg=None):
    mini = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mini.py")
    return config_lib.load_config_module(mini).get_config(arg)


def get_sweep():
    grid = itertools.product(LOSSES, DATA, SCALES, ARCHS)
    runs = [f"loss={loss},scale={s},data={data},arch={arch}" for loss, data, s, arch in grid]
    return runs + list(EXTRA)

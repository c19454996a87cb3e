"""The JANuS study on JANuS-mini v2: objective x data budget x data mixture, plus a ViT.

Command (from the repository root; the first run builds JANuS-mini as configs/mini.py does):
    python -m janus.sweep configs/mini_study.py --root runs/mini_study
    python -m janus.sweep configs/mini_study.py --seeds 0,1,2 --root runs/mini_study   # as measured
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
Measured (2026-12-07, that VM, low priority, a test run beside it for about 35 min): with
`--seeds 0,1,2` (42 runs) 1 h 52 min of wall clock; the slowest run (infonce, curated, 4x) 4.8 min.
Expected result (mean ± half the 95% t-interval over seeds 0-2; the full table, the paired differences
and figures are in docs/studies.md, "JANuS-mini v2 study: measured results"): val grows with the budget
(CE curated .655 -> .753 -> .838); on curated data CE and InfoNCE are not separated at 2x and 4x (ratio
.383 ± .081 / .381 ± .060 and .413 ± .057 / .399 ± .008); the mixture raises CE's ratio at every budget
(4x: .570 ± .098) and not InfoNCE's (.413 ± .026); the ViT is below the ResNet in CE's val at 1x
(.598 ± .035 against .655), not in ratio.
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

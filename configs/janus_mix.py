"""CE or VL CLIP-RN50 on a JANuS mixture (web image-caption data matched to the IN100 label set), up
to 2.4M samples: the paper's data-scaling study beyond IN100.

Command:
    python -m janus.main --config configs/janus_mix.py:loss=infonce,budget=2400000 --workdir runs/mix_vl_2.4M
    python -m janus.main --config configs/janus_mix.py:loss=multilabel_ce,budget=1200000 --workdir runs/mix_ce_1.2M
    python -m janus.main --config configs/janus_mix.py:scale=2,loss=ce --workdir runs/mix_ce_2x  # 2x IN100
    python -m janus.main --config configs/janus_mix.py:mix=data/in100+data/laion100 --workdir runs/mix2
Sweep keys: the common ones plus `mix` (records dirs joined by '+', each optionally '*weight', e.g.
`data/in100*1+data/laion100*3`), `scale` (budget as a multiple of data/in100's size).
Data: records dirs built by `python -m janus.data.build` (README, Building datasets); the default
mixture is data/in100 + data/janus (the matched web data). The budget is drawn from the mixture by
janus.data.budget (nested: smaller budgets are subsets of larger ones for the same seed).
Recipe: the paper's (see configs/in100.py); 256 epochs of the budget.
Hardware it is sized for: a TPU v4-32 pod slice or 4 nodes x 8 A100 (batch 512, float32); run with
launch/tpu_vm.sh or launch/slurm.sbatch. Not run at full size here.
Expected result: accuracy and robustness (avg_robustness over v2/sketch/r/a) rise with the budget;
the paper's question is how the CE/VL gap in effective robustness changes with data. No figure has
been reproduced with this code yet.
"""

from janus import config as config_lib


def _set_scale(c, v):
    c.data.budget = None
    c.data.budget_scale = float(v)


EXTRA_KEYS = {
    "mix": config_lib.SweepKey(
        "records dirs joined by '+', each optionally '*weight' (= data)",
        lambda c, v: setattr(c.data, "train", str(v)),
    ),
    "scale": config_lib.SweepKey("budget as a multiple of data/in100's size", _set_scale),
}


def get_config(arg=None):
    c = config_lib.paper_config()
    c.label_set = "in100"
    c.loss = "infonce"
    c.model.name = "clip_rn50"
    c.data.train = "data/in100*1+data/janus*1"  # or --config.data.train=...
    c.data.budget = 2_400_000
    c.data.budget_reference = "data/in100"
    c.evals.val = dict(set="val", every_steps=10000)
    return config_lib.apply_sweep(c, arg, EXTRA_KEYS)

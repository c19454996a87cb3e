"""Data diversity against data size at a fixed budget (the paper's open question 4): more sources
at the same sample count, against more samples of the same sources. CE throughout (the objective
is held fixed; the mini study's mixture effect was the larger for CE), same model and recipe;
30 epochs of the budget, so a larger budget also trains for more steps (as in the mini study and
the paper's budget study).

Commands (from the repository root):
    python -m janus.sweep configs/diversity.py:mini --root runs/diversity_mini --seeds 0,1,2
    python -m janus.report runs/diversity_mini
    python -m janus.sweep configs/diversity.py --root runs/diversity --seeds 0,1,2   # real size
    python -m janus.sweep configs/diversity.py --root runs/diversity --print         # for a scheduler
    python -m janus.main --config configs/diversity.py:setup=mini,sources=2,scale=1,seed=0 --workdir runs/diversity_mini/setup-mini_sources-2_scale-1_s0  # one run
Sweep keys: the common ones, `setup=paper|mini`, and `sources=K` (1-4): the first K sources in
the fixed order below, in equal parts of the budget (data.train, a mixture of records dirs).
Run names: janus.sweep.run_name(get_sweep()[i]) plus `_s<seed>`, e.g.
`setup-mini_sources-2_scale-1_s0`.

`:mini` (setup=mini): configs/mini.py (clip_rn_tiny, batch 64, 64 px, AdamW 2e-3) on JANuS-mini's
sources in the order curated, web, flickr, oi (configs/mini.py SOURCES): diversity at the 1x
budget of 800 samples, sources {1, 2, 3, 4} (`scale=1`); size at fixed diversity, sources {1, 4}
at 2x and 4x (`scale=2|4`); 8 cells. Two sources at 4x would need 1,600 web samples (JANuS-mini
v2's web source holds 1,115 after matching; flickr 870, oi 900, curated 3,200), so the size axis
uses the two ends. No knob was added to the mini world's generator: the sources, their order and
the grid were fixed before the first run; not tuned. Built into the world (so say it beside any
result): the web sources differ from curated data in more than diversity; they draw drawings,
cartoons, paintings and patterns (Sketch and R test those styles), carry labels from caption
matching (some wrong), and each adds its own poses, settings and image quality
(janus.data.mini.generate SOURCES).
Hardware: a 2-core x86-64 CPU VM (no GPU, 1 jax device). Estimated cost, from one run,
measured 2026-12-07 on that VM loaded by other jobs (load average 9-17): sources=1 at 1x
(configs/mini.py's default run) took 6 min 46 s of wall clock (start and compile 95 s, 375 steps
~295 s, evaluation ~15 s). The steps grow with the budget (750 at 2x, 1,500 at 4x), the rest does
not: a 1x run ~6.8 min, 2x ~12 min, 4x ~22 min, so one seed of the 8 cells (4 x 1x, 2 x 2x,
2 x 4x) is ~1.6 h loaded, the 24 runs of 3 seeds ~4.7 h loaded (the default run takes about 1.7
min on an idle VM, configs/mini.py: ~1.2 h idle).

Real size (default setup=paper): the paper's CLIP-RN50 CE recipe (configs/in100.py: AdamW 5e-4,
wd 0.2, cosine, 2000 warmup steps, batch 512, 256 epochs, 224 px, SimCLR-style augmentation) on
one source, data/in100, against the four-source mixture data/in100 + data/laion100 +
data/yfcc100 + data/oi100 in equal parts, both at the 1x IN100 budget (`scale=1`: the examples in
data/in100, ~126k; data.budget_reference). Each source is a records dir built by janus.data.build
with `--label-set in100 --matching strict` (docs/data.md, Building datasets: `kind=webdataset` for
LAION, `manifest` for YFCC, `openimages` for OpenImages); the three web sources need >= ~32k
matched samples each.
Hardware: 8 accelerators with >= 16 GB each (8x A100 or V100, a TPU v4-8), 64 images of 224 px per
device in float32. Estimated cost (not measured): ~34 GFLOP per CE training image
(benchmarks/RESULTS.md, Training step) x 256 epochs x ~126k images = ~1.1e18 FLOP per run, ~0.8 h
at an assumed 30% of eight A100s' TF32 peak (~370 TFLOP/s); 2 cells x 3 seeds ~5 h, if the input
pipeline keeps up (~10k JPEG decodes/s).
Expected result (`:mini`, measured 2026-12-07, seeds 0-2, mean ± half the 95% t-interval; 18 of
the 24 runs are configs/mini_study.py's, linked as docs/studies.md "Ablations" shows): at 1x, 2-4
sources raise the robustness ratio over 1 source (.427 ± .043 / .432 ± .072 / .412 ± .007 against
.366 ± .020) at a lower val, without separating average robustness; 4 sources against 1 raise the
ratio by .157 [.112, .202] at 4x; 1 source at 4x has the same ratio as 4 sources at 1x and a higher
average robustness (.346 ± .048 against .242 ± .036). Real size: not yet run.
"""

import os

from janus import config as config_lib

SEEDS = (0, 1, 2)
SETUPS = ("paper", "mini")
REAL_SOURCES = ("data/in100", "data/laion100", "data/yfcc100", "data/oi100")
MINI_CELLS = [(k, 1) for k in (1, 2, 3, 4)] + [(k, s) for s in (2, 4) for k in (1, 4)]


def _mini():
    return config_lib.load_config_module(
        os.path.join(os.path.dirname(os.path.abspath(__file__)), "mini.py")
    )


def _sources_key(dirs) -> dict:
    def set_sources(c, v):
        if not isinstance(v, int) or not 1 <= v <= len(dirs):
            raise ValueError(f"sources={v!r}; expected an integer from 1 to {len(dirs)}")
        c.data.train = "+".join(dirs[:v])

    doc = f"the first K of {', '.join(dirs)}, in equal parts (data.train)"
    return {"sources": config_lib.SweepKey(doc, set_sources)}


def get_config(arg=None):
    args = config_lib.parse_sweep_arg(arg)
    if config_lib.pop_choice(args, "setup", SETUPS, "paper") == "mini":
        mini = _mini()
        root = str(args.get("root", mini.ROOT))
        ours = {k: args.pop(k) for k in ("sources",) if k in args}
        c = mini.get_config(args)
        return config_lib.apply_sweep(c, ours, _sources_key([f"{root}/{s}" for s in mini.SOURCES]))
    c = config_lib.paper_config()  # CLIP-RN50, label set in100, the paper's recipe
    c.loss = "ce"
    c.data.train = REAL_SOURCES[0]
    c.data.budget_reference = "data/in100"
    c.data.budget_scale = 1.0
    c.evals.val = dict(set="val", every_steps=5000)
    return config_lib.apply_sweep(c, args, _sources_key(REAL_SOURCES))


def get_sweep(variant=None):
    """The real-size pair, or with `variant="mini"` the JANuS-mini grid; 3 seeds per cell."""
    if variant is None:
        runs = [f"sources={k},scale=1" for k in (1, len(REAL_SOURCES))]
    elif variant == "mini":
        runs = [f"setup=mini,sources={k},scale={s}" for k, s in MINI_CELLS]
    else:
        raise ValueError(f"configs/diversity.py has no sweep {variant!r}; known: mini")
    return {"runs": runs, "seeds": list(SEEDS)}

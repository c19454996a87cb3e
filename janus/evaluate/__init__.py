"""janus.evaluate: the separate evaluator over the shift sets (reads only checkpoints and data).

- `sets`: shift-set readers (records dir, tfds data dir, distribution folder layout).
- `restrict`: label-set restriction (class sets, R / A / ObjectNet intersections, targets).
- `zeroshot`, `linear_probe`, `classifiers`: the heads (CE head, zero-shot text head, linear probe).
- `metrics`: average robustness, the paper's ratio, Taori effective robustness, baseline fits.
- `inference`: the model rebuilt from a checkpoint's config, jitted once per input shape.
- `runner`: checkpoint -> eval result; `results`: eval/<step>.json + results.csv; `watch`: --watch.
- `inloop`: the trainer's in-loop evaluation hooks.
- `wise`: WiSE-FT's weight-space ensembles of a fine-tuning run (`--wise`).
- `python -m janus.evaluate --help`: the CLI.
"""

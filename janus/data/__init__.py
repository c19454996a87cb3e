"""janus.data: the JANuS records and the two flows around them.

- `build/`: offline, raw sources -> records (`python -m janus.data.build`);
- `input/`: online, records -> batches for the train step and the evaluator;
- shared by both: `records` (the shard format and random access; the seam), `manifest` (the
  columnar per-example index), `labelsets` and `reference` (the class lists and reference data
  vendored in third_party/), `budget` (choosing examples under a data budget);
- `mini/`: JANuS-mini, the embedded default dataset, generated as raw sources and built with
  `build/`.
"""

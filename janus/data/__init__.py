"""janus.data: the JANuS records and the two flows around them.

- `ingest/`: offline, raw sources -> records (`python -m janus.data.build`, a thin `build.py`);
- `input/`: online, records -> batches for the train step and the evaluator;
- shared by both: `records` (the shard format and random access; the seam), `manifest` (the
  columnar per-example index), `labelsets` and `reference` (the class lists and reference data
  shipped in janus/vendored/), `budget` (choosing examples under a data budget);
- `mini/`: JANuS-mini, the embedded default dataset, generated as raw sources and built with
  `ingest/`.
"""

"""Offline: raw sources -> records. Run as `python -m janus.data.build` (`cli`; the package is named
`ingest`, not `build`, because tools and ignore files skip folders called build).

One flow, in the order data moves through it, asked for by a `config.BuildConfig`:

- `sources`: readers of raw data (folder trees, webdataset tars, parquet/CSV caption lists),
  yielding candidates with their image bytes or a reference to them; `images` checks and
  re-encodes an image;
- `caption_clean`, `matching`: caption text -> class labels (the paper's substring matching);
  `labeling` applies it to the candidates of caption-only sources;
- `scan`: one pass over every source (in worker processes, `parallel`), keeping per candidate only
  what the budget needs, with the bad ones counted (`skips`);
- `builder`: the budget chosen from the scan (`janus.data.budget`), then the chosen images written
  as records shards with their manifest (`janus.data.records`, `janus.data.manifest`);
- `synthetic`: a small procedural dataset for smoke runs; `cli`: the command line.

Nothing here is imported by training or evaluation: `janus.data.records` is the seam between this
flow and `janus.data.input`.
"""

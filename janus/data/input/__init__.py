"""Online: records -> batches, for training and evaluation.

- `selection`: which records a run reads (label set, budget, mixture), from the manifests only;
- `pipeline`: the grain train and eval loaders over that selection (shuffle, per-process slice,
  worker threads or processes, counted skips, checkpointable state);
- `preprocess`: the named op chains (`decode|rrc(224)|flip|...`), with `jpeg` for decoding and
  `pixel_scaling` for the normalisation that runs on the device; `tokenizer`: CLIP's BPE for
  captions;
- `prefetch`: batches put on the devices ahead of the step.

Reads what `janus.data.build` wrote, through `janus.data.records`; never imports the builder.
"""

"""grain input pipelines: the train stream (shuffled, augmented, per-process) and eval.

Train, as one lazy grain ``MapDataset`` over the selected examples::

    source -> shuffle(seed) -> repeat(num_epochs) -> [truncate to whole global batches]
           -> random_map(decode + pp + labels/tokens)     # rng from (seed, global index)
           -> [process_index::process_count]               # per-process slice of the global stream
           -> chunks of batch_size elements, collated where they were made
           -> to_iter_dataset (threads) -> mp_prefetch (worker processes) -> skip & re-batch

- ``shuffle`` reshuffles every epoch (grain folds the epoch into the seed), and the augmentation rng
  of an element is derived from (seed, position in the global stream), so a batch does not depend on
  the number of processes or workers, nor on what was read before: resuming from ``get_state`` gives
  bitwise the same batches.
- Process i takes positions i, i+n, ... of the global stream; its k-th batch holds global positions
  [k*G, (k+1)*G), so the union over processes of batch k is the single-process global batch k.
- A thread or worker process makes a whole chunk of elements and stacks it; the chunks are cut
  into batches by ``janus.data.input.batching`` (``Stream``, ``SkipBatchIterator``).
- Images leave as uint8: the chain's normalisation runs on the device (``Preprocess.scaling``,
  applied in the jitted train step and evaluator; see ``janus.data.input.pixel_scaling``).
- Bad inputs (undecodable/truncated image, empty caption for VL runs, no label in the set) are
  counted skips: the worker returns a marker (``batching.SKIP``), the batching iterator drops it,
  counts it and keeps the first keys (in the checkpointable state, logged as they happen; see
  ``skip_report``). A corrupt shard raises ``records.CorruptRecordError`` naming file and offset.
- The label set, budget and mixture are applied to the manifests before reading any image; what was
  chosen is returned as the ``manifest`` dict (written by the trainer as data_manifest.json).

Eval: the source is padded to whole global batches; padding and bad images come out with
``mask=False`` so every process yields the same number of batches.
"""

from __future__ import annotations

import hashlib
import pathlib
from collections.abc import Mapping

import grain
import numpy as np

from janus.data import records
from janus.data.input.batching import SKIP, SkipBatchIterator, Stream
from janus.data.input.batching import skip_report as skip_report  # documented: docs/data.md
from janus.data.input.preprocess import IMAGE_VERIFIED, Preprocess, SkipExample, build_pp
from janus.data.input.selection import (
    NUM_CLASSES,
    Selection,
    label_mask,
    label_set_json,
    normalise_dirs,
    select_examples,
)

# ---------------------------------------------------------------- selection (manifests only)


def _shuffle_seed(seed: int) -> int:
    """grain shuffles epoch e with seed + e; hashing the run seed first keeps runs with nearby
    seeds (0, 1, ...) from sharing epoch orders shifted by one."""
    digest = hashlib.blake2b(
        str(int(seed)).encode(), digest_size=4, person=b"janus-shuffle"
    ).digest()
    return int.from_bytes(digest, "little")


def _in_set(labels, mask: np.ndarray | None, where: str) -> np.ndarray:
    labels = np.asarray(labels if labels is not None else [], dtype=np.int64).reshape(-1)
    bad = labels[(labels < 0) | (labels >= NUM_CLASSES)]
    if bad.size:
        raise ValueError(f"{where}: label {int(bad[0])} outside [0, {NUM_CLASSES})")
    return labels if mask is None else labels[mask[labels]]


def num_train_examples(
    dirs, budget: int | None = None, *, label_set=None, captions: bool = False
) -> int:
    """Examples per epoch (for resolving epochs into steps); reads manifests only."""
    if budget is not None:
        return int(budget)
    return select_examples(dirs, label_set=label_set, captions=captions).manifest["n_examples"]


# ---------------------------------------------------------------- grain pieces


class _SelectedSource:
    """Random access over the selected records; items are (images verified, bytes)."""

    def __init__(self, refs: records.RecordRefs):
        self._refs = refs

    def __len__(self) -> int:
        return len(self._refs)

    def __getitem__(self, index: int):
        return self._refs.verified(index), self._refs[index]


class _ExampleTransform:
    """Serialized Example -> model-ready element (or a skip marker). Runs in grain workers."""

    def __init__(self, pp: Preprocess, mask, *, multi_hot: bool, require_label: bool):
        self._pp = pp
        self._mask = mask
        self._multi_hot = multi_hot
        self._require_label = require_label

    def __call__(self, item, rng: np.random.Generator) -> dict:
        verified, data = item
        try:
            example = records.decode_example(data)
        except ValueError as e:
            raise ValueError(
                f"record passed its CRC check but is not a tf.train.Example: {e}"
            ) from None
        key = example["key"]
        labels = _in_set(example["label"], self._mask, f"record key={key!r}")
        if self._require_label and labels.size == 0:
            reason = "no_label_in_set" if self._mask is not None else "no_label"
            return {SKIP: reason, "key": key, "detail": f"{reason}: key={key!r}"}
        if verified:
            example[IMAGE_VERIFIED] = True
        try:
            features = self._pp(example, rng)
        except SkipExample as e:
            return {SKIP: e.reason, "key": key, "detail": str(e)}
        out = {"image": features["image"], "label": np.int32(labels[0] if labels.size else -1)}
        if self._multi_hot:
            hot = np.zeros(NUM_CLASSES, np.float32)
            hot[labels] = 1.0
            out["labels"] = hot
        if "tokens" in features:
            out["tokens"] = features["tokens"]
        return out


def _process_shard(shard_index, shard_count) -> tuple[int, int]:
    if shard_index is None or shard_count is None:
        import jax  # only to learn the process topology

        shard_index = jax.process_index() if shard_index is None else shard_index
        shard_count = jax.process_count() if shard_count is None else shard_count
    if not 0 <= shard_index < shard_count:
        raise ValueError(f"shard_index={shard_index} not in [0, shard_count={shard_count})")
    return int(shard_index), int(shard_count)


def _per_process_batch(global_batch_size: int, shard_count: int) -> int:
    if global_batch_size <= 0 or global_batch_size % shard_count:
        raise ValueError(
            f"global_batch_size={global_batch_size} must be a positive multiple of the number of "
            f"processes shard_count={shard_count}"
        )
    return global_batch_size // shard_count


# ---------------------------------------------------------------- loaders


def _check_selection(selection: Selection, dirs, **request) -> None:
    """A selection passed to ``train_loader`` was made with the loader's own arguments."""
    made = selection.manifest
    expected = {**request, "label_set": label_set_json(request["label_set"])}
    wrong = [f"{k}={made[k]!r} (loader: {v!r})" for k, v in expected.items() if made[k] != v]
    given = [(str(pathlib.Path(p).resolve()), w) for p, w in normalise_dirs(dirs)]
    if given != [(d["dir"], d["weight"]) for d in made["dirs"]]:
        wrong.append(f"dirs={[d['dir'] for d in made['dirs']]} (loader: {given})")
    if wrong:
        raise ValueError("the selection was made with other arguments: " + ", ".join(wrong))


def train_loader(
    dirs,
    *,
    global_batch_size: int,
    pp: str,
    seed: int,
    label_set=None,
    budget: int | None = None,
    class_balanced: bool = False,
    captions: bool = False,
    tokenizer=None,
    multi_hot: bool = False,
    num_epochs: int | None = None,
    worker_count: int = 0,
    shard_index: int | None = None,
    shard_count: int | None = None,
    split: str = "train",
    selection: Selection | None = None,
):
    """The training stream; see the module docstring. Returns (iterator, manifest dict).

    ``pp``: a chain spec, or a built chain: anything picklable with ``spec``, ``names`` and
    ``__call__(features, rng)`` (``janus.data.input.dali_loader`` passes its crop planner).

    ``selection``: the result of ``select_examples`` for these same arguments, when the caller
    has it already (the trainer selects once per start and counts epochs from it).

    ``captions=True`` adds ``tokens`` (appending a ``tokenize`` op to ``pp`` unless it has one;
    ``tokenizer`` only sets its context length) and keeps unlabeled examples when no label set is
    given. ``num_epochs=None`` repeats forever (the trainer counts steps). With ``num_epochs`` set,
    the stream is cut to whole global batches; a process whose slice held skipped examples may
    then end one batch early, so multi-process runs should repeat forever and count steps.
    """
    shard_index, shard_count = _process_shard(shard_index, shard_count)
    batch = _per_process_batch(global_batch_size, shard_count)
    seed = int(seed) % 2**32
    request = dict(
        seed=seed,
        label_set=label_set,
        budget=budget,
        class_balanced=class_balanced,
        captions=captions,
        split=split,
    )
    if selection is None:
        selection = select_examples(dirs, **request)
    else:
        _check_selection(selection, dirs, **request)
    manifest = dict(selection.manifest)
    pp_fn = build_pp(pp) if isinstance(pp, str) else pp
    if captions and "tokenize" not in pp_fn.names:
        length = getattr(tokenizer, "context_length", 77)
        pp_fn = build_pp(f"{pp_fn.spec}|tokenize(context_length={int(length)})")
    ds = grain.MapDataset.source(_SelectedSource(selection.source))
    ds = ds.shuffle(seed=_shuffle_seed(seed))
    ds = ds.repeat(num_epochs)
    if num_epochs is not None:
        # Whole global batches only, so every process yields the same number of batches.
        ds = ds[: (len(ds) // global_batch_size) * global_batch_size]
        if len(ds) == 0:
            raise ValueError(
                f"{manifest['n_examples']} examples x {num_epochs} epochs < one global batch of "
                f"{global_batch_size}"
            )
    transform = _ExampleTransform(
        pp_fn,
        label_mask(label_set),
        multi_hot=multi_hot,
        require_label=not captions or label_set is not None,
    )
    ds = ds.random_map(transform, seed=seed)
    ds = ds[shard_index::shard_count]
    iterator = SkipBatchIterator(Stream(ds, batch, worker_count), mode="skip")
    manifest.update(
        {
            "global_batch_size": global_batch_size,
            "shard_index": shard_index,
            "shard_count": shard_count,
            "pp": pp_fn.spec,
            "captions": captions,
            "multi_hot": multi_hot,
            "steps_per_epoch": manifest["n_examples"] // global_batch_size,
        }
    )
    return iterator, manifest


class _PaddedEvalSource:
    """The eval source padded with padding markers to ``length`` items."""

    def __init__(self, source, length: int):
        self._source = source
        self._length = length

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int):
        # Not None: grain treats None as "filtered out" and would drop the padding.
        return self._source[index] if index < len(self._source) else {SKIP: "_pad"}


class _EvalTransform:
    def __init__(self, pp: Preprocess, multi_hot: bool):
        self._pp = pp
        self._multi_hot = multi_hot

    def __call__(self, item, rng: np.random.Generator) -> dict:
        if isinstance(item, Mapping) and SKIP in item:
            return item
        if isinstance(item, (bytes, bytearray, memoryview)):
            example = records.decode_example(bytes(item))
        elif isinstance(item, Mapping):
            example = dict(item)
        else:
            raise TypeError(
                f"eval items must be serialized Examples or dicts, got {type(item).__name__}"
            )
        key = str(example.get("key", "?"))
        labels = np.asarray(example.get("label", []), dtype=np.int64).reshape(-1)
        if labels.size == 0:
            return {SKIP: "no_label", "key": key, "detail": f"no_label: key={key!r}"}
        try:
            features = self._pp(example, rng)
        except SkipExample as e:
            return {SKIP: e.reason, "key": key, "detail": str(e)}
        out = {"image": features["image"], "label": np.int32(labels[0])}
        if self._multi_hot:
            hot = np.zeros(NUM_CLASSES, np.float32)
            hot[_in_set(labels, None, f"eval key={key!r}")] = 1.0
            out["labels"] = hot
        return out


def _eval_spec(source, transform: _EvalTransform) -> dict:
    """A zero element shaped like a real one (the padding row)."""
    rng = np.random.default_rng(0)
    for i in range(min(len(source), 64)):
        element = transform(source[i], rng)
        if SKIP not in element:
            return {
                k: np.zeros_like(v) if k != "label" else np.int32(-1) for k, v in element.items()
            }
    raise ValueError(f"none of the first {min(len(source), 64)} eval examples could be decoded")


def eval_loader(
    source,
    *,
    global_batch_size: int,
    pp: str,
    shard_index: int | None = None,
    shard_count: int | None = None,
    multi_hot: bool = False,
    worker_count: int = 0,
):
    """Deterministic eval batches {"image", "label", "mask"[, "labels"]}; see the module docstring.

    Every process yields ceil(len(source) / global_batch_size) batches. Bad images are masked
    and counted (``skip_report(iterator)``); padding rows have label -1 and mask False.
    """
    shard_index, shard_count = _process_shard(shard_index, shard_count)
    batch = _per_process_batch(global_batch_size, shard_count)
    n = len(source)
    if n == 0:
        raise ValueError("eval source is empty")
    num_batches = -(-n // global_batch_size)
    transform = _EvalTransform(build_pp(pp), multi_hot)
    spec = _eval_spec(source, transform)
    ds = grain.MapDataset.source(_PaddedEvalSource(source, num_batches * global_batch_size))
    # Global batch k = positions [kG, (k+1)G); process i takes its contiguous part of each.
    order = np.arange(num_batches * global_batch_size).reshape(num_batches, shard_count, batch)
    mine = order[:, shard_index, :].reshape(-1)
    ds = ds.random_map(transform, seed=0)  # eval ops are deterministic; the rng is fixed anyway
    ds = grain.MapDataset.source(_Take(ds, mine))
    return SkipBatchIterator(Stream(ds, batch, worker_count, spec=spec), mode="mask")


class _Take:
    """Items ``positions`` of a MapDataset (lazy, picklable)."""

    def __init__(self, ds, positions: np.ndarray):
        self._ds = ds
        self._positions = positions

    def __len__(self) -> int:
        return len(self._positions)

    def __getitem__(self, index: int):
        return self._ds[int(self._positions[index])]

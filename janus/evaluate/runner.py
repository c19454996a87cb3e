"""Checkpoint -> eval result: `Evaluator.evaluate_step` / `evaluate_variables` (writing it:
janus.evaluate.results; `--watch`: janus.evaluate.watch).

One job: evaluating one checkpoint on the requested sets (writing and watching live elsewhere);
long because `evaluate_variables` decides, per set, its source, classes, views and notes.

For each requested set: read it (janus.evaluate.sets), keep the images of its class set (label set,
intersected with the set's classes for R / A / ObjectNet), run the jitted image function
(janus.evaluate.inference) over deterministic eval batches (janus.data.input.pipeline.eval_loader),
apply the classifier head on the host, and count top-1 / top-5 hits. Each process evaluates its own
shard of every set; the integer counts are summed over processes (exact).

The protocol and the suite are decided per set, from where that set is read (`sets.locate`), never
from the training data: a tfds dir or a folder layout is evaluated under the ImageNet protocol
(R / A / ObjectNet intersections, ObjectNet border crop), a split of a JANuS-mini records dir under
the mini protocol. Each set's `suite`, `protocol` and `data` are in its entry of the result.

Suites are never mixed silently. An average or ratio over sets of different suites is null, with a
note naming each set and its suite; the top-level `suite` is then `mixed`. The Taori numbers are
computed only from suite `imagenet` sets.

Which sets are evaluated: those with a location (`--data.<set>`, `--data.config`, `--data.records`,
`--data.tfds`). Only when none is given at all and the run trained on a JANuS-mini records dir are
the sets read from that records dir, as a whole; a set without a location is never filled in from
the training records.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from janus import display
from janus.config import is_vl
from janus.evaluate import classifiers, metrics, restrict, sets, zeroshot
from janus.evaluate.inference import (
    Embedder,
    eval_pp,
    model_from_config,
    round_batch,
)
from janus.evaluate.results import default_classifier

# The weights evaluate_step reads (janus.evaluate --params): a checkpoint's parameters, their EMA
# (optimizer.ema_decay), or janus.average's average of the last checkpoints.
WEIGHTS = ("params", "ema", "avg")
SKIPPED_FILES = 5  # the result's skipped_files: this many names of unreadable images per set


@dataclasses.dataclass
class EvalOptions:
    """Where the sets live and how to classify. See `python -m janus.evaluate --help`."""

    sets: Sequence[str] = sets.DEFAULT_SETS
    data: Mapping[str, str] = dataclasses.field(default_factory=dict)  # set -> spec
    records: str | None = None  # a records dir holding every set as a split
    tfds: str | None = None  # a tfds data dir holding every set
    label_set: str | None = None  # default: the checkpoint config's label_set
    classifier: str | None = None  # head | zeroshot | linear_probe; default by loss
    templates: str = "openai80"  # openai80 | openai7 | single
    class_names: str = "clip"  # clip | wordnet | path to a file of 1000 names
    batch_size: int = 64  # global eval batch
    resolution: int | None = None  # default: the config's input.resolution
    v2_variant: str = "matched-frequency"
    max_examples: int | None = None  # per set (smoke tests); None = all
    probe_train: str | None = None  # records dir for the linear probe (default: data.train)
    probe_per_class: int = 50
    probe_C: float | None = None  # None = picked on a hold-out (janus.evaluate.linear_probe)
    params: str = "params"  # which weights evaluate_step reads: params | ema | avg


def log(msg: str) -> None:
    import jax

    if jax.process_index() == 0:
        print(f"[janus.evaluate] {msg}", file=sys.stderr, flush=True)


def _train_records_dir(config: Mapping) -> str | None:
    """The run's (first) training records dir; data.train may be a mixture ("a*2+b", a list)."""
    from janus.config import train_dirs

    if not (config.get("data") or {}).get("train"):
        return None
    return train_dirs(config)[0][0]


def resolve_data(opts: EvalOptions, config: Mapping) -> tuple[dict[str, str], list[str]]:
    """-> ({set: spec}, notes on the sets left without a location). Precedence: per-set spec,
    --data.records, --data.tfds. With no location given at all: the run's training records dir
    when its info.json says suite "mini" (the mini records chosen as a whole), else the sets its
    config's in-loop evaluation names (`evals.<name>.data`; JANuS-mini v2's shift-set folders)."""
    records_dir = opts.records
    given = bool(opts.data) or opts.records is not None or opts.tfds is not None
    run_sets = {}
    if not given:
        train = _train_records_dir(config)
        if sets.records_info(train).get("suite") == "mini":
            records_dir = train
        else:
            run_sets = _inloop_sets(config)
    specs, notes = {}, []
    for name in opts.sets:
        if name in opts.data:
            specs[name] = opts.data[name]
        elif name in run_sets:
            specs[name] = run_sets[name]
        elif records_dir:
            specs[name] = f"records:{records_dir}#{name}"
        elif opts.tfds:
            specs[name] = f"tfds:{opts.tfds}"
        else:
            why = (
                "; only the sets given a location are evaluated (the training records are used "
                "only when no set is given one)"
                if given
                else ""
            )
            notes.append(f"set {name!r} skipped: no data source given for it{why}")
    return specs, notes


def _inloop_sets(config: Mapping) -> dict[str, str]:
    """{set: spec} that the run's in-loop evaluations read (the first one naming a set wins)."""
    out: dict[str, str] = {}
    for ev in (config.get("evals") or {}).values():
        for name, spec in ((ev or {}).get("data") or {}).items():
            out.setdefault(name, spec)
    return out


def common_suite(suites) -> str | None:
    """The one suite of the given sets, `mixed` when they differ, None when there is none."""
    found = sorted(set(suites))
    return found[0] if len(found) == 1 else ("mixed" if found else None)


def _iter_batches(items, batch_size: int, pp: str, *, whole: bool = False):
    """Eval batches {"image", "label", "mask"}; mask False on padding (label -1) and bad images.

    Each process reads its shard, or, with `whole`, every item (the linear probe's training
    features: each process fits the same probe on all of them)."""
    import jax

    from janus.data.input.pipeline import eval_loader

    return eval_loader(
        items,
        global_batch_size=batch_size,
        pp=pp,
        shard_index=0 if whole else jax.process_index(),
        shard_count=1 if whole else jax.process_count(),
    )


def sum_over_processes(counts: np.ndarray) -> np.ndarray:
    """Exact integer sum of per-process counts (int64 allgather, summed on the host)."""
    import jax

    counts = np.asarray(counts, np.int64)
    if jax.process_count() == 1:
        return counts
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(counts)).sum(0)


def on_every_process(flag: bool) -> bool:
    """True when `flag` holds on every process (a collective: all processes must call it)."""
    import jax

    return int(sum_over_processes(np.array([int(bool(flag))]))[0]) == jax.process_count()


@dataclasses.dataclass
class _View:
    name: str
    classes: np.ndarray
    targets: np.ndarray  # bool [G, C] per group of the set
    keep: np.ndarray  # bool [G]: groups counted in this view
    head: Callable


class Evaluator:
    """Evaluates checkpoints of one run; keeps jitted functions and zero-shot matrices."""

    def __init__(self, opts: EvalOptions, cache_dir: str | None = None):
        self.opts = opts
        self.zs_cache = zeroshot.ClassEmbeddingCache(cache_dir)
        self._embedders: dict[str, Embedder] = {}
        self._models: dict[str, object] = {}
        # Opened sets, reused for every checkpoint: opening a tfds set scans all its records.
        self._sets: dict[tuple, sets.EvalSet] = {}

    # ---------------------------------------------------------------- model pieces
    def _model(self, config):
        key = json.dumps([config.get("model"), config.get("loss")], sort_keys=True, default=str)
        if key not in self._models:
            self._models[key] = model_from_config(config)
        return key, self._models[key]

    def embedder(self, config, variables, kind: str, model=None) -> Embedder:
        """One jitted function per (model, output kind); variables swapped per checkpoint."""
        key, m = ("given", model) if model is not None else self._model(config)
        key = f"{key}/{kind}/{id(m)}"
        emb = self._embedders.get(key)
        if emb is None:
            emb = self._embedders[key] = Embedder(m, variables, kind)
        else:
            emb.set_variables(variables)
        return emb

    def classifier_for(self, config) -> str:
        c = self.opts.classifier or default_classifier(config.get("loss"))
        if c not in classifiers.CLASSIFIERS:
            raise ValueError(f"classifier {c!r}; known: {classifiers.CLASSIFIERS}")
        if c == "zeroshot" and not is_vl(config.get("loss")):
            raise ValueError(f"zeroshot needs a VL model; loss={config.get('loss')!r}")
        if c == "head" and is_vl(config.get("loss")):
            raise ValueError("a VL model has no classification head: use zeroshot or linear_probe")
        return c

    def _zeroshot_head(self, config, variables, model, classes, weights_id):
        names, templates = zeroshot.class_prompts(
            classes, self.opts.class_names, self.opts.templates
        )
        key = zeroshot.cache_key(weights_id, classes, templates, names)

        def build():
            return zeroshot.encode_classes(model, variables, config, names, templates)

        return classifiers.ZeroShotHead(classes, self.zs_cache.get(key, build))

    def _probe(self, config, variables, emb, label_set, pp):
        import functools

        from janus.data.input.preprocess import build_pp
        from janus.evaluate import linear_probe

        train_dir = self.opts.probe_train or _train_records_dir(config)
        if not train_dir:
            raise ValueError("linear_probe needs a training records dir (--probe.train)")
        es = sets.read_records("train", train_dir, "train")
        labels = [es.groups[g] for g in es.item_groups]
        pos = linear_probe.select_per_class(labels, label_set, self.opts.probe_per_class)
        first = {}  # probe label = the item's first label inside the label set
        ls = {int(c) for c in label_set}
        for p in pos:
            first[int(p)] = next(int(x) for x in labels[p] if int(x) in ls)
        items = sets.Subset(es.items, pos)
        relabelled = _Relabel(items, [first[int(p)] for p in pos])
        batch = round_batch(self.opts.batch_size, emb.n_dev)
        batches = _iter_batches(relabelled, batch, pp, whole=True)
        embed = functools.partial(emb, scaling=build_pp(pp).scaling)
        probe = linear_probe.probe_from_embedder(embed, batches, label_set, C=self.opts.probe_C)
        log(f"linear probe: {probe.n_train} train images, C={probe.C}")
        return probe

    # ---------------------------------------------------------------- one checkpoint
    def evaluate_variables(
        self,
        config: Mapping,
        variables: Mapping,
        *,
        step: int,
        checkpoint: str = "",
        model=None,
    ) -> dict:
        import jax

        from janus.data import labelsets

        opts = self.opts
        classifier = self.classifier_for(config)
        specs, notes = resolve_data(opts, config)
        for n in notes:
            log(n)
        # Each set's protocol and suite, from where it is read (no image read yet).
        located: dict[str, sets.SetSource | Exception] = {}
        for name in opts.sets:
            if name in specs:
                try:
                    located[name] = sets.locate(name, specs[name], v2_variant=opts.v2_variant)
                except sets.SetNotFound as e:
                    located[name] = e
        sources = [s for s in located.values() if isinstance(s, sets.SetSource)]
        # A mini records dir's label set is the default when every set comes from such records.
        mini_ls = {s.label_set for s in sources if s.protocol == "mini"}
        all_mini = bool(sources) and all(s.protocol == "mini" for s in sources)
        mini_ls = mini_ls.pop() if all_mini and len(mini_ls) == 1 else None
        ls_name = opts.label_set or mini_ls or config.get("label_set") or "in1000"
        label_set = labelsets.resolve_label_set(ls_name)
        pp = eval_pp(config, opts.resolution)
        if model is None:
            _, model = self._model(config)
        kind = {"head": "logits", "zeroshot": "image_emb", "linear_probe": "features"}[classifier]
        emb = self.embedder(config, variables, kind, model=model)
        batch = round_batch(opts.batch_size, emb.n_dev * jax.process_count())
        weights_id = zeroshot.weights_fingerprint(variables) if classifier == "zeroshot" else ""
        probe = self._probe(config, variables, emb, label_set, pp) if kind == "features" else None

        def make_head(classes):
            if classifier == "head":
                return classifiers.SubsetHead(classes)
            if classifier == "zeroshot":
                return self._zeroshot_head(config, variables, model, classes, weights_id)
            return classifiers.ProbeHead(classes, probe)

        onet = located.get("objectnet")
        onet_imagenet = isinstance(onet, sets.SetSource) and onet.protocol == "imagenet"
        results, extra, where, skipped = {}, {}, {}, {}
        skipped_files = {}  # set -> the first unreadable images' file names (or record keys)
        for name in opts.sets:
            if name not in specs:
                continue
            src, es = located[name], None
            missing = str(src) if isinstance(src, Exception) else "missing on another process"
            if isinstance(src, sets.SetSource):
                set_key = (src, opts.v2_variant)
                es = self._sets.get(set_key)
                if es is None:
                    try:
                        es = sets.open_source(src, v2_variant=opts.v2_variant)
                        self._sets[set_key] = es
                    except sets.SetNotFound as e:
                        missing = str(e)
            # Every process must take part in the count sum, so all skip a set one of them lacks.
            if not on_every_process(es is not None):
                notes.append(f"set {name!r} not found ({missing}); the other sets still ran")
                log(notes[-1])
                continue
            partial = es.protocol == "imagenet" and name in restrict.PARTIAL_SETS
            set_cls = labelsets.shift_set_classes(name) if partial else None
            classes = restrict.eval_classes(label_set, set_cls)
            if len(classes) == 0:
                notes.append(f"set {name!r}: no class of label set {ls_name!r} in it")
                continue
            es, targets = sets.filter_to_classes(es, classes)
            if opts.max_examples is not None:
                es.items = sets.Subset(es.items, np.arange(min(len(es), opts.max_examples)))
            if len(es) == 0:
                notes.append(f"set {name!r}: no image of the class set ({es.where})")
                continue
            views = [
                _View(name, classes, targets, np.ones(len(es.groups), bool), make_head(classes))
            ]
            if name == "val" and es.protocol == "imagenet" and onet_imagenet:
                oc = restrict.eval_classes(label_set, labelsets.shift_set_classes("objectnet"))
                if len(oc):
                    t2, k2 = restrict.target_table(es.groups, oc)
                    views.append(_View("val_on_objectnet_classes", oc, t2, k2, make_head(oc)))
            t0 = time.time()
            counts, unreadable, first = self._run_views(es, views, emb, batch, pp)
            es.skipped["unreadable image"] = unreadable
            if first:
                skipped_files[name] = first
            for view, (c1, c5, n) in zip(views, counts):
                r = {
                    "top1": c1 / n if n else None,
                    "top5": c5 / n if n else None,
                    "n": int(n),
                    "classes": len(view.classes),
                    "suite": es.suite,
                    "protocol": es.protocol,
                    "data": es.where,
                }
                (results if view.name == name else extra)[view.name] = r
            where[name] = es.where
            skipped[name] = {k: v for k, v in es.skipped.items() if v}
            log(
                f"{name}: top1={display.metric(results[name]['top1'])} n={results[name]['n']} "
                f"({time.time() - t0:.1f}s, {es.suite} data, {es.protocol} protocol, {es.where})"
            )

        measured = {**results, **extra}
        suites = {k: v["suite"] for k, v in measured.items()}
        suite = common_suite(suites[k] for k in results)
        if suite == "mixed":
            notes.append(
                "the sets come from different suites ("
                + ", ".join(f"{k}: {v['suite']} ({v['data']})" for k, v in results.items())
                + "); no average or ratio is taken across suites"
            )
            log(notes[-1])
        m, mnotes = metrics.compute_metrics(measured, opts.v2_variant, suites)
        notes += mnotes
        if ls_name != "in1000" and any(v is not None for k, v in m.items() if "taori" in k):
            notes.append(
                f"taori_er_* use baselines fitted on 1000-way ImageNet accuracies; on label set "
                f"{ls_name!r} they are indicative only (a baseline for it: metrics.fit_baseline)"
            )
        notes.append(
            "effective_robustness = robustness_ratio (avg_robustness / val, the paper's "
            "definition); Taori-style numbers are the taori_er_* keys"
        )
        v2 = results.get("v2") or {}
        return {
            "step": int(step),
            "checkpoint": checkpoint,
            "model": (config.get("model") or {}).get("name"),
            "loss": config.get("loss"),
            "label_set": ls_name,
            "suite": suite or common_suite(s.suite for s in sources),
            "classifier": classifier,
            "params": opts.params,
            "templates": opts.templates if classifier == "zeroshot" else None,
            "v2_variant": opts.v2_variant if v2.get("suite") == "imagenet" else None,
            "sets": results,
            "metrics": {k: metrics.float_or_none(v) for k, v in m.items()},
            "notes": notes,
            "extra_sets": extra,
            "class_names": opts.class_names if classifier == "zeroshot" else None,
            "eval_pp": pp,
            "data": where,
            "skipped": skipped,
            "skipped_files": skipped_files,
        }

    def _run_views(self, es, views, emb, batch, pp) -> tuple[list[tuple[int, int, int]], int, list]:
        """-> ([(top1 hits, top5 hits, n)] per view, images that could not be read, the first
        SKIPPED_FILES of their file names on this process); the counts summed over processes.
        Unreadable images are left out of n, and counted and named so the JSON says so."""
        from janus.data.input.preprocess import build_pp

        counts = np.zeros((len(views), 3), np.int64)
        scaling = build_pp(pp).scaling  # applied on the device, in the jitted image function

        def consume(pending):
            handle, mask, groups = pending
            out = emb.fetch(handle)[mask]
            for i, v in enumerate(views):
                keep = v.keep[groups]
                if not keep.any():
                    continue
                hits = classifiers.topk_counts(v.head(out[keep]), v.targets[groups[keep]])
                counts[i] += (hits[1], hits[5], int(keep.sum()))

        pending = None  # one batch in flight: the next batch loads while the model runs
        batches = _iter_batches(es.items, batch, pp)
        for b in batches:
            mask = np.asarray(b["mask"], bool)
            if not mask.any():
                continue
            nxt = (emb.dispatch(b["image"], scaling), mask, np.asarray(b["label"])[mask])
            if pending is not None:
                consume(pending)
            pending = nxt
        if pending is not None:
            consume(pending)
        report = batches.skip_report()
        unreadable = sum(report["counts"].values())
        first = [str(k) for keys in report["first_keys"].values() for k in keys][:SKIPPED_FILES]
        total = sum_over_processes(np.append(counts.ravel(), unreadable))
        rows = total[:-1].reshape(counts.shape)
        return [tuple(int(x) for x in row) for row in rows], int(total[-1]), first

    def evaluate_step(self, workdir: str, step: int | None = None) -> dict:
        """Loads checkpoint <step> (latest if None) and evaluates its `opts.params` weights: the
        parameters or their EMA of <workdir>/checkpoints/<step>, or janus.average's
        <workdir>/averaged/checkpoints/<step> (whose `averaged_steps` the result records)."""
        from janus import checkpoint as ckpt_lib

        where = ckpt_lib.weights_workdir(workdir, self.opts.params)
        path = os.path.join(where, "checkpoints", str(step)) if step is not None else where
        config, variables, loaded = ckpt_lib.load_for_inference(path, ema=self.opts.params == "ema")
        rel = os.path.relpath(os.path.join(where, "checkpoints", str(loaded)), workdir)
        result = self.evaluate_variables(config, variables, step=loaded, checkpoint=rel)
        if "averaged_steps" in config:
            result["averaged_steps"] = config["averaged_steps"]
        return result


class _Relabel:
    """Items with their label replaced (the probe's label: the first one inside the label set)."""

    def __init__(self, items, labels):
        self.items, self.labels = items, labels

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return {**self.items[i], "label": int(self.labels[i])}

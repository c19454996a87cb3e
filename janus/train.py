"""Training a config in a workdir: `train_and_evaluate`, which reads as the phases of a run.

1. The workdir is held for the run, and the config resolved on its devices and data into one
   `ResolvedRun` (`janus.config.resolve_run`), which everything after reads.
2. The model, its optimizer and the state's layout on the mesh (`janus.train_state`).
3. The state: restored from the newest checkpoint that restores (after the resume check of
   `janus.run_records`: a config that changes the experiment is refused; a damaged newer step is
   moved aside), or made fresh (init, checkpoint.init_from, a fine-tuning start).
4. The run's records (history.jsonl, config.json, data_manifest.json; the rows a resume
   recomputes dropped), the metric writers and the eval hooks.
5. The loop (`janus.loop`): the jitted step (`janus.train_step`), logs, hooks, checkpoints, stop
   on a signal; then the end records (DONE). Every exit path closes the checkpoint manager, the
   writers and the input iterator.

Input: uint8 batches of the run's selected examples (`janus.data.input.pipeline`), normalised
inside the jitted step; `PREFETCH_BATCHES` batches are put on the devices ahead of the step
(`janus.data.input.prefetch`).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

import jax
from absl import logging

from janus import checkpoint as ckpt_lib
from janus import config as config_lib
from janus import loop, run_records, train_state, wandb_writer
from janus import metric_writer as mw
from janus import train_step as step_lib
from janus.loop import TrainResult
from janus.run_records import RunRefused  # what train_and_evaluate raises for its callers

PREFETCH_BATCHES = 2  # batches put on the devices ahead of the step (one runs, one waits)

__all__ = ["PREFETCH_BATCHES", "RunRefused", "TrainResult", "train_and_evaluate"]


def train_and_evaluate(
    config,
    workdir: str,
    *,
    make_hooks: Callable | None = None,
    writer: mw.MetricWriter | None = None,
    allow_changes: str | list[str] | tuple[str, ...] = (),
) -> TrainResult:
    """Trains `config` in `workdir`, resuming from its latest complete checkpoint.

    The workdir is locked for the run (`janus.workdir`; a second run raises `RunRefused`). A
    resume whose config differs from the restored checkpoint's in a field that changes the
    experiment raises `RunRefused` listing the fields, unless `allow_changes` names them
    (dotted fields, prefixes such as "optimizer", fnmatch patterns, or "all"); every start and
    resume is recorded in <workdir>/history.jsonl with its step and changes. SIGTERM saves a
    checkpoint and returns (stopped_early).

    make_hooks(config, model, mesh) -> eval hooks (see `loop.normalise_hooks`); main passes the
    evaluator's `make_inloop_evaluators` so this module never imports the evaluator.
    """
    from janus import sharding as sharding_lib

    with run_records.held(workdir):
        # 1. The run: its config checked and resolved on its devices and data.
        t_setup = time.time()
        pid, nproc = jax.process_index(), jax.process_count()
        config_lib.validate(config, num_devices=jax.device_count(), num_processes=nproc)
        wandb_writer.check_available(config)  # an extra: one line if it is asked for, missing
        mesh = sharding_lib.make_mesh(config_lib.mesh_axes(config))
        selection = _select_data(config)
        run = config_lib.resolve_run(
            config,
            num_train_examples=selection.manifest["n_examples"],
            budget=selection.manifest["budget"],
            mesh=mesh.shape,
            num_processes=nproc,
            device_kind=jax.devices()[0].device_kind,
        )
        total, record = run.durations.total_steps, run.record()

        # 2. The model, its optimizer, and the state's layout on the mesh.
        model = step_lib.build_model(run.config)
        opt = train_state.make_optimizer(run)
        layout = train_state.layout(model, opt, run, mesh)

        # 3. The state: the latest checkpoint's (if its config may resume), or a fresh one.
        ckpt = _checkpointer(workdir, run)
        resumed = ckpt.latest_step() is not None
        data_iter, manifest = _open_data(run, selection, mesh)
        del selection  # the loader holds what it needs
        changes = {}
        if resumed:  # the newest step that restores (a damaged newer one is moved aside)
            check = functools.partial(
                run_records.check_resume, workdir, ckpt, record=record, allow_changes=allow_changes
            )
            restored = train_state.restore(ckpt, layout, data_iter, check=check)
            state, start, changes = restored.state, restored.step, restored.checked
            run_records.record_damaged(workdir, restored.damaged)
        else:
            state, start = train_state.create(run, layout, opt, mesh, workdir), 0

        # 4. The run's records, the metric writers and the eval hooks.
        run_records.begin(
            workdir,
            step=start,
            resumed=resumed,
            changes=changes,
            record=record,
            manifest=manifest,
            total_steps=total,
        )
        writer = writer or mw.create_default_writer(
            workdir,
            process_index=pid,
            total_steps=total,
            # TensorBoard: events past the restored step are hidden (one curve after a resume).
            purge_step=start + 1 if mw.has_event_files(workdir) else None,
            wandb_project=run.config["log"]["wandb_project"],
            wandb_mode=run.config["log"]["wandb_mode"],
        )
        if start == 0:
            writer.write_hparams(run_records.hparams(record))
        hooks = make_hooks(config, model, mesh) if make_hooks else None
        hooks = loop.normalise_hooks(hooks, run.config["evals"])

        # 5. The loop, then the end of the run.
        stop = loop.StopFlag().install()
        with loop.closing(stop, ckpt, writer, data_iter):
            result = loop.train(
                run,
                model,
                opt,
                state,
                start=start,
                mesh=mesh,
                shardings=layout.shardings,
                data_iter=data_iter,
                hooks=hooks,
                ckpt=ckpt,
                writer=writer,
                stop=stop,
                t_setup=t_setup,
            )
            run_records.finish(workdir, manifest, data_iter, step=result.step, total_steps=total)
        return result


# --------------------------------------------------------------------------------------------------
# The run's data and checkpoints


def _select_data(config):
    """The run's examples, selected once per start: the epoch length comes from it and the loader
    reads it (every process selects the same, from the manifests alone)."""
    from janus.data.input import pipeline

    captions = config_lib.is_vl(config.loss)

    def count(d, budget):
        return pipeline.num_train_examples(
            d, budget=budget, label_set=config.label_set, captions=captions
        )

    budget = config_lib.resolve_budget(config, count)
    try:
        selection = pipeline.select_examples(
            _loader_dirs(config),
            seed=int(config.seed) % 2**32,
            label_set=config.label_set,
            budget=budget,
            class_balanced=config.data.class_balanced,
            captions=captions,
            subset_seed=config.data.subset_seed,  # None: the run's seed
        )
    except ValueError as e:
        if "cannot be met" not in str(e):
            raise
        raise config_lib.ConfigError(
            f"config field 'data.budget' = {budget}: {e} (label set {config.label_set!r}); "
            "lower data.budget or add data (a bigger data.train, or a mixture)"
        ) from None
    check_selection(config, selection.manifest, say=mw.say if jax.process_index() == 0 else None)
    return selection


def check_selection(config, manifest: dict, *, say=None) -> None:
    """What the selection means for the run, before anything compiles: a global batch larger
    than the selected samples is refused (every batch would repeat samples); samples the label
    set left out are said in one line (`say`), not only counted in data_manifest.json."""
    n, batch = manifest["n_examples"], int(config.input.batch_size)
    if batch > n:
        raise config_lib.ConfigError(
            f"config field 'input.batch_size' = {batch} is larger than the {n} samples selected "
            f"from {config_lib.train_dirs(config)[0][0]!r}"
            f"{'' if len(config_lib.train_dirs(config)) == 1 else ' (and the other dirs)'}: "
            f"every batch would repeat samples; lower input.batch_size to at most {n} or add data"
        )
    dropped = sum(manifest.get("skipped", {}).get("counts", {}).values())
    if dropped and say is not None:
        total = sum(d["records"] for d in manifest["dirs"])
        why = (
            f"have no label in label set {manifest['label_set']!r}"
            if manifest.get("label_set") is not None
            else "have no label"
        )
        say(
            f"data: {dropped} of the {total} records {why} and are left out "
            f"({n} selected; data_manifest.json 'skipped' has the first keys)"
        )


def _open_data(run, selection, mesh):
    """-> (batches already on their way to the devices, the data manifest)."""
    from janus import sharding as sharding_lib
    from janus.data.input import pipeline
    from janus.data.input.prefetch import DevicePrefetch

    c = run.config
    vl = config_lib.is_vl(c["loss"])
    tokenizer = None
    if vl:
        from janus.data.input.tokenizer import Tokenizer

        tokenizer = Tokenizer(context_length=c["input"]["context_length"])
    loader = pipeline.train_loader
    if c["data"].get("loader") == "dali":  # the same batches, DALI's pixels (nvJPEG on a GPU)
        from janus.data.input import dali_loader

        device = "mixed" if jax.default_backend() == "gpu" else "cpu"
        loader = functools.partial(dali_loader.train_loader, device=device)
    batches, manifest = loader(
        _loader_dirs(c),
        global_batch_size=c["input"]["batch_size"],
        pp=c["input"]["pp"],
        seed=c["seed"],
        label_set=c["label_set"],
        budget=selection.manifest["budget"],
        class_balanced=c["data"]["class_balanced"],
        captions=vl,
        tokenizer=tokenizer,
        multi_hot=c["data"]["multi_hot"] or c["loss"] in ("multilabel_ce", "sigmoid"),
        num_epochs=None,
        worker_count=c["data"]["worker_count"],
        shard_index=jax.process_index(),
        shard_count=jax.process_count(),
        selection=selection,
    )
    put = functools.partial(sharding_lib.shard_batch, mesh=mesh)
    return DevicePrefetch(batches, put, depth=PREFETCH_BATCHES), manifest


def _loader_dirs(config):
    """data.train as the pipeline takes it: one dir, or [(dir, weight)] for a mixture."""
    dirs = config_lib.train_dirs(config)
    return dirs[0][0] if len(dirs) == 1 else dirs


def _checkpointer(workdir: str, run) -> ckpt_lib.Checkpointer:
    c = run.config["checkpoint"]
    if c["keep_every"] and c["keep_every"] % c["every_steps"]:
        logging.warning("checkpoint.keep_every is not a multiple of checkpoint.every_steps")
    return ckpt_lib.Checkpointer(
        workdir, keep=c["keep"], keep_every=c["keep_every"], async_save=c["async_save"]
    )

"""JANuS-mini v2: the world's design, the generator's determinism, the real readers on every raw
source, a CI-sized build from the spec files, and one build for two processes starting at once."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from janus.data import labelsets, records
from janus.data.ingest import sources
from janus.data.ingest.skips import SkipCounter
from janus.data.mini import SUITE_FILE, generate, prepare, world
from janus.evaluate import sets

REPO = pathlib.Path(__file__).resolve().parents[1]


def _digest(root: pathlib.Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def raw(mini_v2) -> pathlib.Path:
    """The raw data of the session's small JANuS-mini v2 (tests/conftest.py)."""
    return pathlib.Path(f"{mini_v2}_raw")


@pytest.fixture(scope="module")
def sizes(raw) -> generate.Sizes:
    return generate.Sizes(**json.loads((raw / SUITE_FILE).read_text())["sizes"])


def test_label_set_is_the_in100_classes_r_and_a_both_hold():
    mini = set(labelsets.resolve_label_set("mini25").tolist())
    expected = (
        set(labelsets.resolve_label_set("in100").tolist())
        & set(labelsets.shift_set_classes("r").tolist())
        & set(labelsets.shift_set_classes("a").tolist())
    )
    assert mini == expected and len(mini) == 25
    on = mini & set(labelsets.shift_set_classes("objectnet").tolist())
    # As many ObjectNet classes as IN100 allows once R and A must hold every class.
    assert len(on) == 4


def test_every_pair_of_classes_shares_exactly_one_factor():
    def factors(c):
        return (c.shape, c.palette, c.texture, c.parts, c.context, c.size)

    shared = {
        sum(x == y for x, y in zip(factors(a), factors(b)))
        for a, b in itertools.combinations(world.classes(), 2)
    }
    assert shared == {1}  # no single cue identifies a class; any two do


def test_same_seed_gives_byte_identical_files_for_any_worker_count(raw, tmp_path, sizes):
    again = tmp_path / "again"
    generate.generate(again, seed=0, sizes=sizes, workers=2, log=lambda *_: None)
    assert _digest(raw) == _digest(again)
    other = tmp_path / "other_seed"
    generate.generate(other, seed=1, sizes=sizes, workers=1, log=lambda *_: None)
    a, b = _digest(raw), _digest(other)
    changed = [k for k in a if k.endswith((".JPEG", ".jpg")) and a[k] != b.get(k)]
    assert len(changed) > 0.9 * sum(k.endswith((".JPEG", ".jpg")) for k in a)


def test_refuses_to_replace_a_directory_it_did_not_write(tmp_path, sizes):
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "thesis.tex").write_text("x")
    with pytest.raises(ValueError, match="not a JANuS-mini raw dir"):
        generate.generate(tmp_path / "precious", sizes=sizes, workers=1)


def test_each_raw_source_is_read_by_its_real_reader(raw, sizes):
    def scan(spec):
        skips = SkipCounter()
        return list(sources.make_source(spec).scan(skips)), skips

    curated, _ = scan({"kind": "folder", "name": "curated", "path": str(raw / "curated")})
    assert len(curated) == 25 * sizes.curated_train_per_class
    assert {c.labels for c in curated} == {(c,) for c in world.label_set()}

    web, _ = scan({"kind": "webdataset", "name": "web", "path": str(raw / "web")})
    assert len(web) == sizes.web and all(c.labels is None and c.captions for c in web)
    assert len(list((raw / "web").glob("*.tar"))) == -(-sizes.web // sizes.tar_size)

    flickr, _ = scan(
        {
            "kind": "manifest",
            "name": "flickr",
            "path": str(raw / "flickr" / "metadata.parquet"),
            "image_col": "filepath",
            "caption_cols": "title+description",
            "key_col": "photoid",
        }
    )
    assert len(flickr) == sizes.flickr and all(c.labels is None for c in flickr)

    oi, _ = scan(
        {
            "kind": "openimages",
            "name": "oi",
            "path": str(raw / "oi" / "labels.csv"),
            "root": str(raw / "oi" / "images"),
        }
    )
    assert len(oi) == sizes.oi
    assert set(itertools.chain(*(c.labels for c in oi))) <= set(world.label_set())
    assert any(len(c.labels) == 2 for c in oi)  # images with two objects
    rows = (raw / "oi" / "labels.csv").read_text().splitlines()
    assert rows[0] == "ImageID,Source,LabelName,Confidence" and any(r.endswith(",0") for r in rows)


def test_shift_sets_are_read_by_the_evaluators_folder_readers(raw, sizes):
    info = json.loads((raw / SUITE_FILE).read_text())
    assert info["suite"] == "mini" and sets.SUITE_MARKER == SUITE_FILE
    specs = generate.eval_sets(str(raw))
    assert set(specs) == set(sets.DEFAULT_SETS)
    for name, spec in specs.items():
        es = sets.open_set(name, spec)
        labels = {x for g in es.groups for x in g}
        if name == "objectnet":
            assert len(es) == 4 * sizes.objectnet_per_class
            assert labels == set(world.label_set()) & set(labelsets.shift_set_classes(name))
        else:
            assert len(es) == 25 * sizes.val_per_class and labels == set(world.label_set())


def test_ci_sized_build_from_the_spec_files(mini_v2, raw, sizes):
    root = mini_v2
    out = json.loads((root / prepare.BUILT_FILE).read_text())
    assert set(out["commands"]) == set(prepare.SOURCE_NAMES)
    for name in prepare.SOURCE_NAMES:
        info = records.read_info(str(root / name))
        assert info["label_set"] == "mini25"
        n = info["splits"]["train"]
        entries = list(records.read_manifest(str(root / name)))
        assert len(entries) == n > 0
        assert {e["source"] for e in entries} == {name}
        assert set(itertools.chain(*(e["labels"] for e in entries))) <= set(world.label_set())
    assert records.read_info(str(root / "curated"))["splits"]["train"] == 200
    web = records.read_info(str(root / "web"))
    # Caption noise shows in the coverage report: some captions match nothing, some are ambiguous.
    assert json.dumps(web).count("no_match") >= 1
    assert 0.6 * sizes.web <= web["splits"]["train"] < sizes.web
    # The same call again reuses the build.
    again = prepare.prepare(str(root), str(raw), sizes=sizes, workers=1, log=lambda *_: None)
    assert again == out


def test_two_processes_starting_at_once_build_once(tmp_path, sizes):
    script = textwrap.dedent(
        f"""
        import sys
        from janus.data.mini import generate, prepare
        sizes = generate.Sizes(**{sizes.__dict__!r})
        prepare.prepare(sys.argv[1], sizes=sizes, workers=1)
        """
    )
    root = tmp_path / "mini"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(root)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    text = "".join(outs)
    assert text.count("[mini] generated") == 1, text
    assert text.count("JANuS-mini v2 ready") == 1, text
    assert (root / prepare.BUILT_FILE).is_file()


def test_images_differ_by_style_and_class():
    rng = np.random.default_rng(0)
    from janus.data.mini import render

    a = render.render(world.classes()[0], "photo", render.Conditions(), rng)
    b = render.render(world.classes()[0], "drawing", render.Conditions(), rng)
    assert a.shape == b.shape == (render.SIZE, render.SIZE, 3) and a.dtype == np.uint8
    assert np.allclose(b[..., 0], b[..., 1], atol=1)  # drawings are grey
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 10


def test_the_evaluator_defaults_to_the_runs_own_shift_sets(raw):
    from janus.evaluate import runner

    own = generate.eval_sets(str(raw))
    config = {"data": {"train": str(raw / "nowhere")}, "evals": {"mini": {"data": own}}}
    specs, notes = runner.resolve_data(runner.EvalOptions(), config)
    assert specs == own and notes == []
    # A location given on the command line replaces the run's own: only that set is evaluated.
    specs, notes = runner.resolve_data(runner.EvalOptions(data={"r": "folder:elsewhere"}), config)
    assert specs == {"r": "folder:elsewhere"} and len(notes) == len(own) - 1


def test_new_raw_data_are_built_into_new_records(tmp_path, sizes):
    """A build for another seed replaces the records too, not only the raw data: every record's
    image is the raw file the generator wrote last."""
    root = tmp_path / "mini"
    quiet = {"sizes": sizes, "workers": 1, "log": lambda *_: None}
    prepare.prepare(str(root), seed=0, **quiet)
    prepare.prepare(str(root), seed=1, **quiet)
    src = records.RecordsDataSource(str(root / "curated"), "train")
    raw = pathlib.Path(f"{root}_raw") / "curated" / "train"
    for i in range(len(src)):
        ex = records.decode_example(src[i])
        _, wnid, name = ex["key"].split("/")
        assert ex["image/encoded"] == (raw / wnid / f"{name}.JPEG").read_bytes(), ex["key"]

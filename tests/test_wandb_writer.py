"""The W&B writer (`janus.wandb_writer`, the wandb extra), in W&B's offline mode: no network, no
API key, every W&B file under tmp_path.

- the writer driven directly: the scalars at their steps, config.json as the run config, the data
  manifest (file and summary); a resume continues the same run id; an eval result's table and
  summary (`log_eval`);
- one 3-step `python -m janus.main` run with --config.log.wandb_project: the logged rows equal
  metrics.jsonl's;
- without wandb installed, asking for it is one line naming the install command (exit 2).

The offline run's records are read back from its `run-<id>.wandb` file (`records` below).
"""

import json
import pathlib
import subprocess
import sys

import pytest
import test_train

data_dir, env = test_train.data_dir, test_train.env  # the trainer tests' module fixtures


@pytest.fixture
def wandb_env(monkeypatch, tmp_path):
    """wandb importable (else skipped), offline, with its settings and caches in tmp_path."""
    pytest.importorskip(
        "wandb", reason="the wandb extra: pip install -r requirements/lock-wandb.txt"
    )
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    values = dict(WANDB_MODE="offline", WANDB_SILENT="true", WANDB_DIR=tmp_path / "wandb_dir")
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        values[name] = tmp_path / name.lower()
    for k, v in values.items():
        monkeypatch.setenv(k, str(v))
    return {k: str(v) for k, v in values.items()}


def records(path: pathlib.Path) -> list:
    """The Record protos of a .wandb file: a 7-byte header (":W&B", magic, version), then
    LevelDB's log format (32 KiB blocks; each chunk: crc32c, length, type 1 full / 2-4 parts)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, parts, out = 7, b"", []
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a chunk header is padding
            pos += 32768 - pos % 32768
            continue
        n, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        parts += data[pos + 7 : pos + 7 + n]
        pos += 7 + n
        if kind in (1, 4):
            r = pb.Record()
            r.ParseFromString(parts)
            out.append(r)
            parts = b""
    return out


def _put(tree: dict, item) -> None:
    path = [item.key] if item.key else list(item.nested_key)
    for k in path[:-1]:
        tree = tree.setdefault(k, {})
    tree[path[-1]] = json.loads(item.value_json)


def read_run(run_dir: pathlib.Path) -> dict:
    """One offline session: its run id, config, history rows {step: row}, summary, saved files."""
    (path,) = run_dir.glob("run-*.wandb")
    out = {"config": {}, "history": {}, "summary": {}, "files": set()}
    for r in records(path):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            out["id"] = r.run.run_id
            for item in r.run.config.update:
                _put(out["config"], item)
        elif kind == "history":
            row = {}
            for item in r.history.item:
                _put(row, item)
            out["history"][r.history.step.num] = row
        elif kind == "summary":
            for item in r.summary.update:
                _put(out["summary"], item)
        elif kind == "files":
            out["files"] |= {f.path for f in r.files.files}
    return out


def sessions(workdir: pathlib.Path) -> list[dict]:
    return [read_run(d) for d in sorted((workdir / "wandb").glob("offline-run-*"))]


def _workdir(tmp_path) -> pathlib.Path:
    workdir = tmp_path / "run"
    workdir.mkdir()
    config = {"seed": 7, "log": {"wandb_project": "test", "wandb_mode": "offline"}}
    (workdir / "config.json").write_text(json.dumps(config))
    manifest = {"n_examples": 200, "budget": 200, "per_source": {"in100": 200}, "per_class": {}}
    (workdir / "data_manifest.json").write_text(json.dumps(manifest))
    return workdir


def test_writer_logs_steps_config_manifest_and_a_resume_continues_the_run(wandb_env, tmp_path):
    from janus.wandb_writer import WandbWriter

    workdir = _workdir(tmp_path)
    w = WandbWriter(str(workdir), project="test", mode="offline")
    for step in (10, 20):
        w.write_scalars(step, {"loss": 1.0 / step, "lr": 0.1})
    w.close()
    w = WandbWriter(str(workdir), project="test", mode="offline")  # the resume
    w.write_scalars(30, {"loss": 0.5})
    w.close()

    first, resumed = sessions(workdir)
    assert first["id"] == resumed["id"] == (workdir / "wandb_run_id").read_text().strip()
    assert {s: r["loss"] for s, r in first["history"].items()} == {10: 0.1, 20: 0.05}
    assert first["history"][10]["lr"] == 0.1
    assert {s: r["loss"] for s, r in resumed["history"].items()} == {30: 0.5}
    assert first["config"]["seed"] == 7 and first["config"]["log"]["wandb_project"] == "test"
    assert first["summary"]["data"] == {
        "n_examples": 200,
        "budget": 200,
        "per_source": {"in100": 200},
    }
    assert "data_manifest.json" in first["files"]
    run_dir = sorted((workdir / "wandb").glob("offline-run-*"))[0]
    saved = json.loads((run_dir / "files" / "data_manifest.json").read_text())
    assert saved == json.loads((workdir / "data_manifest.json").read_text())


def test_an_eval_result_is_a_table_and_summary_of_the_same_run(wandb_env, tmp_path):
    from janus.wandb_writer import log_eval

    workdir = _workdir(tmp_path)
    result = {
        "step": 40,
        "classifier": "head",
        "sets": {"val": {"top1": 0.5, "top5": 0.9, "n": 50}, "v2": {"top1": 0.25, "n": 50}},
        "metrics": {"avg_robustness": 0.25, "effective_robustness": None},
    }
    assert log_eval(str(workdir), result)
    (run,) = sessions(workdir)
    assert run["id"] == (workdir / "wandb_run_id").read_text().strip()
    s = run["summary"]
    assert (s["eval/head/val/top1"], s["eval/head/v2/top1"]) == (0.5, 0.25)
    assert (s["eval/head/avg_robustness"], s["eval/head/effective_robustness"]) == (0.25, None)
    assert s["eval/head/table"]["_type"] == "table-file"
    (table_file,) = workdir.glob("wandb/offline-run-*/files/media/table/eval/head/table_*.json")
    table = json.loads(table_file.read_text())
    assert table["columns"] == ["step", "set", "top1", "top5", "n"]
    assert table["data"] == [[40, "val", 0.5, 0.9, 50], [40, "v2", 0.25, None, 50]]
    (workdir / "config.json").write_text(json.dumps({"log": {"wandb_project": ""}}))
    assert not log_eval(str(workdir), result)  # W&B off: nothing logged


def test_main_logs_a_short_run_to_wandb_offline(wandb_env, data_dir, env, tmp_path):
    workdir = tmp_path / "run"
    cmd = test_train.command(
        data_dir,
        workdir,
        "steps=3,res=32,batch=16",
        "--config.log.wandb_project=test",
        "--config.log.wandb_mode=offline",
    )
    cmd[cmd.index("--config.log.every_steps=10")] = "--config.log.every_steps=1"
    p = test_train.run(cmd, dict(env, **wandb_env))
    assert p.returncode == 0, p.stderr[-3000:]

    (run,) = sessions(workdir)
    logged = test_train.metrics(workdir)
    assert sorted(run["history"]) == [row["step"] for row in logged] == [1, 2, 3]
    for row in logged:
        for k, v in row.items():
            if isinstance(v, float) and k != "time":
                assert run["history"][row["step"]][k] == pytest.approx(v, rel=1e-6), k
    config = json.loads((workdir / "config.json").read_text())
    assert {k: run["config"][k] for k in config} == config
    manifest = json.loads((workdir / "data_manifest.json").read_text())
    assert run["summary"]["data"]["n_examples"] == manifest["n_examples"]


def test_asking_for_wandb_without_it_installed_is_one_line(data_dir, env, tmp_path):
    """wandb made unimportable (sys.modules entry None), whether or not it is installed."""
    cmd = test_train.command(data_dir, tmp_path / "run", "steps=3,res=32,batch=16")
    argv = ["janus.main", *cmd[3:], "--config.log.wandb_project=test"]  # cmd: python -m janus.main
    code = (
        "import runpy, sys; sys.modules['wandb'] = None; "
        f"sys.argv = {argv!r}; runpy.run_module('janus.main', run_name='__main__')"
    )
    p = subprocess.run(
        [sys.executable, "-c", code],
        cwd=test_train.REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 2, p.stderr[-3000:]
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    assert "log.wandb_project" in lines[0] and "pip install 'janus[wandb]'" in lines[0]

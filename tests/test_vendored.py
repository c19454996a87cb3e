"""janus runs on its own copies of its data files (janus.vendored), shipped in the package: the
CLIP BPE vocabulary and the reference data, never another package's copy (open_clip ships the
same vocabulary), with the environment variables as explicit overrides.
tests/installs/check.sh checks the same inside a built wheel and README step 1's venv."""

import importlib.util
import pathlib

import pytest

import janus
from janus import vendored
from janus.data import reference
from janus.data.input import tokenizer

OWN = pathlib.Path(janus.__file__).resolve().parent / "vendored"
REFERENCE_FILES = sorted(p.name for p in (OWN / "reference").iterdir() if p.suffix != ".py")


def test_the_vocabulary_is_janus_own_copy(monkeypatch):
    monkeypatch.delenv("JANUS_CLIP_BPE", raising=False)
    assert tokenizer.default_bpe_path().resolve() == OWN / "clip_bpe" / tokenizer._BPE_NAME
    assert tokenizer.Tokenizer().bpe_path.resolve().is_relative_to(OWN)


@pytest.mark.parametrize("name", REFERENCE_FILES)
def test_every_reference_file_is_janus_own_copy(monkeypatch, name):
    monkeypatch.delenv("JANUS_REFERENCE_DIR", raising=False)
    assert reference.reference_path(name).resolve() == OWN / "reference" / name


def test_a_missing_vocabulary_is_an_error_not_another_packages_copy(monkeypatch, tmp_path):
    """Without janus' copy the tokenizer stops, naming the file, even where open_clip (which
    ships the same file) is installed."""
    monkeypatch.delenv("JANUS_CLIP_BPE", raising=False)
    monkeypatch.setattr(vendored, "path", lambda *parts: tmp_path.joinpath(*parts))
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "clip_bpe")):
        tokenizer.default_bpe_path()


def test_a_missing_reference_file_is_an_error_naming_it(monkeypatch, tmp_path):
    monkeypatch.delenv("JANUS_REFERENCE_DIR", raising=False)
    monkeypatch.setattr(vendored, "path", lambda *parts: tmp_path.joinpath(*parts))
    with pytest.raises(FileNotFoundError, match="janus_label_sets.json"):
        reference.reference_path("janus_label_sets.json")


def test_the_environment_overrides_are_explicit(monkeypatch, tmp_path):
    copy = tmp_path / "vocab.txt.gz"
    copy.write_bytes((OWN / "clip_bpe" / tokenizer._BPE_NAME).read_bytes())
    monkeypatch.setenv("JANUS_CLIP_BPE", str(copy))
    assert tokenizer.default_bpe_path() == copy
    monkeypatch.setenv("JANUS_CLIP_BPE", str(tmp_path / "missing.gz"))
    with pytest.raises(FileNotFoundError, match="JANUS_CLIP_BPE"):
        tokenizer.default_bpe_path()
    monkeypatch.setenv("JANUS_REFERENCE_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="JANUS_REFERENCE_DIR"):
        reference.reference_path("janus_label_sets.json")


@pytest.mark.skipif(not importlib.util.find_spec("open_clip"), reason="needs the torch extra")
def test_open_clips_copy_is_not_what_janus_loads(monkeypatch):
    monkeypatch.delenv("JANUS_CLIP_BPE", raising=False)
    theirs = pathlib.Path(importlib.util.find_spec("open_clip").origin).parent
    assert not tokenizer.default_bpe_path().resolve().is_relative_to(theirs)

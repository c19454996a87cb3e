"""Fuzzed inputs (hypothesis): nothing may hang or fail with anything but its documented error.

- the record reader on random byte changes and truncations of a shard and of its index:
  `CorruptRecordError` only (every read checks the length and payload CRCs);
- the caption cleaner and matcher, on arbitrary unicode: a result, never an exception;
- the CLIP tokenizer, on arbitrary unicode: [N, context] int32 ids, SOT first, EOT present;
- the config sweep string (`configs/x.py:k=v,...`): a config, or ConfigError, and
  validation of what it gives raises ConfigError only.

Examples are few (`max_examples`) and every test runs in seconds; the hypothesis database is
off so that a run does not depend on earlier ones.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from janus import config as config_lib
from janus.data import records, tfrecord

FUZZ = settings(
    max_examples=int(os.environ.get("JANUS_FUZZ_EXAMPLES", "100")),  # more: a longer hunt
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# ------------------------------------------------------------------------------ record reader

N_RECORDS = 5


@functools.cache
def _clean_shard() -> tuple[bytes, bytes]:
    """(shard bytes, index bytes) of a small valid shard."""
    d = tempfile.mkdtemp(prefix="janus_fuzz_")
    try:
        path = os.path.join(d, records.shard_name("train", 0, 1))
        w = tfrecord.ShardWriter(path)
        for i in range(N_RECORDS):
            w.write(
                records.encode_example(
                    {
                        "image/encoded": bytes(range(i, i + 40)),
                        "image/format": "png",
                        "label": [i],
                        "label/source": "human",
                        "caption": [f"a photo of thing {i}"],
                        "source": "fuzz",
                        "key": f"fuzz/{i}",
                    }
                )
            )
        w.close()
        with open(path, "rb") as f, open(path + ".index", "rb") as g:
            return f.read(), g.read()
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _damage(data: bytes, edits: list[tuple[int, int]], cut: int | None) -> bytes:
    b = bytearray(data)
    for pos, xor in edits:
        b[pos % len(b)] ^= xor
    if cut is not None:
        del b[cut % (len(b) + 1) :]
    return bytes(b)


def _read_everything(root: str) -> None:
    """Every way a shard is read: the data source (index or scan), the scanner, the indexer."""
    src = records.RecordsDataSource(root, "train")
    for i in range(len(src)):
        records.decode_example(src[i])
    path = src._paths[0]
    for _, payload in tfrecord.iter_tfrecord(path):
        records.decode_example(payload)
    tfrecord.build_index(path)


def test_clean_shard_reads():
    shard, index = _clean_shard()
    with tempfile.TemporaryDirectory() as root:
        path = os.path.join(root, records.shard_name("train", 0, 1))
        with open(path, "wb") as f:
            f.write(shard)
        with open(path + ".index", "wb") as f:
            f.write(index)
        src = records.RecordsDataSource(root, "train")
        assert len(src) == N_RECORDS
        _read_everything(root)


edits = st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(1, 255)), min_size=0, max_size=4)
cuts = st.none() | st.integers(0, 1 << 20)


@FUZZ
@given(
    target=st.sampled_from(["shard", "index", "both"]),
    shard_edits=edits,
    shard_cut=cuts,
    index_edits=edits,
    index_cut=cuts,
    with_index=st.booleans(),
)
def test_record_reader_on_damaged_shards(
    target, shard_edits, shard_cut, index_edits, index_cut, with_index
):
    shard, index = _clean_shard()
    if target in ("shard", "both"):
        shard = _damage(shard, shard_edits, shard_cut)
    if target in ("index", "both"):
        index = _damage(index, index_edits, index_cut)
    damaged = (shard, index) != _clean_shard()
    with tempfile.TemporaryDirectory() as root:
        path = os.path.join(root, records.shard_name("train", 0, 1))
        with open(path, "wb") as f:
            f.write(shard)
        if with_index:
            with open(path + ".index", "wb") as f:
                f.write(index)
        try:
            _read_everything(root)
        except tfrecord.CorruptRecordError:
            assert damaged
        else:
            # Undamaged bytes read back whole; a truncation at a record boundary is only seen
            # by the index (without one, the shorter shard is a valid shard).
            if with_index and (shard, index) != _clean_shard():
                assert shard == _clean_shard()[0][: len(shard)] and index != _clean_shard()[1]


# ------------------------------------------------------------------------------ captions


@functools.cache
def _matchers():
    from janus.data.ingest.matching import Matcher

    return [
        Matcher("clip", mode="single"),
        Matcher("clip+wordnet", mode="multiclass"),
        Matcher("clip", mode="strict", label_set="in100"),
        Matcher("clip", mode="strict", compat=True),
    ]


# Arbitrary unicode, and text built from the pieces the cleaner treats specially.
PIECES = st.sampled_from(
    ["tiger", "shark", "Tiger Sharks", " ", "'s", "http://x.y/z.jpg", "<b>", "&amp;", "&#", "de",
     "st", "1234", "a" * 31, "\u0130", "\u00df", "\ufb01", "\u200b", "\U0001f600", "\x00", "\n"]
)  # fmt: skip
TEXT = st.text() | st.lists(PIECES, max_size=30).map("".join)


@FUZZ
@given(text=TEXT)
def test_caption_cleaner_and_matcher_on_arbitrary_unicode(text):
    from janus.data.ingest import caption_clean

    for clean in (caption_clean.clean_caption, caption_clean.clean_caption_compat):
        out = clean(text)
        assert isinstance(out, str)
    for m in _matchers():
        r = m.match_detail(text)
        assert all(isinstance(i, int) and 0 <= i < 1000 for i in r.labels)
        assert (r.labels == []) == (r.reason is not None) or r.labels
        assert m.match(text) == r.labels


# ------------------------------------------------------------------------------ tokenizer


@functools.cache
def _tokenizer():
    from janus.data.input.tokenizer import Tokenizer

    return Tokenizer()


@FUZZ
@given(texts=st.lists(TEXT, min_size=1, max_size=3))
def test_tokenizer_on_arbitrary_unicode(texts):
    tok = _tokenizer()
    ids = tok(texts)
    assert ids.shape == (len(texts), 77) and ids.dtype == np.int32
    assert (ids[:, 0] == 49406).all()
    assert ((ids == 49407).sum(axis=1) == 1).all()  # exactly one EOT, also when truncated
    assert ((ids >= 0) & (ids < 49408)).all()
    for row in ids:
        eot = int(np.argmax(row == 49407))
        assert (row[eot + 1 :] == 0).all()


# ------------------------------------------------------------------------------ sweep strings

KEYS = sorted(config_lib.COMMON_SWEEP_KEYS)
VALUES = st.sampled_from(
    ["1", "0", "-1", "1e-3", "1/16", "1/0", "True", "None", "nan", "inf", "1e999", "abc", "",
     "[1, 2]", "{[]: 1}", "{1: 2}", "(", "'x'", "b'x'", "1j", "9" * 5000, "((((((((((((((((()"]
)  # fmt: skip
ITEM = st.tuples(st.sampled_from(KEYS) | st.text(max_size=8), VALUES | st.text(max_size=12))
SWEEP = st.lists(ITEM, max_size=5).map(lambda kv: ",".join(f"{k}={v}" for k, v in kv)) | st.text()


@FUZZ
@given(arg=SWEEP)
def test_sweep_string_parser(arg):
    try:
        assert isinstance(config_lib.parse_sweep_arg(arg), dict)
    except config_lib.ConfigError:
        pass
    try:
        c = config_lib.apply_sweep(config_lib.paper_config(), arg)
    except config_lib.ConfigError:
        return
    try:
        config_lib.validate(c, num_devices=8, check_data=False, check_registries=False)
    except config_lib.ConfigError:
        pass


@pytest.mark.parametrize(
    "arg", ["res=1e999", "batch={[]: 1}", "lr={[]: 1}", "seed=1e999", "batch=1/0", "lr"]
)
def test_sweep_values_that_broke_the_parser(arg):
    with pytest.raises(config_lib.ConfigError):
        c = config_lib.apply_sweep(config_lib.paper_config(), arg)
        config_lib.validate(c, num_devices=8, check_data=False, check_registries=False)

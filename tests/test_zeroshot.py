"""Zero-shot classifier math against a direct NumPy computation, and the class-embedding cache."""

import numpy as np
import pytest

from janus.evaluate import zeroshot


def test_class_embeddings_match_numpy():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(5, 3, 8))
    expect = np.stack(
        [
            (lambda m: m / np.linalg.norm(m))(
                np.mean([e / np.linalg.norm(e) for e in emb[c]], axis=0)
            )
            for c in range(5)
        ]
    )
    got = zeroshot.class_embeddings(emb)
    np.testing.assert_allclose(got, expect, rtol=1e-5, atol=1e-6)
    img = rng.normal(size=(4, 8))
    cos = (img / np.linalg.norm(img, axis=1, keepdims=True)) @ expect.T
    np.testing.assert_allclose(zeroshot.zeroshot_logits(img, got), 100 * cos, rtol=1e-4, atol=1e-4)


def test_build_pads_batches_and_keeps_class_major_order():
    calls = []
    vocab = {}

    def tokenize(texts):
        return np.array([[vocab.setdefault(t, len(vocab) + 1)] * 4 for t in texts], np.int32)

    def encode_text(tokens):
        calls.append(tokens.shape)
        return np.stack([np.eye(6)[t[0] % 6] + 0.1 for t in tokens])

    names, templates = ["cat", "dog", "eel"], ["a {}.", "the {}!"]
    w = zeroshot.build_class_embeddings(encode_text, tokenize, names, templates, batch_size=4)
    assert w.shape == (3, 6) and set(calls) == {(4, 4)}
    prompts = zeroshot.prompts(names, templates)
    assert prompts[:2] == ["a cat.", "the cat!"]
    emb = np.stack([np.eye(6)[vocab[p] % 6] + 0.1 for p in prompts]).reshape(3, 2, 6)
    np.testing.assert_allclose(w, zeroshot.class_embeddings(emb), atol=1e-6)


def test_cache_memory_and_disk(tmp_path):
    key = zeroshot.cache_key("ckpt/1", [1, 2], ["a {}."], ["x", "y"])
    assert key != zeroshot.cache_key("ckpt/2", [1, 2], ["a {}."], ["x", "y"])
    cache = zeroshot.ClassEmbeddingCache(str(tmp_path))
    value = cache.get(key, lambda: np.ones((2, 3)))
    assert cache.misses == 1 and (tmp_path / f"zs_{key}.npy").exists()
    cache.get(key, lambda: pytest.fail("rebuilt from memory"))
    again = zeroshot.ClassEmbeddingCache(str(tmp_path)).get(key, lambda: pytest.fail("rebuilt"))
    np.testing.assert_array_equal(value, again)
    small = zeroshot.ClassEmbeddingCache(None, keep=2)  # memory only, bounded
    for k in ("a", "b", "c"):
        small.get(k, lambda: np.zeros(1))
    assert list(small._mem) == ["b", "c"] and small.misses == 3


def test_templates_from_reference():
    labelsets = pytest.importorskip(
        "janus.data.labelsets", reason="RECORDS' labelsets not there yet"
    )
    assert len(labelsets.zeroshot_templates("openai80")) == 80
    assert len(labelsets.zeroshot_templates("openai7")) == 7
    assert labelsets.zeroshot_templates("single") == ["a photo of a {}."]


def test_weights_fingerprint_tracks_the_weights():
    a = {"params": {"w": np.ones((2, 3), np.float32), "b": np.zeros(3, np.float32)}}
    same = {"params": {"w": np.ones((2, 3), np.float32), "b": np.zeros(3, np.float32)}}
    changed = {"params": {"w": np.ones((2, 3), np.float32), "b": np.full(3, 1e-7, np.float32)}}
    fp = zeroshot.weights_fingerprint(a)
    assert fp == zeroshot.weights_fingerprint(same) != zeroshot.weights_fingerprint(changed)
    # The cache key changes with the weights, class set, templates and class names.
    keys = {
        zeroshot.cache_key(fp, [1, 2], ["a {}."], ["x", "y"]),
        zeroshot.cache_key(zeroshot.weights_fingerprint(changed), [1, 2], ["a {}."], ["x", "y"]),
        zeroshot.cache_key(fp, [1, 3], ["a {}."], ["x", "y"]),
        zeroshot.cache_key(fp, [1, 2], ["the {}."], ["x", "y"]),
        zeroshot.cache_key(fp, [1, 2], ["a {}."], ["x", "z"]),
    }
    assert len(keys) == 5

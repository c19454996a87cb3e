"""Zero-shot classification for VL models: the standard CLIP protocol.

Per class: embed every template filled with the class name, L2-normalise each embedding, average
over templates, L2-normalise again. Logits = 100 * cosine(image embedding, class embedding).
The class-embedding matrix is cached per (checkpoint, class set, templates, class names): in memory
and on disk (`<workdir>/eval/cache/zs_<hash>.npy`), since building it for 80 templates x
1000 classes is the slowest part of a zero-shot evaluation. The checkpoint enters the key as a hash
of its weights (`weights_fingerprint`), not its path: a workdir reused for a new run, or in-loop
evaluation of changing weights, can never pick up a stale matrix.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np

from janus.fileio import atomic_open

LOGIT_SCALE = 100.0


def l2_normalize(x, axis=-1, eps=1e-12):
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), eps)


def class_embeddings(prompt_emb: np.ndarray) -> np.ndarray:
    """[C, T, D] prompt embeddings -> [C, D]: normalise, mean over templates, renormalise."""
    return l2_normalize(l2_normalize(prompt_emb).mean(axis=1))


def zeroshot_logits(image_emb, class_emb):
    """100 * cosine similarity: image_emb [B, D] (any norm), class_emb [C, D] -> [B, C]."""
    return LOGIT_SCALE * l2_normalize(image_emb) @ np.asarray(class_emb, np.float32).T


def prompts(class_names: Sequence[str], templates: Sequence[str]) -> list[str]:
    """Class-major list of filled prompts: [c0 t0, c0 t1, ..., c1 t0, ...]."""
    return [t.format(name) for name in class_names for t in templates]


def build_class_embeddings(
    encode_text: Callable[[np.ndarray], np.ndarray],
    tokenize: Callable[[list[str]], np.ndarray],
    class_names: Sequence[str],
    templates: Sequence[str],
    batch_size: int = 256,
) -> np.ndarray:
    """Class-embedding matrix [C, D]. encode_text: int32 tokens [b, L] -> embeddings [b, D].

    Text batches are padded to `batch_size` so a jitted encoder compiles once.
    """
    texts = prompts(class_names, templates)
    out = []
    for start in range(0, len(texts), batch_size):
        chunk = texts[start : start + batch_size]
        tokens = np.asarray(tokenize(chunk), dtype=np.int32)
        n = len(chunk)
        if n < batch_size:
            tokens = np.concatenate([tokens, np.repeat(tokens[-1:], batch_size - n, 0)], 0)
        out.append(np.asarray(encode_text(tokens), dtype=np.float32)[:n])
    emb = np.concatenate(out, 0).reshape(len(class_names), len(templates), -1)
    return class_embeddings(emb)


def class_prompts(
    classes: Sequence[int], class_names: str = "clip", templates: str = "openai80"
) -> tuple[list[str], list[str]]:
    """-> (the names of `classes`, the templates): the evaluator's zero-shot protocol, by the names
    of `--class_names` (clip | wordnet | file) and `--templates` (openai80 | openai7 | single)."""
    from janus.data import labelsets

    names_all = labelsets.class_names(class_names)
    return [names_all[int(c)] for c in classes], labelsets.zeroshot_templates(templates)


def encode_classes(model, variables, config, names: Sequence[str], templates: Sequence[str]):
    """Class-embedding matrix [C, D] of a VL `model` with `variables`, tokenised with the
    context length of its checkpoint `config` (model.text.context_length, default 77)."""
    from janus.data.input.tokenizer import Tokenizer
    from janus.evaluate.inference import TextEncoder

    ctx = int(((config.get("model") or {}).get("text") or {}).get("context_length") or 77)
    return build_class_embeddings(TextEncoder(model, variables), Tokenizer(ctx), names, templates)


def weights_fingerprint(variables) -> str:
    """Hash of every array of a variables pytree (paths, dtypes, shapes and bytes)."""
    import jax

    h = hashlib.blake2b(digest_size=16)
    for path, leaf in jax.tree_util.tree_flatten_with_path(variables)[0]:
        arr = np.ascontiguousarray(np.asarray(leaf))
        h.update(f"{jax.tree_util.keystr(path)}|{arr.dtype}|{arr.shape}".encode())
        h.update(arr.data)
    return h.hexdigest()


def cache_key(
    weights: str, classes: Sequence[int], templates: Sequence[str], names: Sequence[str]
) -> str:
    """Key of one class-embedding matrix. weights: `weights_fingerprint` of the checkpoint."""
    blob = json.dumps([str(weights), [int(c) for c in classes], list(templates), list(names)])
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


class ClassEmbeddingCache:
    """On-disk cache of class-embedding matrices, with the most recent `keep` in memory (a
    watched run moves on to new weights, so older matrices are not needed in memory again)."""

    def __init__(self, cache_dir: str | None = None, keep: int = 16):
        self.cache_dir, self.keep = cache_dir, keep
        self._mem: OrderedDict[str, np.ndarray] = OrderedDict()
        self.hits = self.misses = 0

    def get(self, key: str, build: Callable[[], np.ndarray]) -> np.ndarray:
        if key in self._mem:
            self.hits += 1
            self._mem.move_to_end(key)
            return self._mem[key]
        path = os.path.join(self.cache_dir, f"zs_{key}.npy") if self.cache_dir else None
        if path and os.path.exists(path):
            self.hits += 1
            value = np.load(path)
        else:
            self.misses += 1
            value = np.asarray(build(), dtype=np.float32)
            if path:
                os.makedirs(self.cache_dir, exist_ok=True)
                with atomic_open(path) as f:  # a concurrent reader never sees half a file
                    np.save(f, value)
        self._mem[key] = value
        while len(self._mem) > self.keep:
            self._mem.popitem(last=False)
        return value

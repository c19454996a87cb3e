"""CLIP's byte-level BPE tokenizer, id-for-id the same as ``open_clip.tokenize`` (no torch needed).

The vocabulary is OpenAI CLIP's ``bpe_simple_vocab_16e6.txt.gz`` (MIT), shipped in the package as
``janus/vendored/clip_bpe/`` (source and licence: ``third_party/``); set ``JANUS_CLIP_BPE`` to use
another copy. The file loaded is named in the log.

Text cleaning follows open_clip's default ``clean="lower"``: ``ftfy.fix_text``, HTML-unescape twice,
collapse whitespace, lower-case. Speed comes from two things that do not change the ids:
- captions of printable ASCII without ``&`` skip ftfy/html (both are the identity on such text,
  which ``tests/test_tokenizer.py`` checks against the real functions), and
- the BPE merges of each pre-token are cached (captions reuse a small vocabulary of words).

Over-long captions are truncated like open_clip: keep the first ``context_length`` ids and overwrite
the last one with ``<end_of_text>``.
"""

from __future__ import annotations

import functools
import gzip
import html
import os
import pathlib
import re as _re

import ftfy
import numpy as np
import regex
from absl import logging

from janus import vendored

_BPE_NAME = "bpe_simple_vocab_16e6.txt.gz"
_NUM_MERGES = 49152 - 256 - 2  # the slice of the merge list CLIP uses
_SPECIAL_TOKENS = ("<start_of_text>", "<end_of_text>")
# Text on which ftfy.fix_text and html.unescape are both the identity: printable ASCII plus tab and
# newline, no '&' (HTML entities) -- everything ftfy would change lies outside this set.
_PLAIN_ASCII = _re.compile(r"[\t\n\x20-\x25\x27-\x7e]*")
_CACHE_LIMIT = 500_000


def default_bpe_path() -> pathlib.Path:
    """``$JANUS_CLIP_BPE`` if set, else the copy shipped in janus (`janus.vendored`); never another
    package's copy, so the ids cannot change with what else is installed."""
    override = os.environ.get("JANUS_CLIP_BPE")
    path = pathlib.Path(override) if override else vendored.path("clip_bpe", _BPE_NAME)
    if not path.exists():
        raise FileNotFoundError(
            f"CLIP BPE vocabulary {path} not found"
            + ("; JANUS_CLIP_BPE names it" if override else "; janus' install lacks its data files")
        )
    return path


@functools.cache
def bytes_to_unicode() -> dict[int, str]:
    """CLIP's reversible map from the 256 byte values to printable unicode characters."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def clean_text(text: str) -> str:
    """open_clip's ``clean="lower"``: ftfy, html unescape twice, collapse whitespace, lower-case."""
    if not _PLAIN_ASCII.fullmatch(text):
        text = html.unescape(html.unescape(ftfy.fix_text(text)))
    return " ".join(text.split()).lower()


class Tokenizer:
    """``Tokenizer()(texts) -> np.int32 [N, context_length]``, the ids of ``open_clip.tokenize``."""

    def __init__(self, context_length: int = 77, bpe_path: str | os.PathLike | None = None):
        if context_length < 2:
            raise ValueError(f"context_length must be >= 2 (SOT + EOT), got {context_length}")
        self.context_length = context_length
        self.bpe_path = pathlib.Path(bpe_path) if bpe_path else default_bpe_path()
        with gzip.open(self.bpe_path) as f:
            lines = f.read().decode("utf-8").split("\n")
        logging.info("CLIP BPE vocabulary: %s", self.bpe_path)
        merges = [tuple(line.split()) for line in lines[1 : _NUM_MERGES + 1]]
        byte_chars = list(bytes_to_unicode().values())
        vocab = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m) for m in merges]
        vocab += list(_SPECIAL_TOKENS)
        self.encoder = {tok: i for i, tok in enumerate(vocab)}
        self.decoder = {i: tok for tok, i in self.encoder.items()}
        self.bpe_ranks = {m: i for i, m in enumerate(merges)}
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {c: b for b, c in self.byte_encoder.items()}
        self.vocab_size = len(self.encoder)
        self.sot_token_id = self.encoder[_SPECIAL_TOKENS[0]]
        self.eot_token_id = self.encoder[_SPECIAL_TOKENS[1]]
        # Same pre-tokeniser as CLIP, special tokens first (a caption containing the literal text
        # "<end_of_text>" maps to that id in the reference too).
        self._pattern = regex.compile(
            "|".join(_SPECIAL_TOKENS)
            + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
            regex.IGNORECASE,
        )
        self._cache: dict[str, tuple[int, ...]] = {}
        self._reset_cache()

    def _reset_cache(self) -> None:
        self._cache = {t: (self.encoder[t],) for t in _SPECIAL_TOKENS}

    def __getstate__(self):
        # Pickled into grain worker processes: ship the small config, rebuild the tables there.
        return {"context_length": self.context_length, "bpe_path": str(self.bpe_path)}

    def __setstate__(self, state):
        self.__init__(state["context_length"], state["bpe_path"])

    def _bpe(self, token: str) -> tuple[int, ...]:
        """Ids of one pre-token (already mapped to byte-unicode characters), merges applied."""
        word = list(token[:-1]) + [token[-1] + "</w>"]
        ranks = self.bpe_ranks
        while len(word) > 1:
            # The lowest-rank adjacent pair is merged everywhere (left to right), as in CLIP.
            best, best_rank = None, None
            for pair in zip(word, word[1:]):
                rank = ranks.get(pair)
                if rank is not None and (best_rank is None or rank < best_rank):
                    best, best_rank = pair, rank
            if best is None:
                break
            first, second = best
            merged, i, n = [], 0, len(word)
            while i < n:
                if i < n - 1 and word[i] == first and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        return tuple(self.encoder[w] for w in word)

    def encode(self, text: str) -> list[int]:
        """BPE ids of one caption, without SOT/EOT and without truncation."""
        ids: list[int] = []
        cache, byte_encoder = self._cache, self.byte_encoder
        for token in self._pattern.findall(clean_text(text)):
            hit = cache.get(token)
            if hit is None:
                hit = self._bpe("".join(byte_encoder[b] for b in token.encode("utf-8")))
                if len(cache) >= _CACHE_LIMIT:  # bound memory on open-ended caption streams
                    self._reset_cache()
                cache[token] = hit
            ids.extend(hit)
        return ids

    def decode(self, ids) -> str:
        """Inverse of encode up to cleaning; special ids and padding zeros are dropped."""
        specials = {0, self.sot_token_id, self.eot_token_id}
        text = "".join(self.decoder[int(i)] for i in ids if int(i) not in specials)
        raw = bytearray(self.byte_decoder[c] for c in text)
        return raw.decode("utf-8", errors="replace").replace("</w>", " ").strip()

    def tokenize_one(self, text: str) -> np.ndarray:
        """``[context_length]`` int32: SOT, ids, EOT, zero padding (EOT kept when truncated)."""
        if not isinstance(text, str):
            raise TypeError(f"caption must be str, got {type(text).__name__}: {text!r:.80}")
        ids = [self.sot_token_id, *self.encode(text), self.eot_token_id]
        if len(ids) > self.context_length:
            ids = ids[: self.context_length]
            ids[-1] = self.eot_token_id
        out = np.zeros(self.context_length, np.int32)
        out[: len(ids)] = ids
        return out

    def __call__(self, texts: str | list[str]) -> np.ndarray:
        if isinstance(texts, str):
            texts = [texts]
        out = np.zeros((len(texts), self.context_length), np.int32)
        for i, text in enumerate(texts):
            out[i] = self.tokenize_one(text)
        return out


@functools.cache
def default_tokenizer(context_length: int = 77) -> Tokenizer:
    """A shared instance (loading the vocabulary takes ~0.3 s)."""
    return Tokenizer(context_length)

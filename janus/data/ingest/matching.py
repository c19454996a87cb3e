"""Caption -> ImageNet-1k label "subset matching", the JANuS paper's labelling of web data.

One job: the paper's caption -> label matching; long because of its three modes, the original
code's order (`compat`) and the synonym tables they share.

The paper labels LAION and YFCC this way. A caption is cleaned (`janus.data.ingest.caption_clean`)
and its words are lemmatised as nouns. A word n-gram (1 to 3 words) matches a class when it equals
one of the class's variants exactly. Each class name and synonym gives the variants: the name, its
plural, the name without spaces, and its words in reverse order, each lemmatised like the captions
(so "geese" matches "goose").

Default mode (janus):
- Matches are taken left to right, the longest n-gram first at each position, without overlap:
  "a tiger shark" is a tiger shark, not a tiger.
- The vocabulary always holds every class of the name list. A label set only drops the classes
  outside it after the scan, so an out-of-set "tiger shark" still keeps "tiger" from matching.
- A variant claimed by several classes (ImageNet's two "missile"s and two "sunglasses") maps to all
  of them, ascending: `single` takes the lowest index, `multiclass` takes all, `strict` rejects.
  This is what the original does with such names.
- Modes: `single` gives the first match; `multiclass` gives every distinct matched class, in order
  of first appearance; `strict` gives the one class when exactly one distinct class matched, and
  rejects otherwise (a class repeated is still one class).

Compat mode (`compat=True`) reproduces `in1k_hard_subset_match` of the paper's code (penfever's
open_clip fork, `src/training/clean_filter_captions.py`, the later version that rejects captions
under 5 characters). It has the original's quirks:
- its cleaner (`clean_caption_compat`);
- variants that are not lemmatised, with "+s" plurals and the reversed words joined without a
  space;
- every n-gram tried, shortest first: "a tiger shark" is a tiger;
- `strict` counts n-gram hits, not classes. Duplicate n-grams at the caption's end count too, so a
  class word in the last two positions is rejected;
- `multiclass` follows Python's `set` iteration order;
- only the label set's class names form the vocabulary, numbered locally like the original's `ds`
  list, then mapped back to ImageNet indices.
Two parts stay unverifiable:
- The lemmatiser: the original used NLTK's WordNet lemmatiser. Pass `lemmatizer="nltk"` where
  nltk's wordnet corpus is installed; the default compat lemmatiser is lemminflect's dictionary
  without out-of-vocabulary rules, which comes closest.
- Which name list the paper fed it.
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from itertools import compress
from typing import NamedTuple

from janus.data import labelsets
from janus.data.ingest import caption_clean as cc
from janus.fileio import atomic_write

MODES = ("single", "multiclass", "strict")
NAME_LISTS = ("clip", "wordnet", "clip+wordnet")
MAX_NGRAM = 3
TOKEN_CACHE_SIZE = 1 << 18  # distinct caption words a Matcher remembers (a few tens of MB)

# Reasons a caption gets no label (CoverageReport keys).
TOO_SHORT = "too_short"
NO_MATCH = "no_match"
OUTSIDE_LABEL_SET = "outside_label_set"
AMBIGUOUS = "ambiguous"
REASONS = (TOO_SHORT, NO_MATCH, OUTSIDE_LABEL_SET, AMBIGUOUS)


class MatchResult(NamedTuple):
    labels: list[int]  # ImageNet-1k indices; [] = rejected
    reason: str | None  # one of REASONS when rejected, else None
    cleaned: str  # the caption after cleaning


# --- class names -------------------------------------------------------------------------------


def _read_names_file(path: pathlib.Path) -> list[list[str]]:
    """A user file: JSON list (of names or lists of names), or one class per line, synonyms split
    by ", " (the layout of the original's metadata files). Line i (from 0) is class i."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        data = json.loads(text)
        if not isinstance(data, list):
            raise ValueError(
                f"class names file {path}: expected a JSON list, got {type(data).__name__}"
            )
        rows = [[row] if isinstance(row, str) else row for row in data]
    else:
        lines = text.splitlines()
        while lines and not lines[-1].strip():
            lines.pop()
        rows = [[s.strip() for s in line.split(", ")] for line in lines]
    for i, row in enumerate(rows):
        if not isinstance(row, list) or not any(isinstance(s, str) and s.strip() for s in row):
            raise ValueError(
                f"class names file {path}: entry {i} (line {i + 1}) has no name: {row!r}"
            )
    if len(rows) != labelsets.NUM_CLASSES:
        raise ValueError(
            f"class names file {path}: {len(rows)} classes, expected 1000 (one per line)"
        )
    return [[s for s in row if s.strip()] for row in rows]


@functools.cache
def _named_class_names(name: str) -> tuple[tuple[str, ...], ...]:
    clip = labelsets.class_names("clip") if "clip" in name else None
    syn = labelsets.synonyms() if "wordnet" in name else None
    rows = []
    for i in range(labelsets.NUM_CLASSES):
        row = ([clip[i]] if clip else []) + (list(syn[i]) if syn else [])
        rows.append(tuple(dict.fromkeys(row)))
    return tuple(rows)


def resolve_class_names(class_names: str | os.PathLike | Sequence) -> list[list[str]]:
    """Per class, the list of names to match: `clip` (CLIP's cleaned names), `wordnet` (WordNet
    synonyms), `clip+wordnet` (both), a file path, or a list (of names, or of lists of names)."""
    if isinstance(class_names, str) and class_names in NAME_LISTS:
        return [list(row) for row in _named_class_names(class_names)]
    if isinstance(class_names, str | os.PathLike):
        path = pathlib.Path(os.path.expanduser(os.fspath(class_names)))
        if not path.is_file():
            raise ValueError(
                f"class names {os.fspath(class_names)!r}: not one of {', '.join(NAME_LISTS)} "
                "and not an existing file"
            )
        return _read_names_file(path)
    rows = [[row] if isinstance(row, str) else list(row) for row in class_names]
    for i, row in enumerate(rows):
        if not row or not all(isinstance(s, str) for s in row):
            raise ValueError(f"class names: entry {i} must be a name or a non-empty list of names")
    if not rows:
        raise ValueError("class names: empty list")
    return rows


# --- variants ----------------------------------------------------------------------------------

_PAREN = re.compile(r"\([^()]*\)")
_SLASH = re.compile(r"\s+/\s+")
_OR = re.compile(r"\s+or\s+", re.IGNORECASE)


def name_alternatives(name: str) -> list[str]:
    """Split a CLIP-style name into the names it stands for.

    A parenthesis is a gloss and is dropped ("kite (bird of prey)" -> "kite"); " / " and " or "
    separate alternatives. In "X or Y Z" with a one-word X, X modifies Z like Y does
    ("vaulted or arched ceiling" -> "vaulted ceiling", "arched ceiling"): a lone "traffic" would
    label every traffic photo a street sign.
    """
    base = _PAREN.sub(" ", name).strip() or name
    out: list[str] = []
    for part in _SLASH.split(base):
        pieces = [p.strip() for p in _OR.split(part)]
        if len(pieces) == 2 and len(pieces[0].split()) == 1 and len(pieces[1].split()) > 1:
            pieces[0] = f"{pieces[0]} {pieces[1].split()[-1]}"
        out.extend(p for p in pieces if p)
    return out


def name_variants(
    name: str, lemmatize: Callable[[str], str], max_ngram: int = MAX_NGRAM
) -> set[tuple[str, ...]]:
    """Lemmatised word tuples a caption n-gram must equal to match `name` (janus mode)."""
    out: set[tuple[str, ...]] = set()
    for alt in name_alternatives(name):
        toks = cc.words(alt)
        if not toks:
            continue
        raw = [tuple(toks)]
        raw += [(*toks[:-1], p) for p in cc.plural_forms(lemmatize(toks[-1]))]
        if len(toks) > 1:
            raw += [("".join(toks),), tuple(reversed(toks))]
        for v in raw:
            # Captions lose numeric tokens in cleaning, so a variant holding one could never match.
            if len(v) <= max_ngram and not any(t.isnumeric() for t in v):
                out.add(tuple(lemmatize(t) for t in v))
    return out


def compat_variants(name: str) -> set[str]:
    """The original's five variants of a name (`ds_val_getter`), unlemmatised; its `reverse_words`
    joins the reversed words without a space."""
    t = name.lower().strip()
    rev = "".join(reversed(t.split()))
    # An empty variant would match the empty tokens that double spaces leave; names never are empty.
    return {t, rev, t + "s", t.replace(" ", ""), rev.replace(" ", "")} - {""}


# --- the matcher -------------------------------------------------------------------------------


class Matcher:
    """Labels captions with ImageNet-1k indices by subset matching (see the module docstring).

    Args:
      class_names: `clip` (default) | `wordnet` | `clip+wordnet` | path | list of names or of
        name lists.
      label_set: None (all classes), a label-set name or file (`janus.data.labelsets`), or indices.
      mode: `single` | `multiclass` | `strict`.
      compat: reproduce the original code's cleaning, variants and n-gram order.
      lemmatizer: registry name in `caption_clean.LEMMATIZERS` or a callable word -> lemma; default
        `lemminflect` (`lemminflect_dict` when compat). Called once per distinct word (the matcher
        caches what it returns), so it must be a pure function.
      max_ngram: longest n-gram tried (the paper: 3).
    """

    def __init__(
        self,
        class_names: str | os.PathLike | Sequence = "clip",
        label_set=None,
        mode: str = "single",
        compat: bool = False,
        *,
        lemmatizer: str | Callable[[str], str] | None = None,
        max_ngram: int = MAX_NGRAM,
    ):
        if mode not in MODES:
            raise ValueError(f"unknown matching mode {mode!r}: expected one of {', '.join(MODES)}")
        if max_ngram < 1:
            raise ValueError(f"max_ngram must be >= 1, got {max_ngram}")
        self.mode, self.compat, self.max_ngram = mode, bool(compat), int(max_ngram)
        self._names_arg = class_names if isinstance(class_names, str) else "custom"
        self._lemmatizer_arg = lemmatizer or ("lemminflect_dict" if compat else "lemminflect")
        self._lemma = cc.get_lemmatizer(self._lemmatizer_arg)
        rows = resolve_class_names(class_names)
        self.num_classes = len(rows)
        self.label_set = None if label_set is None else labelsets.resolve_label_set(label_set)
        if self.label_set is not None and self.label_set[-1] >= self.num_classes:
            raise ValueError(
                f"label_set index {int(self.label_set[-1])} is outside the "
                f"{self.num_classes} named classes"
            )
        self._in_set = None if self.label_set is None else frozenset(self.label_set.tolist())
        self._tokenize = cc.compat_caption_tokens if self.compat else cc.caption_tokens
        if self.compat:
            self._build_compat(rows)
        else:
            self._build(rows)

    # Vocabulary: variant -> the ascending tuple of classes claiming it.
    def _build(self, rows: list[list[str]]) -> None:
        claims: dict[tuple[str, ...], set[int]] = {}
        for cls, row in enumerate(rows):
            for name in row:
                for v in name_variants(name, self._lemma, self.max_ngram):
                    claims.setdefault(v, set()).add(cls)
        self._vocab = {v: tuple(sorted(c)) for v, c in claims.items()}
        self._trie = _word_trie(self._vocab.items())
        self._init_token_codes({w for v in self._vocab for w in v})
        matchable = {c for cs in self._vocab.values() for c in cs}
        self.unmatchable_classes = [c for c in range(self.num_classes) if c not in matchable]

    def _build_compat(self, rows: list[list[str]]) -> None:
        local = list(range(self.num_classes)) if self.label_set is None else self.label_set.tolist()
        claims: dict[str, list[int]] = {}
        for pos, cls in enumerate(local):
            for v in set().union(*(compat_variants(n) for n in rows[cls])):
                claims.setdefault(v, []).append(pos)
        self._compat_vocab = {v: tuple(c) for v, c in claims.items()}
        self._local = local
        # A caption n-gram is its tokens joined by single spaces, so it equals a variant exactly
        # when its tokens equal the variant split on single spaces.
        self._trie = _word_trie((v.split(" "), c) for v, c in self._compat_vocab.items())
        self._init_token_codes({w for v in self._compat_vocab for w in v.split(" ")})
        matchable = {local[p] for ps in self._compat_vocab.values() for p in ps}
        self.unmatchable_classes = [c for c in local if c not in matchable]

    # Token -> its lemma when some variant holds that lemma, else False ("inert": no n-gram through
    # it can match). Per matcher, since that depends on the vocabulary; a dict lookup per token
    # instead of a lemmatiser call, and captions made only of inert tokens skip the scan.
    def _init_token_codes(self, vocab_words: set[str]) -> None:
        self._vocab_words = frozenset(vocab_words)
        self._token_codes: dict[str, str | bool] = {}

    def _codes(self, toks: list[str]) -> list[str | bool]:
        codes = list(map(self._token_codes.get, toks))
        if None in codes:  # words not seen before
            for i, code in enumerate(codes):
                if code is None:
                    codes[i] = self._learn(toks[i])
        return codes

    def _learn(self, tok: str) -> str | bool:
        lemma = self._lemma(tok)
        code = lemma if lemma in self._vocab_words else False
        # Bounded: past the cap, new words still work, through the lemmatiser's own cache.
        if len(self._token_codes) < TOKEN_CACHE_SIZE:
            self._token_codes[tok] = code
        return code

    def __getstate__(self):
        # The token cache is rebuilt on use; pickles (to builder workers) stay small.
        return {**self.__dict__, "_token_codes": {}}

    # --- public API ---

    def clean(self, caption) -> str:
        return " ".join(self._tokenize(_as_text(caption)))

    def match(self, caption) -> list[int]:
        """ImageNet-1k indices matched in `caption`; [] when rejected."""
        return self._match_caption(caption)[0]

    def match_detail(self, caption) -> MatchResult:
        return MatchResult(*self._match_caption(caption))

    def _match_caption(self, caption) -> tuple[list[int], str | None, str]:
        toks = self._tokenize(_as_text(caption))
        cleaned = " ".join(toks)
        if len(cleaned) < cc.MIN_CAPTION_CHARS:
            return [], TOO_SHORT, cleaned
        codes = self._codes(toks)
        if codes.count(False) == len(codes):
            return [], NO_MATCH, cleaned
        labels, reason = self._match_compat(codes) if self.compat else self._match(codes)
        return labels, reason, cleaned

    def describe(self) -> dict:
        """JSON-able settings, for manifests and coverage reports."""
        lem = self._lemmatizer_arg
        return {
            "class_names": self._names_arg if isinstance(self._names_arg, str) else "custom",
            "label_set_size": None if self.label_set is None else int(self.label_set.size),
            "mode": self.mode,
            "compat": self.compat,
            "lemmatizer": lem if isinstance(lem, str) else getattr(lem, "__name__", "custom"),
            "max_ngram": self.max_ngram,
            "variants": len(self._compat_vocab if self.compat else self._vocab),
            "unmatchable_classes": list(self.unmatchable_classes),
        }

    # --- janus mode ---

    def scan(self, cleaned: str) -> Iterable[tuple[int, ...]]:
        """Claims (ascending class tuples) of the matched n-grams of a cleaned caption, left to
        right, longest first, without overlap; label set not applied."""
        return self._scan(self._codes(cleaned.split()))

    def _scan(self, codes: list[str | bool]) -> list[tuple[int, ...]]:
        trie, n = self._trie, len(codes)
        claims: list[tuple[int, ...]] = []
        resume = 0  # matches do not overlap
        # Only positions whose word starts a variant are visited (inert tokens, False, start none).
        for i in compress(range(n), map(trie.__contains__, codes)):
            if i < resume:
                continue
            node = trie[codes[i]]
            claim, end = node.get(CLAIM), i + 1
            # Walk the trie as far as the caption follows it; the last claim met is the longest.
            for j in range(i + 1, n):
                node = node.get(codes[j])
                if node is None:
                    break
                if CLAIM in node:
                    claim, end = node[CLAIM], j + 1
            if claim is not None:
                claims.append(claim)
                resume = end
        return claims

    def _match(self, codes: list[str | bool]) -> tuple[list[int], str | None]:
        in_set, found_any = self._in_set, False
        labels: dict[int, None] = {}  # insertion-ordered set
        for claim in self._scan(codes):
            found_any = True
            for c in claim:
                if in_set is None or c in in_set:
                    if self.mode == "single":
                        return [c], None
                    labels[c] = None
        if not labels:
            return [], (OUTSIDE_LABEL_SET if found_any else NO_MATCH)
        if self.mode == "strict" and len(labels) != 1:
            return [], AMBIGUOUS
        return list(labels), None

    # --- compat mode: `in1k_hard_subset_match`, a dict in place of its scan over all classes ---

    def _match_compat(self, codes: list[str | bool]) -> tuple[list[int], str | None]:
        trie, ngram, n, single = self._trie, self.max_ngram, len(codes), self.mode == "single"
        matches: list[int] = []
        for count in compress(range(n), map(trie.__contains__, codes)):
            node = trie
            for i in range(ngram):
                # Past the end the slice repeats the shorter n-gram (and its hit), as in the
                # original; otherwise the n-gram is one word longer.
                if count + i < n:
                    node = node.get(codes[count + i])
                    if node is None:
                        break  # no variant starts with this n-gram, nor with the longer ones
                claim = node.get(CLAIM)
                if claim:
                    if single:
                        return [self._local[claim[0]]], None
                    matches.extend(claim)
        if not matches:
            return [], NO_MATCH
        if self.mode == "strict":
            return ([self._local[matches[0]]], None) if len(matches) == 1 else ([], AMBIGUOUS)
        # The original returns ", ".join(set(matches)): CPython's set order over local indices.
        return [self._local[m] for m in set(matches)], None


CLAIM = None  # the trie key of a node's claim (caption words are strings, inert ones False)


def _word_trie(variants: Iterable[tuple[Sequence[str], tuple[int, ...]]]) -> dict:
    """Nested dicts, one level per word; the node a variant's words lead to holds its claim."""
    root: dict = {}
    for words, claim in variants:
        node = root
        for w in words:
            node = node.setdefault(w, {})
        node[CLAIM] = claim
    return root


def _as_text(caption) -> str:
    if isinstance(caption, str):
        return caption
    if isinstance(caption, bytes):
        return caption.decode("utf-8", errors="replace")
    if caption is None:
        return ""
    raise TypeError(f"caption must be str or bytes, got {type(caption).__name__}: {caption!r:.80}")


# --- the reverse direction -----------------------------------------------------------------------


def template_caption(label: int, template: str = "a photo of a {}.", class_names="clip") -> str:
    """A caption for a labelled image that has none: `template` with the class's (first) name."""
    rows = resolve_class_names(class_names)
    if template.count("{}") != 1:
        raise ValueError(f"template {template!r} must contain exactly one '{{}}'")
    label = int(label)
    if not 0 <= label < len(rows):
        raise ValueError(f"label {label} outside [0, {len(rows)})")
    return template.replace("{}", rows[label][0])


# --- coverage ------------------------------------------------------------------------------------


class CoverageReport:
    """Counts of a matching run: per source and per class, match rate, the first rejected captions
    per reason. `merge` adds up reports of parallel workers; `summary()` is JSON-serialisable."""

    def __init__(self, max_examples: int = 5, class_names: Sequence[str] | None = None):
        self.max_examples = int(max_examples)
        self.class_names = list(class_names) if class_names is not None else None
        self.captions: Counter[str] = Counter()  # per source
        self.matched: Counter[str] = Counter()
        self.rejected: dict[str, Counter[str]] = {}  # source -> reason -> n
        self.per_class: Counter[int] = Counter()
        self.num_labels: Counter[int] = Counter()  # labels per matched caption
        self.examples: dict[str, list[dict]] = {}

    def add(self, source: str, caption, labels: Sequence[int], reason: str | None = None) -> None:
        """Record one caption; `reason` (from `Matcher.match_detail`) says why [] was rejected."""
        self.captions[source] += 1
        if len(labels):
            self.matched[source] += 1
            self.num_labels[len(labels)] += 1
            self.per_class.update(int(c) for c in labels)
            return
        reason = reason or NO_MATCH
        self.rejected.setdefault(source, Counter())[reason] += 1
        ex = self.examples.setdefault(reason, [])
        if len(ex) < self.max_examples:
            ex.append({"source": source, "caption": _as_text(caption)})

    def merge(self, other: CoverageReport) -> CoverageReport:
        self.captions += other.captions
        self.matched += other.matched
        for src, reasons in other.rejected.items():
            self.rejected.setdefault(src, Counter()).update(reasons)
        self.per_class += other.per_class
        self.num_labels += other.num_labels
        for reason, ex in other.examples.items():
            mine = self.examples.setdefault(reason, [])
            mine.extend(ex[: max(0, self.max_examples - len(mine))])
        return self

    def summary(self) -> dict:
        total, matched = sum(self.captions.values()), sum(self.matched.values())
        rejected: Counter[str] = Counter()
        for reasons in self.rejected.values():
            rejected.update(reasons)

        def rate(m, n):
            return None if n == 0 else m / n

        per_class = {str(c): self.per_class[c] for c in sorted(self.per_class)}
        out = {
            "captions": total,
            "matched": matched,
            "match_rate": rate(matched, total),
            "classes_matched": len(self.per_class),
            "labels_per_caption": {str(k): self.num_labels[k] for k in sorted(self.num_labels)},
            "rejected": {r: rejected[r] for r in sorted(rejected)},
            "per_source": {
                src: {
                    "captions": self.captions[src],
                    "matched": self.matched[src],
                    "match_rate": rate(self.matched[src], self.captions[src]),
                    "rejected": dict(sorted(self.rejected.get(src, Counter()).items())),
                }
                for src in sorted(self.captions)
            },
            "per_class": per_class,
            "rejected_examples": {r: list(self.examples[r]) for r in sorted(self.examples)},
        }
        if self.class_names is not None:
            out["class_names"] = {k: self.class_names[int(k)] for k in per_class}
        return out

    def to_json(self, path: str | os.PathLike) -> None:
        """Write `summary()` atomically (temp file, then rename)."""
        atomic_write(path, json.dumps(self.summary(), indent=1, ensure_ascii=False) + "\n")

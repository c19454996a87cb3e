"""The fast paths of caption matching (byte-translated ASCII cleaning, the per-matcher token cache,
the word trie) give the labels of plain transcriptions: the cleaners as first written (regexes and
Unicode for every text), the longest-first scan over variant tuples, and the original
`in1k_hard_subset_match` loop. Checked on seeded web-like captions and hypothesis text."""

import html
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from janus.data import labelsets
from janus.data.ingest import caption_clean as cc
from janus.data.ingest import matching
from janus.data.ingest.matching import AMBIGUOUS, NO_MATCH, OUTSIDE_LABEL_SET, TOO_SHORT, Matcher

CLIP = labelsets.class_names("clip")
IDX = {name: i for i, name in enumerate(CLIP)}
# With one of each of ImageNet's two "missile"s and "sunglasses", which share their variants.
DOUBLED = [i for i, name in enumerate(CLIP) if name in ("missile", "sunglasses")][::2]
SINGLES = [IDX[n] for n in ("tiger", "goose", "great white shark", "crane bird")]
SMALL_SET = sorted(SINGLES + DOUBLED)

# --- plain references ----------------------------------------------------------------------------


def ref_clean(text: str) -> str:
    """`clean_caption` as first written: every regex on every caption, the Unicode path always."""
    text = cc._URL.sub(" ", cc._TAG.sub(" ", html.unescape(text)))
    text = cc.unicodedata.normalize("NFKC", text).lower()
    text = cc._NON_WORD.sub(" ", cc._APOSTROPHES.sub("", text))
    return " ".join(t for t in text.split() if len(t) < 30 and not t.isnumeric())


def ref_clean_compat(text) -> str:
    """The original `clean_captions`, step for step (str.translate for every text)."""
    cleaned = (
        str(text)
        .lower()
        .translate(cc._COMPAT_DELETE)
        .translate(cc._COMPAT_SPACE)
        .replace(" www ", " ")
        .replace(" com ", " ")
        .replace(" flickr ", " ")
        .replace(" st ", " street ")
        .replace(" de ", "")
        .replace("http", " ")
        .replace("href", " ")
        .strip()
    )
    return " ".join(c for c in cleaned.split(" ") if len(c) < 30 and not c.isnumeric())


def ref_match_janus(m: Matcher, caption: str) -> tuple:
    """janus mode without caches or trie: lemmatise every word, then at each position try the
    longest n-gram first against the variant tuples."""
    cleaned = ref_clean(caption)
    if len(cleaned) < cc.MIN_CAPTION_CHARS:
        return [], TOO_SHORT, cleaned
    toks = [m._lemma(t) for t in cleaned.split()]
    claims, i = [], 0
    while i < len(toks):
        for length in range(min(m.max_ngram, len(toks) - i), 0, -1):
            claim = m._vocab.get(tuple(toks[i : i + length]))
            if claim is not None:
                claims.append(claim)
                i += length
                break
        else:
            i += 1
    allowed = m._in_set
    labels = list(dict.fromkeys(c for cl in claims for c in cl if allowed is None or c in allowed))
    if not labels:
        return [], (OUTSIDE_LABEL_SET if claims else NO_MATCH), cleaned
    if m.mode == "single":
        return labels[:1], None, cleaned
    if m.mode == "strict" and len(labels) != 1:
        return [], AMBIGUOUS, cleaned
    return labels, None, cleaned


def _reference_match(caption, names, lemmatize, multiclass=False, strict=False, ngram=3):
    """A plain transcription of the original `in1k_hard_subset_match` with a list `ds`:
    every gram against every class, in order."""
    s = ref_clean_compat(caption)
    if len(s) < 5:
        return -1
    ds_values = {}
    for idx, name in enumerate(names):
        t = name.lower().strip()
        rev = "".join(reversed(t.split()))
        ds_values[idx] = list({t, rev, t + "s", t.replace(" ", ""), rev.replace(" ", "")})
    s = [lemmatize(t) for t in s.split(" ")]
    grams = []
    for count, _ in enumerate(s):
        for i in range(ngram):
            if count + i - 1 > len(s):
                continue
            grams.append(" ".join(w for w in s[count : count + i + 1]))
    matches = []
    for gram in grams:
        for idx, val in enumerate(ds_values.values()):
            if gram in val:
                if multiclass or strict:
                    matches.append(idx)
                else:
                    return idx
    if matches == []:
        return -1
    elif strict and len(matches) != 1:
        return -1
    elif multiclass:
        return [m for m in set(matches)]
    return matches[0]


def _as_labels(ref) -> list[int]:
    return [] if ref == -1 else (ref if isinstance(ref, list) else [ref])


# --- seeded web-like captions --------------------------------------------------------------------

FILLER = "a the of photo my new in on with and for sale street beach black white set day".split()
ODD = [
    *"  , - _ 1999 2 de St. www com flickr href tiger shark sharks geese dog's".split(" "),
    "http://x.org/a.jpg", "www.Foo.com/x", "<b>", "</i>", "&amp;", "&eacute;t&eacute;", "Café",
    "\uff34\uff29\uff27\uff25\uff32", "\u0130stanbul", "na\u00efve", "x" * 31, "a\u200bb",
]  # fmt: skip


def web_captions(n: int, seed: int) -> list[str]:
    """Filler words, odd pieces (markup, URLs, numbers, non-ASCII, the compat cleaner's special
    words) and 0 to 2 CLIP class names, plural, hyphenated, reversed, joined or upper case."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = rng.choices(FILLER, k=rng.randint(0, 8)) + rng.choices(ODD, k=rng.randint(0, 3))
        for _ in range(rng.choice((0, 1, 1, 2))):
            name, form = rng.choice(CLIP), rng.randrange(6)
            name = [
                name,
                name + "s",
                name.replace(" ", "-"),
                " ".join(reversed(name.split())),
                name.replace(" ", ""),
                name.upper(),
            ][form]
            words.insert(rng.randrange(len(words) + 1), name)
        out.append(rng.choice((" ", "  ", ", ")).join(words))
    return out


CAPTIONS = web_captions(1500, seed=0)
PIECES = st.sampled_from([*FILLER, *ODD, " ", "Tiger Sharks", "'s", "\n", "\x00", "\u00df"])
TEXT = (
    st.text(max_size=60)
    | st.text(st.characters(max_codepoint=127), max_size=60)
    | st.lists(PIECES, max_size=15).map(" ".join)
)


# --- cleaning ------------------------------------------------------------------------------------


def test_cleaners_equal_reference_on_web_captions():
    for caption in CAPTIONS:
        assert cc.clean_caption(caption) == ref_clean(caption), caption
        assert cc.clean_caption_compat(caption) == ref_clean_compat(caption), caption


@given(TEXT)
@settings(max_examples=500, deadline=None)
def test_cleaners_equal_reference_on_any_text(text):
    assert cc.clean_caption(text) == ref_clean(text)
    assert cc.clean_caption_compat(text) == ref_clean_compat(text)
    assert cc.words(text) == cc._words_general(text)


def test_class_name_words_equal_reference():
    for row in labelsets.synonyms():
        for name in row:
            assert cc.words(name) == cc._words_general(name), name


# --- matching ------------------------------------------------------------------------------------


@pytest.mark.parametrize("class_names", ["clip", "clip+wordnet"])
@pytest.mark.parametrize("label_set", [None, SMALL_SET])
@pytest.mark.parametrize("mode", matching.MODES)
def test_janus_matcher_equals_reference(mode, label_set, class_names):
    m = Matcher(class_names, label_set=label_set, mode=mode)
    want = [ref_match_janus(m, c) for c in CAPTIONS]
    for _ in range(2):  # the first pass fills the token cache, the second reads it
        assert [tuple(m.match_detail(c)) for c in CAPTIONS] == want
    assert sum(bool(w[0]) for w in want) > 100  # the captions do exercise matches


@pytest.mark.parametrize("label_set", [None, SMALL_SET])
@pytest.mark.parametrize("mode", matching.MODES)
def test_compat_matcher_equals_original_on_clip_names(mode, label_set):
    names = CLIP if label_set is None else [CLIP[i] for i in label_set]
    local = range(1000) if label_set is None else label_set
    m = Matcher(label_set=label_set, mode=mode, compat=True)
    lem = cc.lemma_lemminflect_dict
    kwargs = {"multiclass": mode == "multiclass", "strict": mode == "strict"}
    sample = CAPTIONS[:120] if label_set is None else CAPTIONS  # the reference is slow on 1000
    hits = 0
    for caption in sample:
        want = [local[i] for i in _as_labels(_reference_match(caption, names, lem, **kwargs))]
        hits += bool(want)
        assert m.match(caption) == want, caption
    assert hits > 10


def test_token_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(matching, "TOKEN_CACHE_SIZE", 3)
    m = Matcher(mode="multiclass")
    got = [m.match(c) for c in CAPTIONS[:200]]
    assert len(m._token_codes) == 3
    assert got == [ref_match_janus(m, c)[0] for c in CAPTIONS[:200]]


# Real names at scattered indices (fillers elsewhere), so multiclass meets CPython's set order
# that is not sorted order (e.g. set([17, 3]) iterates 17 first).
REF_NAMES = [f"filler{i}" for i in range(30)]
for _i, _name in zip(
    (17, 3, 9, 20, 11, 12, 26),
    ("tiger", "tiger shark", "great white shark", "goose", "crane", "crane", "white wolf"),
):
    REF_NAMES[_i] = _name
REF_WORDS = [
    *"tiger shark great white goose geese crane wolf sharks the a".split(),
    "",
    "1999",
    "de",
]


@given(st.lists(st.sampled_from(REF_WORDS), max_size=10), st.sampled_from(["single", "multiclass"]))
@settings(max_examples=300, deadline=None)
def test_compat_equals_original_transcription(words, mode):
    caption = " ".join(words)
    lem = cc.lemma_lemminflect_dict
    for m_mode, kwargs in (
        (mode, {"multiclass": mode == "multiclass"}),
        ("strict", {"strict": True}),
    ):
        got = _REF_MATCHERS[m_mode].match(caption)
        want = _as_labels(_reference_match(caption, REF_NAMES, lem, **kwargs))
        assert got == want, (caption, m_mode)


_REF_MATCHERS = {
    m: Matcher(REF_NAMES, mode=m, compat=True) for m in ("single", "multiclass", "strict")
}

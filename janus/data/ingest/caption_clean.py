"""Caption text normalisation for caption -> label matching: cleaning and noun lemmatisation.

Two cleaners:
- `clean_caption` (janus' default): unescape HTML, drop tags and URLs, NFKC + lowercase, delete
  apostrophes (so "dog's" -> "dogs" -> lemma "dog"), every other non-alphanumeric character ->
  space, drop numeric tokens and tokens of 30+ characters, single spaces. Idempotent.
  ASCII text, the common case, takes a byte-translation path that gives the same result.
- `clean_caption_compat`: a transcription of `clean_captions` in the paper's code (penfever's
  open_clip fork, `src/training/clean_filter_captions.py`), quirks included (" de " is deleted and
  joins its neighbours, double spaces survive as empty tokens), so `Matcher(compat=True)`
  regenerates its labels.

Lemmatisers (registry `LEMMATIZERS`, name -> word -> lemma) reduce nouns to their singular, offline:
- `lemminflect` (default): lemminflect's noun lemma, with its rules for out-of-vocabulary words.
- `lemminflect_dict`: the same dictionary without the out-of-vocabulary rules, i.e. unknown words
  stay as they are. This is how NLTK's WordNet lemmatiser, the original's, behaves. The two
  dictionaries differ in places, so this is the one part of compat mode that cannot be made exact
  offline.
- `nltk`: NLTK's WordNetLemmatizer, only if nltk and its `wordnet` corpus are already installed
  (janus never downloads it); the original's exact lemmatiser.
- `none`: identity.
"""

from __future__ import annotations

import functools
import html
import re
import string
import unicodedata
from collections.abc import Callable

MIN_CAPTION_CHARS = 5  # cleaned captions shorter than this are rejected (as in the original)
MAX_TOKEN_CHARS = 30  # tokens of this many characters or more are dropped (as in the original)

_TAG = re.compile(r"<[^<>]*>")
_URL = re.compile(r"(?:\b[a-z][a-z0-9+.-]*://|\bwww\.)\S*", re.IGNORECASE)
_APOSTROPHES = re.compile("['\u2019\u2018\u02bc`]")
# \w minus "_" keeps letters and digits of every script; everything else separates words.
_NON_WORD = re.compile(r"[\W_]+")


def _ascii_table(mapping: dict[str, str]) -> bytes:
    """A `bytes.translate` table: ASCII characters in `mapping` to their value, others unchanged."""
    table = bytearray(range(256))
    for char, out in mapping.items():
        table[ord(char)] = ord(out)
    return bytes(table)


# For ASCII text, `words` in one byte translation: ASCII is NFKC-invariant, so what is left is
# lowercasing, deleting the ASCII apostrophes and turning every other non-alphanumeric into a space.
_ASCII_APOSTROPHES = b"'`"
_ASCII_WORDS = _ascii_table(
    {chr(i): chr(i).lower() if chr(i).isalnum() else " " for i in range(128)}
)


def words(text: str) -> list[str]:
    """Lowercase words of a text: NFKC, apostrophes deleted, other non-alphanumerics split words.

    Class names go through this too (without the caption-only steps), so both sides compare alike.
    """
    if text.isascii():  # the common case, about 10x faster than the general path
        return text.encode().translate(_ASCII_WORDS, _ASCII_APOSTROPHES).decode().split()
    return _words_general(text)


def _words_general(text: str) -> list[str]:
    # NFKC folds compatibility forms (full-width letters, ligatures) before lowercasing.
    text = unicodedata.normalize("NFKC", text).lower()
    text = _APOSTROPHES.sub("", text)
    return _NON_WORD.sub(" ", text).split()


def caption_tokens(text: str) -> list[str]:
    """The tokens of `clean_caption(text)`, which joins them with single spaces."""
    text = html.unescape(text)
    # The regexes only run where they can match (a tag needs "<", a URL "://" or "www." in any
    # case): most captions hold neither.
    if "<" in text:
        text = _TAG.sub(" ", text)
    if "://" in text or "www." in text.lower():
        text = _URL.sub(" ", text)
    return [t for t in words(text) if len(t) < MAX_TOKEN_CHARS and not t.isnumeric()]


def clean_caption(text: str) -> str:
    """janus' caption cleaning (see the module docstring); returns space-joined tokens."""
    return " ".join(caption_tokens(text))


# The original's character tables, copied from its source text: deleted, then mapped to a space.
# ('\©' in the original is an unknown escape, i.e. a backslash and a copyright sign.)
_COMPAT_DELETE = str.maketrans("", "", '&<^*>\\|+=[]~`"@/\'\\©#)("')
_COMPAT_SPACE = str.maketrans({c: " " for c in ":;-_.,!?\n"})


# The same three steps (lowercase, delete, map to a space) for ASCII text in one byte translation;
# none of the characters involved is a letter, so the order does not matter.
_COMPAT_ASCII_DELETE = bytes(c for c in _COMPAT_DELETE if c < 128)
_COMPAT_ASCII = _ascii_table(
    {**{c: c.lower() for c in string.ascii_uppercase}, **{chr(c): " " for c in _COMPAT_SPACE}}
)


def _compat_fold(text: str) -> str:
    if text.isascii():
        return text.encode().translate(_COMPAT_ASCII, _COMPAT_ASCII_DELETE).decode()
    return _compat_fold_general(text)


def _compat_fold_general(text: str) -> str:
    return text.lower().translate(_COMPAT_DELETE).translate(_COMPAT_SPACE)


def compat_caption_tokens(text: str) -> list[str]:
    """The tokens of `clean_caption_compat(text)`, empty ones included (split on single spaces)."""
    cleaned = (
        _compat_fold(str(text))
        .replace(" www ", " ")
        .replace(" com ", " ")
        .replace(" flickr ", " ")
        .replace(" st ", " street ")
        .replace(" de ", "")
        .replace("http", " ")
        .replace("href", " ")
        .strip()
    )
    # split(" ") rather than split(): runs of spaces leave empty tokens, which the matcher sees.
    return [c for c in cleaned.split(" ") if len(c) < MAX_TOKEN_CHARS and not c.isnumeric()]


def clean_caption_compat(text: str) -> str:
    """The original `clean_captions`, step for step.

    This follows its later version, which no longer truncates captions to 49 tokens.
    """
    return " ".join(compat_caption_tokens(text))


# --- lemmatisers -------------------------------------------------------------------------------
# Caches are per word and module level, so millions of captions pay for each distinct word once
# and a pickled Matcher (grain workers) refers to them by name.


@functools.lru_cache(maxsize=1 << 20)
def lemma_lemminflect(word: str) -> str:
    if not word:
        return word
    import lemminflect  # data ships in the wheel; imported lazily to keep `import janus` light

    lemmas = lemminflect.getLemma(word, upos="NOUN")
    return lemmas[0] if lemmas else word


@functools.lru_cache(maxsize=1 << 20)
def lemma_lemminflect_dict(word: str) -> str:
    if not word:
        return word
    import lemminflect

    lemmas = lemminflect.getLemma(word, upos="NOUN", lemmatize_oov=False)
    return lemmas[0] if lemmas else word


@functools.cache
def _nltk_lemmatizer():
    try:
        import nltk
        from nltk.stem import WordNetLemmatizer
    except ImportError as e:
        raise RuntimeError("lemmatizer 'nltk' needs the nltk package (pip install nltk)") from e
    try:
        nltk.data.find("corpora/wordnet")
    except LookupError:
        raise RuntimeError(
            "lemmatizer 'nltk' needs NLTK's wordnet corpus installed beforehand "
            "(python -m nltk.downloader wordnet); janus never downloads it at run time"
        ) from None
    return WordNetLemmatizer()


@functools.lru_cache(maxsize=1 << 20)
def lemma_nltk(word: str) -> str:
    return _nltk_lemmatizer().lemmatize(word)


def _identity(word: str) -> str:
    return word


LEMMATIZERS: dict[str, Callable[[str], str]] = {
    "lemminflect": lemma_lemminflect,
    "lemminflect_dict": lemma_lemminflect_dict,
    "nltk": lemma_nltk,
    "none": _identity,
}


def get_lemmatizer(name_or_fn: str | Callable[[str], str]) -> Callable[[str], str]:
    """A lemmatiser by registry name, or a callable word -> lemma passed through."""
    if callable(name_or_fn):
        return name_or_fn
    try:
        fn = LEMMATIZERS[name_or_fn]
    except KeyError:
        raise ValueError(
            f"unknown lemmatizer {name_or_fn!r}: expected one of {', '.join(LEMMATIZERS)} "
            "or a callable"
        ) from None
    if fn is lemma_nltk:
        _nltk_lemmatizer()  # fail now, with the install hint, rather than on the first caption
    return fn


@functools.lru_cache(maxsize=1 << 16)
def plural_forms(word: str) -> tuple[str, ...]:
    """Plural spellings of a noun: lemminflect's inflections, else the original's naive '+s'."""
    import lemminflect

    forms = lemminflect.getInflection(word, tag="NNS") if word else ()
    return tuple(forms) or (word + "s",)

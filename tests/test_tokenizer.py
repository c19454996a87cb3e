"""CLIP BPE tokenizer: id-for-id parity with open_clip.tokenize, truncation, the ASCII fast path."""

import html
import pickle
import string

import ftfy
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from janus.data.input.tokenizer import Tokenizer, clean_text, default_tokenizer

CORPUS = [
    "a photo of a dog.",
    "A PHOTO of a Golden Retriever, sitting on the grass!!!",
    "Hello, world... it's a dog's life; they're here, we've won, I'm in, you'll see, he'd go",
    "punctuation: (brackets) [square] {curly} <angle> @#$%^*_+=~`|\\/?",
    "café naïve résumé façade — “curly quotes” ‘single’ … ½ ﬁ ligature",
    "emoji 🐶🐱👍🏽 ❤️ 🇫🇷 and CJK 中文字符 日本語のテキスト 한국어",
    "Ελληνικά кириллица עברית العربية हिन्दी",
    "  lots   of\twhitespace\n\nand\r\nline breaks  ",
    "&amp; &lt;b&gt;bold&lt;/b&gt; &amp;amp; &quot;html&quot; &#39;entities&#39; &nbsp;x",
    "mojibake: cafÃ© donâ€™t",
    "",
    "   ",
    "numbers 1234567890 3.14159 $5.00 1st 2nd 100%",
    "literal special tokens <start_of_text> and <end_of_text> inside",
    "don’t wasn't I'LL WE'VE",
    "word " * 100,
    "supercalifragilisticexpialidocious " * 20,
    "\x00\x0b control\x1b[31m red \x7f chars",
]


def test_vocab_and_specials():
    tok = default_tokenizer()
    assert tok.vocab_size == 49408
    assert (tok.sot_token_id, tok.eot_token_id) == (49406, 49407)


def test_shape_padding_and_truncation():
    tok = default_tokenizer()
    out = tok(["a dog", "word " * 200])
    assert out.shape == (2, 77) and out.dtype == np.int32
    assert out[0, 0] == tok.sot_token_id
    n = int((out[0] != 0).sum())
    assert out[0, n - 1] == tok.eot_token_id and (out[0, n:] == 0).all()
    # Over-long: 77 ids, the last one EOT (open_clip's default truncation).
    assert (out[1] != 0).all() and out[1, -1] == tok.eot_token_id
    short = Tokenizer(context_length=8)(["one two three four five six seven eight"])
    assert short.shape == (1, 8) and short[0, -1] == tok.eot_token_id


def test_decode_roundtrip():
    tok = default_tokenizer()
    assert tok.decode(tok("A Photo of a CAT!")[0]) == "a photo of a cat !"


def test_pickle_rebuilds():
    tok = pickle.loads(pickle.dumps(Tokenizer(context_length=16)))
    assert tok.context_length == 16
    np.testing.assert_array_equal(tok(CORPUS), Tokenizer(16)(CORPUS))


def test_non_string_is_an_error():
    with pytest.raises(TypeError, match="caption must be str"):
        default_tokenizer()([b"bytes"])


_PRINTABLE_NO_AMP = st.text(
    alphabet=st.sampled_from([c for c in string.printable if c not in "&\r\x0b\x0c"]), max_size=60
)


@settings(max_examples=300, deadline=None)
@given(_PRINTABLE_NO_AMP)
def test_ascii_fast_path_is_identity_of_ftfy_and_html(text):
    # The tokenizer skips ftfy/html on exactly this kind of text; they must not change it.
    assert ftfy.fix_text(text) == text
    assert html.unescape(text) == text


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_clean_text_matches_reference_cleaning(text):
    reference = " ".join(html.unescape(html.unescape(ftfy.fix_text(text))).strip().split())
    assert clean_text(text) == reference.lower()


def _open_clip():
    pytest.importorskip("torch", reason="open_clip (the reference) needs torch")
    return pytest.importorskip("open_clip")


def test_parity_with_open_clip_on_corpus():
    open_clip = _open_clip()
    ours = default_tokenizer()(CORPUS)
    ref = open_clip.tokenize(CORPUS).numpy()
    for i, text in enumerate(CORPUS):
        np.testing.assert_array_equal(ours[i], ref[i], err_msg=repr(text))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.text(max_size=120), min_size=1, max_size=4))
def test_parity_with_open_clip_on_random_text(texts):
    open_clip = _open_clip()
    np.testing.assert_array_equal(default_tokenizer()(texts), open_clip.tokenize(texts).numpy())

"""CLIP text tower: shapes, causality, EOT pooling, bf16, and parity with open_clip."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from janus.convert.open_clip_text import convert_text_state_dict, text_config_from_state_dict
from janus.models.text import TextTransformer

TINY = dict(vocab_size=100, context_length=16, width=64, layers=2, heads=4, output_dim=32)


def _tokens(batch, context, vocab, seed=0):
    """CLIP-like token rows: SOT, random words, EOT (the highest id), zero padding."""
    rng = np.random.default_rng(seed)
    toks = np.zeros((batch, context), np.int32)
    for i in range(batch):
        n = int(rng.integers(1, context - 1))
        toks[i, 0] = vocab - 2
        toks[i, 1 : n + 1] = rng.integers(1, vocab - 2, size=n)
        toks[i, min(n + 1, context - 1)] = vocab - 1
    return toks


@pytest.fixture(scope="module")
def tiny():
    model = TextTransformer(**TINY)
    tokens = _tokens(4, TINY["context_length"], TINY["vocab_size"])
    params = jax.jit(model.init)(jax.random.key(0), tokens)["params"]
    return model, params, tokens


def test_shapes_and_param_names(tiny):
    model, params, tokens = tiny
    out = model.apply({"params": params}, tokens)
    assert out.shape == (4, 32) and out.dtype == jnp.float32
    assert params["token_embedding"]["embedding"].shape == (100, 64)
    assert params["positional_embedding"].shape == (16, 64)
    assert params["resblocks_1"]["attn"]["in_proj"]["kernel"].shape == (64, 192)
    assert params["resblocks_0"]["mlp"]["c_fc"]["kernel"].shape == (64, 256)
    assert params["text_projection"].shape == (64, 32)
    assert set(params) == {
        "token_embedding",
        "positional_embedding",
        "resblocks_0",
        "resblocks_1",
        "ln_final",
        "text_projection",
    }
    assert model.feature_dim == 32


def test_default_is_openai_rn50_text_tower():
    m = TextTransformer()
    assert (m.width, m.layers, m.heads, m.context_length, m.vocab_size) == (512, 12, 8, 77, 49408)
    assert m.activation == "quick_gelu"
    shapes = jax.eval_shape(m.init, jax.random.key(0), jnp.zeros((1, 77), jnp.int32))
    n = sum(x.size for x in jax.tree.leaves(shapes))
    block = 2 * 2 * 512 + (512 * 1536 + 1536) + (512 * 512 + 512) + (512 * 2048 + 2048) * 2 - 1536
    assert block == 3_152_384  # one open_clip ResidualAttentionBlock at width 512
    assert n == 49408 * 512 + 77 * 512 + 12 * block + 2 * 512 + 512 * 512


def test_causal_and_eot_pooling(tiny):
    """Tokens after EOT must not change the output; tokens before it must."""
    model, params, tokens = tiny
    apply = jax.jit(model.apply)
    out = apply({"params": params}, tokens)
    eot = tokens.argmax(-1)
    after = tokens.copy()
    for i, e in enumerate(eot):
        after[i, e + 1 :] = 7  # < EOT id, so pooling position is unchanged
    np.testing.assert_allclose(apply({"params": params}, after), out, atol=1e-6)
    before = tokens.copy()
    before[:, 1] = (before[:, 1] % 50) + 3
    assert not np.allclose(apply({"params": params}, before), out, atol=1e-4)


def test_bf16_compute_close_to_fp32(tiny):
    model, params, tokens = tiny
    out32 = jax.jit(model.apply)({"params": params}, tokens)
    bf = TextTransformer(**TINY, dtype=jnp.bfloat16)
    out16 = jax.jit(bf.apply)({"params": params}, tokens)
    assert out16.dtype == jnp.float32
    np.testing.assert_allclose(out16, out32, atol=0.05 * float(jnp.abs(out32).max()))


def test_bad_inputs():
    with pytest.raises(ValueError, match="context_length"):
        TextTransformer(**TINY).init(jax.random.key(0), jnp.zeros((1, 17), jnp.int32))
    with pytest.raises(ValueError, match="activation"):
        TextTransformer(**{**TINY, "activation": "relu6"}).init(
            jax.random.key(0), jnp.zeros((1, 4), jnp.int32)
        )


def test_converter_rejects_unknown_keys():
    sd = {"token_embedding.weight": np.zeros((3, 2)), "transformer.resblocks.0.attn.q.weight": 0}
    with pytest.raises(KeyError, match="resblocks.0.attn.q.weight"):
        convert_text_state_dict(sd)


@pytest.mark.torch
@pytest.mark.parametrize("quick_gelu", [True, False])
def test_parity_with_open_clip(quick_gelu):
    torch = pytest.importorskip("torch", reason="open_clip parity needs the torch extra")
    open_clip_tf = pytest.importorskip("open_clip.transformer", reason="needs open_clip_torch")
    from open_clip.transformer import QuickGELU

    torch.manual_seed(0)
    ref = open_clip_tf.TextTransformer(
        context_length=16,
        vocab_size=100,
        width=64,
        heads=4,
        layers=2,
        output_dim=32,
        act_layer=QuickGELU if quick_gelu else torch.nn.GELU,
    ).eval()
    # open_clip zero-initialises some biases and leaves LN at identity; randomise them so the
    # comparison exercises every parameter's layout.
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if name.endswith("bias") or "ln_" in name:
                p.add_(0.1 * torch.randn_like(p))
    sd = {k: v.detach().numpy() for k, v in ref.state_dict().items()}
    activation = "quick_gelu" if quick_gelu else "gelu"
    params = convert_text_state_dict(sd, activation=activation)
    cfg = text_config_from_state_dict(sd, activation=activation)
    # heads is a width // 64 guess (1 here); everything else comes from the weights.
    assert cfg == {**TINY, "heads": 1, "mlp_ratio": 4.0, "activation": activation}
    model = TextTransformer(**{**cfg, "heads": 4})
    tokens = _tokens(5, 16, 100, seed=1)
    with torch.no_grad():
        want = ref(torch.from_numpy(tokens.astype(np.int64))).numpy()
    got = np.asarray(jax.jit(model.apply)({"params": params}, tokens))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    # The same weights under a full CLIP prefix layout also load.
    prefixed = {"text." + k: v for k, v in sd.items()} | {"logit_scale": np.float32(2.0)}
    jax.tree.map(np.testing.assert_array_equal, convert_text_state_dict(prefixed), params)

"""open_clip text tower -> `janus.models.text.TextTransformer` params (names documented in text.py).

``token_embedding.weight`` -> ``token_embedding/embedding``; ``positional_embedding``;
``transformer.resblocks.i.{ln_1, attn.in_proj_*, attn.out_proj, ln_2, mlp.c_fc, mlp.c_proj}`` ->
``resblocks_i/...``; ``ln_final``; ``text_projection`` (stored as ``x @ P``, so no transpose).

Two entry points over one mapping: `convert_text` (reader-based, used by `janus.convert.open_clip`
for full CLIP checkpoints) and `convert_text_state_dict` / `text_config_from_state_dict` (a plain
name -> array dict of a text tower, bare or under ``text.``; used by the parity test in
tests/test_text.py).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from janus.convert.loading import StateDictReader, count_blocks, dense, layer_norm, strip_prefix

# open_clip uses 64-wide attention heads in every OpenAI text tower (512 -> 8 heads, 640 -> 10).
TEXT_HEAD_WIDTH = 64
# Keys of a full CLIP state dict that are not the text tower's.
_NOT_TEXT = ("logit_scale", "logit_bias", "attn_mask")


def convert_text(reader: StateDictReader, state_keys, activation: str) -> tuple[dict, dict]:
    """-> (text params, TextTransformer kwargs)."""
    emb = reader.take("token_embedding.weight")
    pos = reader.take("positional_embedding")
    vocab, width = emb.shape if emb.ndim == 2 else (0, 0)  # missing: reported by finish()
    layers = count_blocks(state_keys, "transformer.resblocks.")
    params: dict = {"token_embedding": {"embedding": emb}, "positional_embedding": pos}
    mlp_width = None
    for i in range(layers):
        p = f"transformer.resblocks.{i}."
        block = {
            "ln_1": layer_norm(reader, p + "ln_1"),
            "attn": {
                "in_proj": {
                    "kernel": reader.take(p + "attn.in_proj_weight").T,
                    "bias": reader.take(p + "attn.in_proj_bias"),
                },
                "out_proj": dense(reader, p + "attn.out_proj"),
            },
            "ln_2": layer_norm(reader, p + "ln_2"),
            "mlp": {
                "c_fc": dense(reader, p + "mlp.c_fc"),
                "c_proj": dense(reader, p + "mlp.c_proj"),
            },
        }
        fc = block["mlp"]["c_fc"]["kernel"]
        # A missing key reads as an empty array; reader.finish() reports it, so don't crash here.
        mlp_width = fc.shape[1] if fc.ndim == 2 else mlp_width
        params[f"resblocks_{i}"] = block
    params["ln_final"] = layer_norm(reader, "ln_final")
    proj = reader.take("text_projection")
    params["text_projection"] = proj
    kwargs = dict(
        vocab_size=int(vocab),
        context_length=int(pos.shape[0]) if pos.ndim == 2 else 0,
        width=int(width),
        layers=layers,
        heads=int(width) // TEXT_HEAD_WIDTH,
        mlp_ratio=(mlp_width / width) if mlp_width else 4.0,
        output_dim=int(proj.shape[1]) if proj.ndim == 2 else None,
        activation=activation,
    )
    return params, kwargs


def _text_only(sd: Mapping[str, np.ndarray], prefix: str | None) -> dict[str, np.ndarray]:
    if prefix is None:  # CustomTextCLIP keeps the text tower under "text."
        prefix = "text." if "text.token_embedding.weight" in sd else ""
    if prefix:
        return strip_prefix(sd, prefix)
    return {k: v for k, v in sd.items() if not k.startswith("visual.") and k not in _NOT_TEXT}


def convert_text_state_dict(
    sd: Mapping[str, np.ndarray], *, prefix: str | None = None, activation: str = "quick_gelu"
) -> dict:
    """open_clip text-tower state dict (name -> array) -> TextTransformer params (float32 NumPy).

    Accepts a bare `open_clip.transformer.TextTransformer` state dict or a full CLIP one
    (``visual.*`` and ``logit_scale`` are skipped; ``text.`` prefix detected unless `prefix` is
    given). Raises `KeyMismatchError` (a KeyError) listing every missing and unexpected key.
    """
    text_sd = _text_only(sd, prefix)
    reader = StateDictReader(text_sd, "open_clip text tower", ignore=_NOT_TEXT)
    params, _ = convert_text(reader, text_sd, activation)
    reader.finish()
    return params


def text_config_from_state_dict(
    sd: Mapping[str, np.ndarray], *, prefix: str | None = None, activation: str = "quick_gelu"
) -> dict:
    """TextTransformer kwargs inferred from the weights (`heads` assumes 64-wide heads and the
    activation is not in the weights: pass what the model config says)."""
    text_sd = _text_only(sd, prefix)
    reader = StateDictReader(text_sd, "open_clip text tower", ignore=_NOT_TEXT)
    _, kwargs = convert_text(reader, text_sd, activation)
    return kwargs

"""open_clip text tower -> `janus.models.text.TextTransformer` params (names documented in text.py).

``token_embedding.weight`` -> ``token_embedding/embedding``; ``positional_embedding``;
``transformer.resblocks.i.{ln_1, attn.in_proj_*, attn.out_proj, ln_2, mlp.c_fc, mlp.c_proj}`` ->
``resblocks_i/...``; ``ln_final``; ``text_projection`` (stored as ``x @ P``, so no transpose).
"""

from __future__ import annotations

from janus.convert.loading import StateDictReader, dense, layer_norm
from janus.convert.timm import count_blocks

# open_clip uses 64-wide attention heads in every OpenAI text tower (width 512 -> 8 heads, 640 -> 10).
TEXT_HEAD_WIDTH = 64


def convert_text(reader: StateDictReader, state_keys, activation: str) -> tuple[dict, dict]:
    """-> (text params, TextTransformer kwargs)."""
    emb = reader.take("token_embedding.weight")
    pos = reader.take("positional_embedding")
    vocab, width = emb.shape
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
            "mlp": {"c_fc": dense(reader, p + "mlp.c_fc"), "c_proj": dense(reader, p + "mlp.c_proj")},
        }
        mlp_width = block["mlp"]["c_fc"]["kernel"].shape[1]
        params[f"resblocks_{i}"] = block
    params["ln_final"] = layer_norm(reader, "ln_final")
    proj = reader.take("text_projection")
    params["text_projection"] = proj
    kwargs = dict(
        vocab_size=int(vocab),
        context_length=int(pos.shape[0]),
        width=int(width),
        layers=layers,
        heads=int(width) // TEXT_HEAD_WIDTH,
        mlp_ratio=(mlp_width / width) if mlp_width else 4.0,
        output_dim=int(proj.shape[1]),
        activation=activation,
    )
    return params, kwargs

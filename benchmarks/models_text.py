"""Text-tower forward throughput: janus (JAX, fp32 and bf16 compute) vs open_clip (PyTorch).

Both towers hold the same weights (a randomly initialised open_clip TextTransformer converted with
`janus.convert.open_clip_text`), so the run also reports their largest output difference. Prints
one JSON line per variant with captions/s and the ratio to open_clip's fp32 forward.

    python benchmarks/models_text.py                  # OpenAI RN50 text tower, batch 8
    python benchmarks/models_text.py --layers 2 --batch 4 --iters 2   # quick smoke run
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np


def _tokens(batch: int, context: int, vocab: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    toks = np.zeros((batch, context), np.int32)
    for i in range(batch):
        n = int(rng.integers(5, context - 2))
        toks[i, 0] = vocab - 2
        toks[i, 1 : n + 1] = rng.integers(1, vocab - 2, size=n)
        toks[i, n + 1] = vocab - 1
    return toks


def _time(fn, iters: int) -> float:
    fn()  # warm-up (compile)
    best = float("inf")
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--context", type=int, default=77)
    ap.add_argument("--vocab", type=int, default=49408)
    ap.add_argument("--embed-dim", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--iters", type=int, default=3)
    args = ap.parse_args()

    import torch
    from open_clip.transformer import QuickGELU
    from open_clip.transformer import TextTransformer as TorchText

    from janus.convert.open_clip_text import convert_text_state_dict
    from janus.models.text import TextTransformer

    torch.manual_seed(0)
    ref = TorchText(
        context_length=args.context,
        vocab_size=args.vocab,
        width=args.width,
        heads=args.heads,
        layers=args.layers,
        output_dim=args.embed_dim,
        act_layer=QuickGELU,
    ).eval()
    params = convert_text_state_dict({k: v.numpy() for k, v in ref.state_dict().items()})
    tokens = _tokens(args.batch, args.context, args.vocab)
    t_tokens = torch.from_numpy(tokens.astype(np.int64))

    with torch.no_grad():
        want = ref(t_tokens).numpy()
        t_ref = _time(lambda: ref(t_tokens), args.iters)
    common = dict(
        batch=args.batch, width=args.width, layers=args.layers, context=args.context,
        torch_threads=torch.get_num_threads(),
    )  # fmt: skip
    print(json.dumps({"variant": "open_clip_fp32", "captions_per_s": args.batch / t_ref,
                      "ratio_vs_open_clip": 1.0, **common}))  # fmt: skip
    for name, dtype in (("janus_fp32", jnp.float32), ("janus_bf16", jnp.bfloat16)):
        model = TextTransformer(
            vocab_size=args.vocab,
            context_length=args.context,
            width=args.width,
            layers=args.layers,
            heads=args.heads,
            output_dim=args.embed_dim,
            dtype=dtype,
        )
        fwd = jax.jit(model.apply)
        variables = {"params": jax.device_put(params)}
        got = np.asarray(fwd(variables, tokens))
        t = _time(lambda f=fwd, v=variables: f(v, tokens).block_until_ready(), args.iters)
        print(json.dumps({
            "variant": name, "captions_per_s": args.batch / t, "ratio_vs_open_clip": t_ref / t,
            "max_abs_diff": float(np.abs(got - want).max()),
            "max_abs_out": float(np.abs(want).max()), **common,
        }))  # fmt: skip


if __name__ == "__main__":
    main()

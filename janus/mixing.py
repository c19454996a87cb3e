"""Mixup and CutMix of a GLOBAL batch, on the device (timm's `Mixup` in its default batch mode).

One draw per batch: with chance `prob` the batch is mixed; with both alphas on, CutMix with chance
`switch_prob`, mixup otherwise; lambda ~ Beta(alpha, alpha) of the chosen one. Sample i is mixed
with sample B-1-i of the global batch (the batch reversed), so under `jax.jit` on a sharded batch
the result does not depend on the device count. CutMix pastes the partner's pixels in a box of
area about (1 - lambda) (timm's `rand_bbox`: a square-ratio box around a uniform centre, clipped to
the image) and lambda becomes 1 - the clipped box's share of the image, as timm's `correct_lam`.
Targets (one-hot or multi-hot [B, C]) mix with the same lambda; label smoothing stays the loss's
job (`janus.losses.softmax_cross_entropy`), which equals timm's `mixup_target` because smoothing is
affine in the target. Images are [B, H, W, C]; everything here is a pure function of its inputs.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

# fold_in tag of the mixing key within the step's rng (microbatch keys fold in 0..k-1).
MIX_STREAM = 0x6D6978


@dataclasses.dataclass(frozen=True)
class Mixing:
    """The config's input.mixup / cutmix / mix_prob / mix_switch_prob (validated there)."""

    mixup: float = 0.0  # Beta alpha of mixup; 0 = off
    cutmix: float = 0.0  # Beta alpha of CutMix; 0 = off
    prob: float = 1.0  # chance that a batch is mixed
    switch_prob: float = 0.5  # with both on: chance of CutMix

    @classmethod
    def from_config(cls, config) -> Mixing:
        inp = config["input"]
        return cls(inp["mixup"], inp["cutmix"], inp["mix_prob"], inp["mix_switch_prob"])

    @property
    def on(self) -> bool:
        return self.mixup > 0 or self.cutmix > 0

    def note(self) -> str:
        """The console line that says how batches are mixed."""
        if self.mixup and self.cutmix:
            what = (
                f"mixup (alpha {self.mixup}) or CutMix (alpha {self.cutmix}, "
                f"chance {self.switch_prob})"
            )
        else:
            what = f"mixup (alpha {self.mixup})" if self.mixup else f"CutMix (alpha {self.cutmix})"
        return f"batch mixing: {what} of each global batch with its reverse, chance {self.prob}"


OFF = Mixing()  # the paper's recipe: no mixing


def partner(x: jax.Array) -> jax.Array:
    """Each sample's mixing partner: the global batch reversed."""
    return jnp.flip(x, axis=0)


def cutmix_box(lam: jax.Array, center: jax.Array, height: int, width: int):
    """timm's `rand_bbox` for a given centre (cy, cx), then its lambda correction.

    -> ((y_lo, y_hi, x_lo, x_hi), lambda = 1 - box area / image area)."""
    ratio = jnp.sqrt(1.0 - lam)
    cut_h = jnp.floor(height * ratio).astype(jnp.int32)
    cut_w = jnp.floor(width * ratio).astype(jnp.int32)
    cy, cx = center[0], center[1]
    y_lo, y_hi = jnp.clip(cy - cut_h // 2, 0, height), jnp.clip(cy + (cut_h + 1) // 2, 0, height)
    x_lo, x_hi = jnp.clip(cx - cut_w // 2, 0, width), jnp.clip(cx + (cut_w + 1) // 2, 0, width)
    area = (y_hi - y_lo) * (x_hi - x_lo)
    return (y_lo, y_hi, x_lo, x_hi), 1.0 - area / jnp.float32(height * width)


def mix_images(images: jax.Array, lam: jax.Array, use_cutmix: jax.Array, box) -> jax.Array:
    """Mixup (lam * x + (1 - lam) * partner) or, where `use_cutmix`, the partner's pixels pasted
    in `box`. lam = 1 without CutMix leaves the images as they are."""
    other = partner(images)
    lam = jnp.asarray(lam, images.dtype)
    blended = images * lam + other * (1 - lam)
    y_lo, y_hi, x_lo, x_hi = box
    rows = jnp.arange(images.shape[1])
    cols = jnp.arange(images.shape[2])
    inside = ((rows >= y_lo) & (rows < y_hi))[:, None] & ((cols >= x_lo) & (cols < x_hi))[None, :]
    pasted = jnp.where(inside[None, :, :, None], other, images)
    return jnp.where(use_cutmix, pasted, blended)


def mix_targets(targets: jax.Array, lam: jax.Array) -> jax.Array:
    """Dense targets [B, C] (one-hot, smoothed or multi-hot) mixed as their images."""
    targets = targets.astype(jnp.float32)
    return targets * lam + partner(targets) * (1 - lam)


def draw(key: jax.Array, mixing: Mixing, height: int, width: int):
    """One batch's draw (timm's `_params_per_batch` and `cutmix_bbox_and_lam`).

    -> (lam, use_cutmix, box): lam = 1 and use_cutmix False when the batch is not mixed."""
    k_apply, k_switch, k_mixup, k_cutmix, k_center = jax.random.split(key, 5)
    if mixing.mixup and mixing.cutmix:
        use_cutmix = jax.random.uniform(k_switch) < mixing.switch_prob
    else:
        use_cutmix = jnp.asarray(mixing.cutmix > 0)
    # Only the enabled alphas are drawn from (Beta(0, 0) is undefined).
    lam_mixup = jax.random.beta(k_mixup, mixing.mixup, mixing.mixup) if mixing.mixup else 1.0
    lam_cutmix = jax.random.beta(k_cutmix, mixing.cutmix, mixing.cutmix) if mixing.cutmix else 1.0
    applied = jax.random.uniform(k_apply) < mixing.prob
    lam = jnp.where(applied, jnp.where(use_cutmix, lam_cutmix, lam_mixup), 1.0)
    use_cutmix = applied & use_cutmix
    center = jax.random.randint(k_center, (2,), 0, jnp.array([height, width]))
    box, lam_box = cutmix_box(lam, center, height, width)
    return jnp.where(use_cutmix, lam_box, lam).astype(jnp.float32), use_cutmix, box


def mix(key: jax.Array, images: jax.Array, targets: jax.Array, mixing: Mixing):
    """The global batch's images [B, H, W, C] and dense targets [B, C] mixed with one draw.

    -> (images, targets, lam)."""
    lam, use_cutmix, box = draw(key, mixing, images.shape[1], images.shape[2])
    return mix_images(images, lam, use_cutmix, box), mix_targets(targets, lam), lam

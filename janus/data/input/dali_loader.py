"""The train stream with DALI doing the pixels: janus' draws, DALI's decode (nvJPEG on a GPU).

Why: a GPU node trains faster than its cores decode (docs/data.md, "Input on GPU nodes"). This
loader moves the pixel work to DALI, on the GPU (``device="mixed"``: nvJPEG decodes, the GPU
resizes) or on the CPU (``device="cpu"``: the form tested here against the grain loader).

How: ``pipeline.train_loader`` runs as for the grain loader -- the same selection, shuffle,
per-example rng, skips, batching and checkpointable state -- with ``CropPlanner`` in place of the
chain. For each example it reads the image's header (the chain's ``decode``), draws rrc's box
(``preprocess.draw_rrc_box``) and flip's coin (``preprocess.draw_flip``) from the example's rng as
the chain would, and leaves the pixels alone. ``DaliDecoder`` then makes each batch:
``decoders.image_slice`` decodes only the crop's region, ``resize`` to rrc's size (antialiased
linear, or without antialias for rrc's fast path), ``flip``; uint8 [B, H, W, 3] out, as the grain
loader's. The chain's ``normalize``/``value_range`` runs on the device as before. janus.main
uses it when ``data.loader = "dali"`` ("mixed" on GPUs). With "mixed", one pipeline per process
decodes on GPU ``device_id`` and the batch comes back to the host (``as_cpu``), where janus' device
prefetch shards it as any batch: simple, at the cost of a round trip.

Same batches as the grain loader: the same labels in the same order, the same crops and flips; the
pixels within a few grey levels, not exact: PIL decodes a large crop at 1/2 to 1/8 scale (JPEG
draft mode) where DALI decodes it whole, and the two antialiasing filters differ
(tests/test_dali_loader.py states the bounds).

Not reproduced: a JPEG whose header reads but whose data does not decode is a counted skip in the
grain loader; here the planner passes it and DALI raises for its batch.
"""

from __future__ import annotations

import inspect

import grain
import numpy as np

from janus.data.input import pipeline, preprocess

INSTALL = "pip install -r requirements/lock-peers.txt (nvidia-dali-cuda120)"
_CHAIN = "decode|rrc(...)[|flip(...)][|normalize(...) or value_range(...)]"
_AFTER_RRC = {"flip", "normalize", "value_range"}


def _arguments(factory, args: tuple, kwargs: dict) -> dict:
    """An op's arguments with its factory's defaults filled in (the chain has checked them)."""
    bound = inspect.signature(factory).bind(*args, **kwargs)
    bound.apply_defaults()
    return bound.arguments


class CropPlanner:
    """A chain's draws without its pixels: features -> features with ``image`` a 0-d object array
    holding (encoded bytes, crop box (x0, y0, x1, y1), flip). Picklable (grain workers)."""

    def __init__(self, spec: str):
        chain = preprocess.build_pp(spec)  # the chain's own checks: known ops, arguments, order
        ops = [preprocess.parse_op(text) for text in preprocess.split_chain(spec)]
        names = [name for name, _, _ in ops]
        for name in names:
            if name not in {"decode", "rrc"} | _AFTER_RRC:
                raise ValueError(
                    f"the DALI loader cannot run preprocessing op {name!r} of {spec!r}: it "
                    f"reproduces {_CHAIN} only (use the grain loader)"
                )
        if names[:2] != ["decode", "rrc"] or len(set(names)) != len(names):
            raise ValueError(
                f"the DALI loader needs the chain {_CHAIN}, each op once; got {spec!r}"
            )
        rrc = _arguments(preprocess.random_resized_crop, *ops[1][1:])
        if rrc["method"] != "bilinear":
            raise ValueError(
                f"the DALI loader resizes bilinear only; got rrc(method={rrc['method']!r}) in "
                f"{spec!r}"
            )
        flip = [_arguments(preprocess.flip, *op[1:]) for op in ops if op[0] == "flip"]
        self.spec = spec
        self.names = chain.names
        self.scaling = chain.scaling
        self.size = preprocess._pair(rrc["size"])  # (height, width)
        self.antialias = bool(rrc["antialias"])
        self._scale, self._ratio = rrc["scale"], rrc["ratio"]
        self._flip_p = flip[0]["p"] if flip else None

    def __reduce__(self):
        return (CropPlanner, (self.spec,))

    def __call__(self, features: dict, rng: np.random.Generator) -> dict:
        # The chain's decode: the header only, and the same BadImageError for what cannot open.
        features = preprocess.decode()(dict(features), rng)
        w, h = features["image"].size
        box = preprocess.draw_rrc_box(w, h, rng, self._scale, self._ratio)
        flip = self._flip_p is not None and preprocess.draw_flip(rng, self._flip_p)
        plan = np.empty((), dtype=object)
        plan[()] = (features["image/encoded"], box, flip)
        return {**features, "image": plan}


class DaliDecoder:
    """Plans -> uint8 [n, height, width, 3]: decode the crop, resize, flip, in one DALI pipeline.

    ``device``: "cpu" (libjpeg-turbo; no GPU needed) or "mixed" (nvJPEG on GPU ``device_id``).
    """

    def __init__(
        self,
        batch_size: int,
        size: tuple[int, int],
        antialias: bool,
        *,
        device: str = "cpu",
        num_threads: int = 1,
        device_id: int = 0,
    ):
        if device not in ("cpu", "mixed"):
            raise ValueError(f"DALI decoder device must be 'cpu' or 'mixed', got {device!r}")
        try:
            from nvidia.dali import fn, pipeline_def, types
        except ImportError:
            raise ValueError(
                f"the DALI loader needs NVIDIA DALI, not installed: {INSTALL}"
            ) from None
        self.device = device

        # Synchronous, one batch in flight: each run() decodes exactly the batch just fed, so the
        # stream's state (and a resume) is the grain loader's.
        @pipeline_def(
            batch_size=batch_size,
            num_threads=num_threads,
            device_id=None if device == "cpu" else device_id,
            exec_async=False,
            exec_pipelined=False,
            prefetch_queue_depth=1,
        )
        def crop_resize_flip():
            encoded = fn.external_source(name="encoded", dtype=types.UINT8, ndim=1)
            anchor = fn.external_source(name="anchor", dtype=types.INT32, ndim=1)
            shape = fn.external_source(name="shape", dtype=types.INT32, ndim=1)
            flip = fn.external_source(name="flip", dtype=types.INT32, ndim=0)
            image = fn.decoders.image_slice(
                encoded,
                anchor,
                shape,
                device=device,
                axis_names="WH",
                normalized_anchor=False,
                normalized_shape=False,
                output_type=types.RGB,
                adjust_orientation=False,  # janus' decode ignores EXIF orientation
                jpeg_fancy_upsampling=True,  # libjpeg-turbo's chroma upsampling, as PIL's
            )
            image = fn.resize(
                image,
                resize_x=size[1],
                resize_y=size[0],
                interp_type=types.INTERP_LINEAR,
                antialias=antialias,
            )
            return fn.flip(image, horizontal=flip)

        self._pipe = crop_resize_flip()
        self._pipe.build()

    def __call__(self, plans: np.ndarray) -> np.ndarray:
        encoded, boxes, flips = zip(*plans)
        boxes = np.asarray(boxes, dtype=np.int32)
        pipe = self._pipe
        pipe.feed_input("encoded", [np.frombuffer(data, dtype=np.uint8) for data in encoded])
        pipe.feed_input("anchor", list(boxes[:, :2]))
        pipe.feed_input("shape", list(boxes[:, 2:] - boxes[:, :2]))
        pipe.feed_input("flip", [np.int32(f) for f in flips])
        (images,) = pipe.run()
        return (images.as_cpu() if self.device == "mixed" else images).as_array()


class DaliIterator(grain.DatasetIterator):
    """The planned batches with their images made by DALI; state, skips and close are the plan
    stream's (``batching.SkipBatchIterator``), so a resume gives the same batches."""

    def __init__(self, plans, decoder: DaliDecoder):
        super().__init__()
        self._plans = plans
        self._decoder = decoder

    def __next__(self) -> dict:
        batch = next(self._plans)
        return {**batch, "image": self._decoder(batch["image"])}

    def get_state(self) -> dict:
        return self._plans.get_state()

    def set_state(self, state: dict) -> None:
        self._plans.set_state(state)

    def skip_report(self, state: dict | None = None) -> dict:
        return self._plans.skip_report(state)

    def close(self) -> None:
        self._plans.close()


def train_loader(
    dirs, *, pp: str, device: str = "cpu", num_threads: int = 1, device_id: int = 0, **kwargs
):
    """``pipeline.train_loader``'s batches (``kwargs`` as there) with DALI making the images;
    returns (iterator, manifest dict). ``device``, ``num_threads``, ``device_id``: DALI's."""
    if kwargs.get("captions"):
        raise ValueError("the DALI loader makes image batches only; captions need the grain loader")
    planner = CropPlanner(pp)
    plans, manifest = pipeline.train_loader(dirs, pp=planner, **kwargs)
    decoder = DaliDecoder(
        manifest["global_batch_size"] // manifest["shard_count"],
        planner.size,
        planner.antialias,
        device=device,
        num_threads=num_threads,
        device_id=device_id,
    )
    return DaliIterator(plans, decoder), {**manifest, "loader": f"dali ({device})"}

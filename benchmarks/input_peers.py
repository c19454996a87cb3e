"""The input pipelines a janus user would pick instead, each doing the train chain's work, one core.

Each side decodes, takes an Inception-style random crop (area 0.08-1, aspect 3/4-4/3), resizes it to
224x224, flips at random and emits uint8 batches, like janus' ``decode|rrc(224)|flip`` (whose
normalisation runs on the device):

- ``tfdata``: big_vision's ``decode_jpeg_and_inception_crop``:
  ``tf.image.sample_distorted_bounding_box``, ``tf.io.decode_and_crop_jpeg`` (decodes only the
  crop's region), ``tf.image.resize`` bilinear without antialias, a random flip; one thread
  (``private_threadpool_size=1``, no parallel map, inter/intra-op pools of 1);
- ``tfdata_aa``: the same with ``antialias=True``;
- ``tfdata_records``: ``tfdata`` reading the JPEGs as big_vision's tfds pipelines do, from the
  TFRecord shards janus reads (``tf.data.TFRecordDataset``, its CRC checks,
  ``tf.io.parse_single_example``), where the two above take them from memory;
- ``dali``: NVIDIA DALI's CPU pipeline: ``decoders.image_random_crop`` (decodes only the crop),
  antialiased ``resize``, ``flip``; one thread, no GPU.

`missing` says why a side cannot run here (its package is not installed). They install from the
index into a venv of their own (docs/benchmarks.md): ``tensorflow-cpu`` 2.21 and
``nvidia-dali-cuda120`` 2.4, beside janus' lock.
"""

from __future__ import annotations

import importlib.util
import pathlib
from collections.abc import Iterator

import numpy as np

PEERS = ("tfdata", "tfdata_aa", "tfdata_records", "dali")
_PACKAGE = {"dali": "nvidia.dali"}  # the others: tensorflow


def missing(peer: str) -> str | None:
    """None when `peer` can run here, else why not (one phrase)."""
    if peer not in PEERS:
        raise SystemExit(f"--peers: unknown peer {peer!r}; known: {', '.join(PEERS)}")
    package = _PACKAGE.get(peer, "tensorflow")
    try:
        found = importlib.util.find_spec(package) is not None
    except ModuleNotFoundError:  # a parent package (nvidia) is absent
        found = False
    return None if found else f"{package} not installed"


def version(peer: str) -> str:
    if peer == "dali":
        import nvidia.dali

        return nvidia.dali.__version__
    import tensorflow as tf

    return tf.__version__


def tfdata_batches(
    jpegs: list[bytes], batch_size: int, antialias: bool, records_dir=None, seed: int = 0
):
    """An endless iterator of uint8 [batch, 224, 224, 3] batches, as big_vision builds them, from
    ``jpegs`` in memory or, with ``records_dir``, from its TFRecord shards."""
    import tensorflow as tf

    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.random.set_seed(seed)

    def crop_resize_flip(data):
        shape = tf.image.extract_jpeg_shape(data)
        begin, size, _ = tf.image.sample_distorted_bounding_box(
            shape,
            tf.zeros([0, 0, 4], tf.float32),
            area_range=(0.08, 1.0),
            aspect_ratio_range=(3 / 4, 4 / 3),
            min_object_covered=0,
            use_image_if_no_bounding_boxes=True,
        )
        y, x, _ = tf.unstack(begin)
        h, w, _ = tf.unstack(size)
        image = tf.io.decode_and_crop_jpeg(data, tf.stack([y, x, h, w]), channels=3)
        image = tf.image.resize(image, (224, 224), method="bilinear", antialias=antialias)
        image = tf.image.random_flip_left_right(image)
        return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)

    options = tf.data.Options()
    options.threading.private_threadpool_size = 1
    options.autotune.enabled = False
    if records_dir is None:
        ds = tf.data.Dataset.from_tensor_slices(jpegs)
    else:
        shards = sorted(str(p) for p in pathlib.Path(records_dir).glob("train-*.tfrecord"))
        spec = {"image/encoded": tf.io.FixedLenFeature([], tf.string)}
        ds = tf.data.TFRecordDataset(shards).map(
            lambda record: tf.io.parse_single_example(record, spec)["image/encoded"]
        )
    ds = ds.repeat()
    ds = ds.map(crop_resize_flip).batch(batch_size).with_options(options)
    return ds.as_numpy_iterator()


def dali_batches(image_dir: pathlib.Path, batch_size: int, seed: int = 0):
    """The same from DALI's CPU operators over an ImageFolder tree (DALI reads its own files)."""
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def(batch_size=batch_size, num_threads=1, device_id=None, seed=seed)
    def crop_resize_flip():
        data, _ = fn.readers.file(file_root=str(image_dir), random_shuffle=False, name="reader")
        image = fn.decoders.image_random_crop(
            data,
            device="cpu",
            output_type=types.RGB,
            random_area=[0.08, 1.0],
            random_aspect_ratio=[3 / 4, 4 / 3],
        )
        image = fn.resize(image, resize_x=224, resize_y=224, antialias=True)
        return fn.flip(image, horizontal=fn.random.coin_flip())

    pipe = crop_resize_flip()
    pipe.build()
    while True:
        (out,) = pipe.run()
        yield np.stack([np.asarray(out.at(i)) for i in range(batch_size)])


def batches(
    peer: str, jpegs: list[bytes], image_dir: pathlib.Path, records_dir, batch_size: int
) -> Iterator[np.ndarray]:
    """-> an endless iterator of uint8 batches for `peer`."""
    if peer == "dali":
        return dali_batches(image_dir, batch_size)
    records = records_dir if peer == "tfdata_records" else None
    return tfdata_batches(jpegs, batch_size, antialias=peer == "tfdata_aa", records_dir=records)

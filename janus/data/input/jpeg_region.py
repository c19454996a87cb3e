"""Region decoding: only a crop's part of a JPEG, with the whole decode's pixels.

``decode_region(data, box, read_to_end)`` -> uint8 [y1 - y0, x1 - x0, 3], or None (not available
here, or libjpeg refused the data: the caller decodes the whole image, which decides as before).
The C side, ``jpeg_region.c``, is libjpeg-turbo's scanline skipping and column cropping, as
``tf.io.decode_and_crop_jpeg`` does; no package on the index exposes it without TensorFlow
(benchmarks/RESULTS.md), so janus builds that one file on first use with the system's compiler
against the system's libjpeg-turbo (Debian/Ubuntu: ``apt install gcc libjpeg-dev``), into
``$JANUS_CACHE_DIR`` (default ``~/.cache/janus``), one build per source version, shared by
processes. Where it cannot build, ``status()`` says why and every image is decoded whole.

Why: on the 334 real photographs, Inception crops (area 0.08-1) decode in 1.0 ms against 1.1 ms
for the whole image reading to the end of the file (``read_to_end=True``: a broken file gets the
whole decode's verdict), and in 0.9 ms stopping after the crop's last row, as tf.data does
(benchmarks/RESULTS.md). Stopping is for images known to decode whole: records whose builder
checked every image (``images_verified`` in info.json; ``janus.data.input.pipeline`` passes it on).
``JANUS_JPEG_REGION=0`` turns it off (for A/B timings); the pixels are the same either way.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import pathlib
import subprocess
import tempfile
import threading

import numpy as np

SOURCE = pathlib.Path(__file__).with_name("jpeg_region.c")
_MESSAGE_LEN = 200
_lock = threading.Lock()
_state: dict = {}  # "fn": the C function, or "reason": why there is none


def cache_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get("JANUS_CACHE_DIR") or pathlib.Path.home() / ".cache/janus")


def _build() -> pathlib.Path:
    """The shared library for this source and compiler, built once (concurrent builders each
    write their own file and rename it into place: the last rename wins, with the same bytes)."""
    cc = os.environ.get("CC", "cc")
    key = hashlib.sha256(SOURCE.read_bytes() + cc.encode()).hexdigest()[:16]
    lib = cache_dir() / f"jpeg_region-{key}.so"
    if lib.exists():
        return lib
    lib.parent.mkdir(parents=True, exist_ok=True)
    # A name of its own (hosts sharing a home directory may build at once), renamed when complete.
    fd, partial = tempfile.mkstemp(prefix=f"{lib.name}.", suffix=".partial", dir=lib.parent)
    os.close(fd)
    command = [cc, "-O2", "-shared", "-fPIC", str(SOURCE), "-o", partial, "-ljpeg"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        os.unlink(partial)
        raise OSError(f"cannot run {cc!r}: {e}") from None
    if done.returncode != 0:
        os.unlink(partial)
        first = (done.stderr.strip().splitlines() or ["no message"])[0]
        raise OSError(f"{' '.join(command)} failed: {first}")
    os.replace(partial, lib)
    return lib


def _load() -> None:
    if os.environ.get("JANUS_JPEG_REGION", "1") == "0":
        _state["reason"] = "off: JANUS_JPEG_REGION=0"
        return
    try:
        fn = ctypes.CDLL(str(_build())).janus_jpeg_region
    except (OSError, AttributeError) as e:
        _state["reason"] = f"unavailable ({e}); install a C compiler and libjpeg-turbo's headers"
        return
    fn.argtypes = [ctypes.c_char_p, ctypes.c_ulong] + [ctypes.c_int] * 5
    fn.argtypes += [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
    fn.restype = ctypes.c_int
    _state["fn"] = fn


def _function():
    if not _state:
        with _lock:
            if not _state:
                _load()
    return _state.get("fn")


def status() -> str:
    """``on``, or why region decoding is off in this process (built on the first call)."""
    return "on" if _function() is not None else _state["reason"]


def decode_region(
    data: bytes, box: tuple[int, int, int, int], read_to_end: bool = True
) -> np.ndarray | None:
    """The crop ``box`` = (x0, y0, x1, y1) of JPEG ``data`` as uint8 RGB, or None (see above).
    ``read_to_end=False`` stops after the crop: damage below it goes unseen (see above)."""
    fn = _function()
    if fn is None:
        return None
    x0, y0, x1, y1 = (int(v) for v in box)
    out = np.empty((y1 - y0, x1 - x0, 3), np.uint8)
    message = ctypes.create_string_buffer(_MESSAGE_LEN)
    args = (x0, y0, x1 - x0, y1 - y0, int(read_to_end))
    if fn(data, len(data), *args, out.ctypes.data, message, _MESSAGE_LEN):
        return None
    return out

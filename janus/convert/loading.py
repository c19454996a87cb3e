"""Safe loading of PyTorch state dicts, and the key-checking helpers every converter uses.

Loading never unpickles arbitrary objects: ``.safetensors`` files go through ``safetensors.numpy``,
and ``.pt``/``.pth``/``.bin`` files through ``torch.load(..., weights_only=True)``, which refuses
anything but tensors and plain containers. (OpenAI's original TorchScript ``.pt`` archives are
therefore refused; use the state dicts that open_clip / the Hugging Face hub publish, e.g.
``open_clip_model.safetensors``.)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

# Wrappers that training scripts put around a state dict.
_NESTED_KEYS = ("state_dict", "model", "module", "model_state_dict")
# Prefixes that DataParallel / wrappers put on every key.
_PREFIXES = ("module.", "_orig_mod.")


class KeyMismatchError(KeyError):
    """A state dict does not have the keys the target architecture needs."""

    def __init__(self, source: str, missing: list[str], unexpected: list[str]):
        self.missing, self.unexpected = missing, unexpected
        msg = (
            f"{source}: state dict does not match the target architecture: "
            f"{len(missing)} missing key(s) {missing[:10]}{' ...' if len(missing) > 10 else ''}; "
            f"{len(unexpected)} unexpected key(s) {unexpected[:10]}"
            f"{' ...' if len(unexpected) > 10 else ''}"
        )
        super().__init__(msg)

    def __str__(self) -> str:  # KeyError would repr() the message
        return self.args[0]


def _to_numpy(value) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    import torch  # only reached for torch tensors, so torch was importable

    if isinstance(value, torch.Tensor):
        t = value.detach().cpu()
        if t.dtype in (torch.bfloat16, torch.float16):
            t = t.float()  # numpy has no bfloat16; everything becomes float32 below anyway
        return t.numpy()
    raise TypeError(f"expected a tensor, got {type(value).__name__}")


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Read a state dict from ``.safetensors`` / ``.pt`` / ``.pth`` / ``.bin`` into numpy arrays.

    Unwraps ``{"state_dict": ...}``-style containers and strips ``module.`` prefixes.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no weights file at {path}")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.numpy import load_file

        raw = load_file(str(path))
    elif suffix in (".pt", ".pth", ".bin", ".ckpt"):
        import torch

        try:
            raw = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as e:  # pickle.UnpicklingError and friends: say why plainly
            raise ValueError(
                f"{path}: cannot load with torch.load(weights_only=True) "
                f"({type(e).__name__}: {e}). "
                "Only plain state dicts are accepted (no pickled objects, no TorchScript archives)."
            ) from e
    else:
        raise ValueError(
            f"{path}: unknown weights format {suffix!r} (use .safetensors/.pt/.pth/.bin)"
        )
    while isinstance(raw, Mapping):
        nested = [k for k in _NESTED_KEYS if k in raw and isinstance(raw[k], Mapping)]
        if not nested:
            break
        raw = raw[nested[0]]
    if not isinstance(raw, Mapping):
        raise ValueError(f"{path}: expected a state dict (mapping), got {type(raw).__name__}")
    out = {}
    for key, value in raw.items():
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix) :]
        out[key] = _to_numpy(value)
    return out


def strip_prefix(state_dict: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """The entries under ``prefix`` (e.g. ``"visual."``), with the prefix removed."""
    return {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}


class StateDictReader:
    """Pops tensors out of a state dict by torch name and checks at the end that all were used.

    ``take`` records names that are absent instead of failing at once, so that `finish` can report
    every missing and every unused key together."""

    def __init__(
        self, state_dict: Mapping[str, np.ndarray], source: str, ignore: Iterable[str] = ()
    ):
        self._sd = dict(state_dict)
        self._used: set[str] = set()
        self._missing: list[str] = []
        self._ignore = tuple(ignore)
        self.source = source

    def has(self, key: str) -> bool:
        return key in self._sd

    def take(self, key: str) -> np.ndarray:
        if key not in self._sd:
            self._missing.append(key)
            # An empty 4-d placeholder survives the layout transforms; `finish` then reports the
            # key.
            return np.zeros((0, 0, 0, 0), np.float32)
        self._used.add(key)
        return np.asarray(self._sd[key], dtype=np.float32)

    def finish(self) -> None:
        unexpected = sorted(
            k for k in self._sd if k not in self._used and not k.endswith(self._ignore)
        )
        if self._missing or unexpected:
            raise KeyMismatchError(self.source, self._missing, unexpected)


# --- torch -> flax layout transforms
# ---------------------------------------------------------------


def conv_kernel(w: np.ndarray) -> np.ndarray:
    """torch Conv2d weight ``[O, I, kh, kw]`` -> flax Conv kernel ``[kh, kw, I, O]``."""
    return np.transpose(w, (2, 3, 1, 0))


def conv(reader: StateDictReader, prefix: str) -> dict[str, np.ndarray]:
    """torch Conv2d with bias (``prefix.weight``, ``prefix.bias``) -> flax Conv params."""
    return {
        "kernel": conv_kernel(reader.take(f"{prefix}.weight")),
        "bias": reader.take(f"{prefix}.bias"),
    }


def dense(reader: StateDictReader, prefix: str, bias: bool = True) -> dict[str, np.ndarray]:
    """torch Linear ``prefix.weight [O, I]`` (+ ``prefix.bias``) -> flax Dense params."""
    out = {"kernel": reader.take(f"{prefix}.weight").T}
    if bias:
        out["bias"] = reader.take(f"{prefix}.bias")
    return out


def layer_norm(reader: StateDictReader, prefix: str) -> dict[str, np.ndarray]:
    return {"scale": reader.take(f"{prefix}.weight"), "bias": reader.take(f"{prefix}.bias")}


def batch_norm(reader: StateDictReader, prefix: str) -> tuple[dict, dict]:
    """torch BatchNorm2d -> (params {scale, bias}, batch_stats {mean, var}).

    ``num_batches_tracked`` is dropped (the readers ignore it)."""
    params = {"scale": reader.take(f"{prefix}.weight"), "bias": reader.take(f"{prefix}.bias")}
    stats = {
        "mean": reader.take(f"{prefix}.running_mean"),
        "var": reader.take(f"{prefix}.running_var"),
    }
    return params, stats


def count_blocks(state_dict: Mapping[str, np.ndarray], prefix: str) -> int:
    ids = {int(k[len(prefix) :].split(".")[0]) for k in state_dict if k.startswith(prefix)}
    if ids != set(range(len(ids))):
        raise ValueError(f"non-contiguous block indices under {prefix!r}: {sorted(ids)[:10]}")
    return len(ids)

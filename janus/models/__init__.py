"""janus.models: image towers, the CLIP text tower, the Classifier / CLIP wrappers and the registry.

`create_model(name, loss, ...)` is the entry point (see `janus.models.registry`). This package never
imports `janus.data` (data flows one way; the tokenizer lives in `janus.data.input.tokenizer`).
"""

from janus.models.clip import CLIP, Classifier, CLIPClassifier, l2_normalize
from janus.models.posemb import resize_posemb, resize_posembs
from janus.models.registry import (
    TOWERS,
    create_model,
    image_tower_names,
    init_variables,
    resolve_dtype,
)
from janus.models.text import TextTransformer

__all__ = [
    "CLIP",
    "TOWERS",
    "CLIPClassifier",
    "Classifier",
    "TextTransformer",
    "create_model",
    "image_tower_names",
    "init_variables",
    "l2_normalize",
    "resize_posemb",
    "resize_posembs",
    "resolve_dtype",
]

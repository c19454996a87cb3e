"""Data vendored into janus and shipped in its wheel: the CLIP BPE vocabulary (`clip_bpe/`) and the
reference data (`reference/`: class lists, label sets, maps, testbed and meta-analysis tables).

Read them through `janus.vendored.path(...)` (an `importlib.resources` lookup), never through a
path relative to the checkout. Their sources and licences are listed in the repository's
`third_party/README.md`, and ship in the wheel's licence files.
"""

import contextlib
import importlib.resources
import pathlib

_STACK = contextlib.ExitStack()


def path(*parts: str) -> pathlib.Path:
    """The file `parts` under this package, as a real path on disk (zip installs are extracted)."""
    resource = importlib.resources.files(__name__).joinpath(*parts)
    return _STACK.enter_context(importlib.resources.as_file(resource))

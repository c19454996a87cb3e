"""janus: controlled distributional-robustness experiments on a data budget, in JAX/Flax.

The data flows one way: config -> janus.data -> janus.models -> janus.train -> checkpoints ->
janus.evaluate -> janus.report. See ../README.md and the module docstrings.
"""

__version__ = "0.1.0"

"""janus.evaluate."""

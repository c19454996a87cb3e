"""janus.convert."""

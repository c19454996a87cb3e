"""janus.data."""

"""janus.models."""

"""Sharded, resumable training: data, the jitted step, checkpoints and the loop."""

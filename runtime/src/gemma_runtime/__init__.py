"""The Gemma runtime: sharded JAX training and continuous-batching serving of Gemma models."""

__version__ = "0.1.0"

__all__ = ["__version__"]

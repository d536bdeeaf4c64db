"""The Gemma model family (Gemma 1, 2, 3) in JAX/Flax NNX."""

from gemma_runtime.model.transformer import Cache, Transformer
from gemma_runtime.variants import PRESETS, AttentionType, TransformerConfig, preset, tiny_config

__all__ = ["PRESETS", "AttentionType", "Cache", "Transformer", "TransformerConfig", "preset", "tiny_config"]

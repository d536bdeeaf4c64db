"""The Gemma variants: TransformerConfig, the shape of every generation, and the published presets.

JAX-free (the operator and the memory model import it).

Gemma 1: global attention, no post norms, no soft-capping. Gemma 2: local sliding-window and global
layers alternate (local first), attention logits capped at 50 and final logits at 30, post norms.
Gemma 3: five local layers then one global, QK-norm instead of soft-capping, RoPE base 10k on local and
1M on global layers (global positions scaled by 8 from 4B up). Facts: shared/reference/gemma.md.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any


class AttentionType(enum.StrEnum):
    GLOBAL = "global"
    LOCAL = "local_sliding"


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """Everything that decides the computation. Shapes use the letters of the einsum strings:
    D embed_dim, N num_heads, K num_kv_heads, H head_dim, F hidden_dim, V vocab_size."""

    name: str
    generation: int  # 1, 2 or 3
    num_layers: int
    embed_dim: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    hidden_dim: int
    vocab_size: int
    attention_pattern: tuple[AttentionType, ...] = (AttentionType.GLOBAL,)  # repeated over the layers
    sliding_window: int | None = None
    attn_logit_softcap: float | None = None
    final_logit_softcap: float | None = None
    use_post_attn_norm: bool = False
    use_post_ffw_norm: bool = False
    use_qk_norm: bool = False
    query_pre_attn_scalar: float | None = None  # queries are scaled by its -1/2 power; None = head_dim
    rope_base_global: float = 10_000.0
    rope_base_local: float = 10_000.0
    rope_scale_global: float = 1.0  # linear position scaling on global layers (Gemma 3 4B+)
    max_seq_len: int = 8192
    norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads {self.num_heads} is not a multiple of num_kv_heads {self.num_kv_heads}"
            )
        if AttentionType.LOCAL in self.attention_pattern and not self.sliding_window:
            raise ValueError("local sliding-window layers need sliding_window")

    @property
    def attention_types(self) -> tuple[AttentionType, ...]:
        pattern = self.attention_pattern
        return tuple(pattern[i % len(pattern)] for i in range(self.num_layers))

    @property
    def query_scale(self) -> float:
        return float((self.query_pre_attn_scalar or self.head_dim) ** -0.5)

    def replace(self, **changes: Any) -> TransformerConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["attention_pattern"] = [str(a) for a in self.attention_pattern]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TransformerConfig:
        data = dict(data)
        data["attention_pattern"] = tuple(AttentionType(a) for a in data["attention_pattern"])
        return cls(**data)

    def param_count(self, *, include_embedding: bool = True) -> int:
        """Weights, counted from the shapes (the tied output projection is the embedding)."""
        d, n, k, h, f = self.embed_dim, self.num_heads, self.num_kv_heads, self.head_dim, self.hidden_dim
        attn = n * d * h * 2 + k * d * h * 2
        norms = d * (2 + self.use_post_attn_norm + self.use_post_ffw_norm) + 2 * h * self.use_qk_norm
        layer = attn + 3 * d * f + norms
        embedding = self.vocab_size * d if include_embedding else 0
        return self.num_layers * layer + embedding + d

    def matmul_flops_per_token(self) -> int:
        """2 x the weights used in matrix products per token (the tied output projection included)."""
        return 2 * (self.param_count(include_embedding=False) + self.vocab_size * self.embed_dim)


_LOCAL_GLOBAL = (AttentionType.LOCAL, AttentionType.GLOBAL)
_GEMMA3_PATTERN = (AttentionType.LOCAL,) * 5 + (AttentionType.GLOBAL,)


def _gemma1(name: str, **shape: Any) -> TransformerConfig:
    shape.setdefault("vocab_size", 256_128)
    return TransformerConfig(name=name, generation=1, **shape)


def _gemma2(name: str, **shape: Any) -> TransformerConfig:
    shape.setdefault("sliding_window", 4096)
    shape.setdefault("vocab_size", 256_128)
    return TransformerConfig(
        name=name,
        generation=2,
        attention_pattern=_LOCAL_GLOBAL,
        attn_logit_softcap=50.0,
        final_logit_softcap=30.0,
        use_post_attn_norm=True,
        use_post_ffw_norm=True,
        **shape,
    )


def _gemma3(name: str, **shape: Any) -> TransformerConfig:
    shape.setdefault("sliding_window", 1024)
    shape.setdefault("rope_scale_global", 8.0)
    shape.setdefault("max_seq_len", 131_072)
    shape.setdefault("vocab_size", 262_144)
    return TransformerConfig(
        name=name,
        generation=3,
        attention_pattern=_GEMMA3_PATTERN,
        use_post_attn_norm=True,
        use_post_ffw_norm=True,
        use_qk_norm=True,
        rope_base_local=10_000.0,
        rope_base_global=1_000_000.0,
        **shape,
    )


PRESETS: dict[str, TransformerConfig] = {
    c.name: c
    for c in (
        _gemma1(
            "gemma-2b",
            num_layers=18,
            embed_dim=2048,
            num_heads=8,
            num_kv_heads=1,
            head_dim=256,
            hidden_dim=16_384,
        ),
        _gemma1(
            "gemma-7b",
            num_layers=28,
            embed_dim=3072,
            num_heads=16,
            num_kv_heads=16,
            head_dim=256,
            hidden_dim=24_576,
        ),
        _gemma2(
            "gemma2-2b",
            num_layers=26,
            embed_dim=2304,
            num_heads=8,
            num_kv_heads=4,
            head_dim=256,
            hidden_dim=9216,
            query_pre_attn_scalar=256,
        ),
        _gemma2(
            "gemma2-9b",
            num_layers=42,
            embed_dim=3584,
            num_heads=16,
            num_kv_heads=8,
            head_dim=256,
            hidden_dim=14_336,
            query_pre_attn_scalar=256,
        ),
        _gemma2(
            "gemma2-27b",
            num_layers=46,
            embed_dim=4608,
            num_heads=32,
            num_kv_heads=16,
            head_dim=128,
            hidden_dim=36_864,
            query_pre_attn_scalar=4608 // 32,
        ),
        _gemma3(
            "gemma3-1b",
            num_layers=26,
            embed_dim=1152,
            num_heads=4,
            num_kv_heads=1,
            head_dim=256,
            hidden_dim=6912,
            sliding_window=512,
            rope_scale_global=1.0,
            max_seq_len=32_768,
            query_pre_attn_scalar=256,
        ),
        _gemma3(
            "gemma3-4b",
            num_layers=34,
            embed_dim=2560,
            num_heads=8,
            num_kv_heads=4,
            head_dim=256,
            hidden_dim=10_240,
            query_pre_attn_scalar=256,
        ),
        _gemma3(
            "gemma3-12b",
            num_layers=48,
            embed_dim=3840,
            num_heads=16,
            num_kv_heads=8,
            head_dim=256,
            hidden_dim=15_360,
            query_pre_attn_scalar=256,
        ),
        _gemma3(
            "gemma3-27b",
            num_layers=62,
            embed_dim=5376,
            num_heads=32,
            num_kv_heads=16,
            head_dim=128,
            hidden_dim=21_504,
            query_pre_attn_scalar=5376 // 32,
        ),
        # Small models for tests, trials and benchmarks.
        _gemma3(
            "tiny",
            num_layers=6,
            embed_dim=128,
            num_heads=4,
            num_kv_heads=2,
            head_dim=32,
            hidden_dim=512,
            vocab_size=1024,
            sliding_window=64,
            max_seq_len=2048,
            rope_scale_global=1.0,
        ),
        _gemma1(
            "bench-small",
            num_layers=8,
            embed_dim=1024,
            num_heads=8,
            num_kv_heads=1,
            head_dim=128,
            hidden_dim=8192,
            vocab_size=32_000,
        ),
    )
}


def preset(name: str) -> TransformerConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown model variant {name!r}; valid: {', '.join(PRESETS)}") from None


def tiny_config(generation: int, **changes: Any) -> TransformerConfig:
    """A tiny random config of one generation, for parity tests (sequences longer than the window)."""
    base = {1: _gemma1, 2: _gemma2, 3: _gemma3}[generation]
    shape: dict[str, Any] = {
        "num_layers": 4,
        "embed_dim": 64,
        "num_heads": 4,
        "num_kv_heads": 2,
        "head_dim": 16,
        "hidden_dim": 128,
    }
    if generation > 1:
        shape["sliding_window"] = 8
    if generation == 3:
        shape.update(rope_scale_global=8.0, max_seq_len=512)
    return base(f"tiny-gemma{generation}", **{**shape, "vocab_size": 256, **changes})

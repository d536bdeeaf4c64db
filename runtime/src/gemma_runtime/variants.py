"""The Gemma variants: TransformerConfig, the shape of every generation, and the published presets.

JAX-free (the operator and the memory model import it).

Gemma 1: global attention, no post norms, no soft-capping. Gemma 2: local sliding-window and global
layers alternate (local first), attention logits capped at 50 and final logits at 30, post norms.
Gemma 3: five local layers then one global, QK-norm instead of soft-capping, RoPE base 10k on local and
1M on global layers (global positions scaled by 8 from 4B up). Gemma 4 (as Hugging Face transformers'
Gemma4TextModel computes it): norms scale by ``scale`` itself (not 1 + scale), unscaled RMS norm on
values, no query scaling, global layers with their own head dim and KV heads (keys doubling as values
when ``attention_k_eq_v``) and proportional RoPE (only a fraction of the head dim rotates), a learned
scalar per layer, and optionally per-layer input embeddings (E2B, E4B), the last layers reusing the keys
and values of the last earlier layer of their type (KV sharing), and a mixture-of-experts block beside
the dense feed-forward (26B A4B). Facts: shared/reference/gemma.md.
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
    generation: int  # 1, 2, 3 or 4
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
    # Gemma 4; the defaults are the Gemma 1-3 behaviour.
    norm_plus_one: bool = True  # RMSNorm multiplies by (1 + scale); Gemma 4 by scale
    global_head_dim: int | None = None  # head dim of global layers; None = head_dim
    num_global_kv_heads: int | None = None  # KV heads of global layers; None = num_kv_heads
    attention_k_eq_v: bool = False  # global layers have no v projection: values are the keys' projection
    use_v_norm: bool = False  # values go through an RMS norm without scale
    rope_fraction_global: float = 1.0  # proportional RoPE: the fraction of the head dim that rotates
    rope_fraction_local: float = 1.0
    use_layer_scalar: bool = False  # every block's output is multiplied by a learned scalar
    per_layer_input_dim: int = 0  # P: per-layer input embeddings of P per layer; 0 = none
    per_layer_vocab_size: int | None = None  # rows of the per-layer table; None = vocab_size
    num_kv_shared_layers: int = 0  # the last ones reuse the keys and values of an earlier layer
    double_wide_shared_mlp: bool = False  # KV-shared layers have a feed-forward twice as wide
    num_experts: int = 0  # E: a mixture-of-experts block beside the feed-forward in every layer; 0 = none
    experts_per_token: int = 0
    expert_hidden_dim: int = 0  # M: each expert's feed-forward width

    def __post_init__(self) -> None:
        for attn_type in set(self.attention_types) or {AttentionType.GLOBAL}:
            if self.num_heads % self.kv_heads_of(attn_type):
                raise ValueError(
                    f"num_heads {self.num_heads} is not a multiple of the {attn_type} layers' "
                    f"{self.kv_heads_of(attn_type)} KV heads"
                )
        if AttentionType.LOCAL in self.attention_pattern and not self.sliding_window:
            raise ValueError("local sliding-window layers need sliding_window")
        if not 0 <= self.num_kv_shared_layers < self.num_layers:
            raise ValueError(f"num_kv_shared_layers {self.num_kv_shared_layers} must be below num_layers")
        self.kv_sources  # noqa: B018 - raises when a shared layer has no earlier layer of its type
        if self.num_experts and not 0 < self.experts_per_token <= self.num_experts:
            raise ValueError(f"experts_per_token {self.experts_per_token} must be in 1..{self.num_experts}")

    @property
    def attention_types(self) -> tuple[AttentionType, ...]:
        pattern = self.attention_pattern
        return tuple(pattern[i % len(pattern)] for i in range(self.num_layers))

    @property
    def query_scale(self) -> float:
        return float((self.query_pre_attn_scalar or self.head_dim) ** -0.5)

    def head_dim_of(self, attn_type: AttentionType) -> int:
        if attn_type == AttentionType.GLOBAL and self.global_head_dim:
            return self.global_head_dim
        return self.head_dim

    def kv_heads_of(self, attn_type: AttentionType) -> int:
        if attn_type == AttentionType.GLOBAL and self.num_global_kv_heads:
            return self.num_global_kv_heads
        return self.num_kv_heads

    def values_are_keys(self, attn_type: AttentionType) -> bool:
        """Whether this type's layers have no v projection (values are the keys' projection)."""
        return self.attention_k_eq_v and attn_type == AttentionType.GLOBAL

    def rope_of(self, attn_type: AttentionType) -> tuple[float, float, float]:
        """(base, linear position scale, rotated fraction of the head dim) of this type's layers."""
        if attn_type == AttentionType.LOCAL:
            return self.rope_base_local, 1.0, self.rope_fraction_local
        return self.rope_base_global, self.rope_scale_global, self.rope_fraction_global

    @property
    def kv_sources(self) -> tuple[int | None, ...]:
        """Per layer, the layer whose keys and values it reuses (None: its own). The last
        ``num_kv_shared_layers`` layers reuse those of the last earlier layer of their type."""
        types = self.attention_types
        first = self.num_layers - self.num_kv_shared_layers
        sources: list[int | None] = []
        for i, attn_type in enumerate(types):
            if i < first:
                sources.append(None)
                continue
            earlier = [j for j in range(first) if types[j] == attn_type]
            if not earlier:
                raise ValueError(f"KV-shared layer {i} ({attn_type}) has no earlier layer of its type")
            sources.append(earlier[-1])
        return tuple(sources)

    def hidden_dim_of(self, layer: int) -> int:
        """The feed-forward width of one layer (KV-shared layers may have a double-wide one)."""
        shared = self.kv_sources[layer] is not None
        return self.hidden_dim * (2 if shared and self.double_wide_shared_mlp else 1)

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
        """Weights, counted from the shapes (the tied output projection is the embedding). Without the
        embedding, the per-layer input table (a lookup) is left out too."""
        d, n = self.embed_dim, self.num_heads
        total = d  # the final norm
        sources = self.kv_sources
        for i, attn_type in enumerate(self.attention_types):
            h, k = self.head_dim_of(attn_type), self.kv_heads_of(attn_type)
            total += n * d * h * 2 + h * self.use_qk_norm  # q, o, query norm
            if sources[i] is None:
                total += k * d * h * (1 if self.values_are_keys(attn_type) else 2) + h * self.use_qk_norm
            total += 3 * d * self.hidden_dim_of(i)
            total += d * (2 + self.use_post_attn_norm + self.use_post_ffw_norm) + self.use_layer_scalar
            if self.per_layer_input_dim:
                total += 2 * d * self.per_layer_input_dim + d  # gate, projection, norm
            if self.num_experts:
                e, m = self.num_experts, self.expert_hidden_dim
                total += d * e + d + e + 3 * e * d * m + 3 * d  # router, scales, experts, three norms
        if self.per_layer_input_dim:
            lp = self.num_layers * self.per_layer_input_dim
            total += d * lp + self.per_layer_input_dim  # the projection from the embedding and its norm
            if include_embedding:
                total += (self.per_layer_vocab_size or self.vocab_size) * lp
        return total + (self.vocab_size * d if include_embedding else 0)

    def active_param_count(self) -> int:
        """Weights one token uses: a mixture-of-experts layer counts only its chosen experts."""
        unused = self.num_experts - self.experts_per_token
        return self.param_count() - self.num_layers * unused * 3 * self.embed_dim * self.expert_hidden_dim

    def matmul_flops_per_token(self) -> int:
        """2 x the weights used in matrix products per token (the tied output projection included)."""
        unused = self.param_count() - self.active_param_count()  # experts a token does not use
        return 2 * (self.param_count(include_embedding=False) - unused + self.vocab_size * self.embed_dim)


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


def _gemma4(name: str, **shape: Any) -> TransformerConfig:
    shape.setdefault("sliding_window", 512)
    shape.setdefault("max_seq_len", 131_072)
    shape.setdefault("vocab_size", 262_144)
    shape.setdefault("attention_pattern", _GEMMA3_PATTERN)
    shape.setdefault("head_dim", 256)
    shape.setdefault("global_head_dim", 512)
    shape.setdefault("final_logit_softcap", 30.0)
    return TransformerConfig(
        name=name,
        generation=4,
        use_post_attn_norm=True,
        use_post_ffw_norm=True,
        use_qk_norm=True,
        query_pre_attn_scalar=1.0,  # queries are not scaled
        rope_base_local=10_000.0,
        rope_base_global=1_000_000.0,
        rope_fraction_global=0.25,
        norm_plus_one=False,
        use_v_norm=True,
        use_layer_scalar=True,
        **shape,
    )


# Tiny Gemma 4 models of each kind, for tests: dense (keys double as values on global layers), E-style
# (per-layer inputs, KV sharing with double-wide feed-forwards) and mixture-of-experts.
_TINY_GEMMA4: dict[str, dict[str, Any]] = {
    "dense": {"num_global_kv_heads": 1, "attention_k_eq_v": True},
    "e": {
        "per_layer_input_dim": 8,
        "num_kv_shared_layers": 2,
        "double_wide_shared_mlp": True,
    },
    "moe": {
        "num_global_kv_heads": 1,
        "attention_k_eq_v": True,
        "num_experts": 4,
        "experts_per_token": 2,
        "expert_hidden_dim": 32,
    },
}


def _tiny_gemma4(kind: str, **changes: Any) -> TransformerConfig:
    shape: dict[str, Any] = {
        "num_layers": 6,
        "embed_dim": 64,
        "num_heads": 4,
        "num_kv_heads": 2,
        "head_dim": 16,
        "global_head_dim": 32,
        "hidden_dim": 128,
        "vocab_size": 1024,  # the packaged tiny Gemma 4 tokenizer's
        "sliding_window": 8,
        "max_seq_len": 512,
        "attention_pattern": (AttentionType.LOCAL,) * 2 + (AttentionType.GLOBAL,),
        "final_logit_softcap": 30.0,
        **_TINY_GEMMA4[kind],
    }
    return _gemma4(f"tiny-gemma4-{kind}", **{**shape, **changes})


_GEMMA1_3_PRESETS: dict[str, TransformerConfig] = {
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


# Gemma 4 text models (in PRESETS too). Shapes from the released checkpoints' config.json `text_config`
# (E2B, E4B: 128K context; 12B, 31B and 26B A4B: 256K); the 12B ("12B Unified", no vision or audio tower)
# from transformers' convert_gemma4_unified_weights.py and its config's defaults.
GEMMA4_PRESETS: dict[str, TransformerConfig] = {
    c.name: c
    for c in (
        _gemma4(
            "gemma4-e2b",
            num_layers=35,
            embed_dim=1536,
            num_heads=8,
            num_kv_heads=1,
            hidden_dim=6144,
            attention_pattern=(AttentionType.LOCAL,) * 4 + (AttentionType.GLOBAL,),
            per_layer_input_dim=256,
            num_kv_shared_layers=20,
            double_wide_shared_mlp=True,
        ),
        _gemma4(
            "gemma4-e4b",
            num_layers=42,
            embed_dim=2560,
            num_heads=8,
            num_kv_heads=2,
            hidden_dim=10_240,
            per_layer_input_dim=256,
            num_kv_shared_layers=18,
        ),
        _gemma4(
            "gemma4-12b",
            num_layers=48,
            embed_dim=3840,
            num_heads=16,
            num_kv_heads=8,
            num_global_kv_heads=1,
            attention_k_eq_v=True,
            hidden_dim=15_360,
            sliding_window=1024,
            max_seq_len=262_144,
        ),
        _gemma4(
            "gemma4-31b",
            num_layers=60,
            embed_dim=5376,
            num_heads=32,
            num_kv_heads=16,
            num_global_kv_heads=4,
            attention_k_eq_v=True,
            hidden_dim=21_504,
            sliding_window=1024,
            max_seq_len=262_144,
        ),
        _gemma4(
            "gemma4-26b-a4b",
            num_layers=30,
            embed_dim=2816,
            num_heads=16,
            num_kv_heads=8,
            num_global_kv_heads=2,
            attention_k_eq_v=True,
            hidden_dim=2112,
            num_experts=128,
            experts_per_token=8,
            expert_hidden_dim=704,
            sliding_window=1024,
            max_seq_len=262_144,
        ),
        *(_tiny_gemma4(kind) for kind in _TINY_GEMMA4),
    )
}

# Every preset by name: Gemma 1 to 3, the tiny and benchmark shapes, and Gemma 4.
PRESETS: dict[str, TransformerConfig] = {**_GEMMA1_3_PRESETS, **GEMMA4_PRESETS}


# Google publishes two Gemma 4 chat templates: with thinking off, the larger sizes' generation prompt ends
# in an empty, closed thought channel, E2B's and E4B's does not (tokenizer.gemma4_chat_prompt); the 12B
# ships the larger sizes' template.
GEMMA4_EMPTY_THOUGHT = frozenset({"gemma4-12b", "gemma4-31b", "gemma4-26b-a4b"})


def preset(name: str) -> TransformerConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown model variant {name!r}; valid: {', '.join(PRESETS)}") from None


def tiny_config(generation: int, kind: str = "dense", **changes: Any) -> TransformerConfig:
    """A tiny random config of one generation, for parity tests (sequences longer than the window);
    ``kind`` picks Gemma 4's: "dense", "e" (per-layer inputs, KV sharing) or "moe"."""
    if generation == 4:
        return _tiny_gemma4(kind, **changes)
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

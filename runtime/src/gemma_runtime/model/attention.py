"""Multi-query / grouped-query / multi-head attention with RoPE, optional QK-norm, logit soft-capping,
sliding windows and a key/value cache: the attention core over a batch (``attend_batch``, which the model
and training use; serving attends over its own cache in ``serve/forward.py``) and the NNX module that
holds the projections (their math is ``block.py``'s, shared with serving).

The cache holds, per layer, keys and values in slots plus the absolute position stored in each slot
(-1 when empty). Global layers get one slot per position; local (sliding-window) layers only a ring of
``sliding_window`` slots, which is all they ever read.
"""

from __future__ import annotations

import functools
from typing import Literal, TypedDict

import jax
import jax.numpy as jnp
from flax import nnx

from gemma_runtime.model import splash
from gemma_runtime.model.block import attention, softcap
from gemma_runtime.model.layers import RMSNorm, param
from gemma_runtime.variants import AttentionType, TransformerConfig

Array = jax.Array
MASK_VALUE = -2.3819763e38  # the official implementation's large negative, not -inf
# How a batch attends without a cache: "auto" (splash attention on TPUs where it can) or "xla".
Kernel = Literal["auto", "xla"]


class LayerCache(TypedDict):
    k: Array  # [B, S, K, H]
    v: Array  # [B, S, K, H]
    pos: Array  # [B, S] int32, absolute position held by each slot, -1 when empty


def cache_slots(config: TransformerConfig, attn_type: AttentionType, max_len: int) -> int:
    if attn_type == AttentionType.LOCAL and config.sliding_window:
        return min(config.sliding_window, max_len)
    return max_len


def init_layer_cache(
    config: TransformerConfig, attn_type: AttentionType, batch: int, max_len: int, dtype: jnp.dtype
) -> LayerCache:
    slots = cache_slots(config, attn_type, max_len)
    shape = (batch, slots, config.kv_heads_of(attn_type), config.head_dim_of(attn_type))
    return {
        "k": jnp.zeros(shape, dtype),
        "v": jnp.zeros(shape, dtype),
        "pos": jnp.full((batch, slots), -1, jnp.int32),
    }


def attention_mask(
    q_pos: Array, k_pos: Array, window: int | None, q_seg: Array | None, k_seg: Array | None
) -> Array:
    """[B, T, S] bool: causal by absolute position, inside the window, same non-padding segment."""
    allowed = (k_pos[:, None, :] <= q_pos[:, :, None]) & (k_pos[:, None, :] >= 0)
    if window is not None:
        allowed &= k_pos[:, None, :] > q_pos[:, :, None] - window
    if q_seg is not None and k_seg is not None:
        allowed &= (q_seg[:, :, None] == k_seg[:, None, :]) & (k_seg[:, None, :] != 0)
    return allowed


class Attention(nnx.Module):
    """The projections of one layer. A KV-shared layer (``shared``) has only q, o and the query norm;
    where keys double as values (Gemma 4's global layers with ``attention_k_eq_v``) there is no v."""

    def __init__(
        self,
        config: TransformerConfig,
        attn_type: AttentionType,
        *,
        rngs: nnx.Rngs,
        param_dtype: jnp.dtype,
        shared: bool = False,
    ) -> None:
        n, d = config.num_heads, config.embed_dim
        k, h = config.kv_heads_of(attn_type), config.head_dim_of(attn_type)

        def qk_norm() -> RMSNorm:
            return RMSNorm(
                h,
                eps=config.norm_eps,
                axis="head_dim",
                param_dtype=param_dtype,
                plus_one=config.norm_plus_one,
            )

        self.q = param(rngs, (n, d, h), ("heads", "embed", "head_dim"), param_dtype, d**-0.5)
        if not shared:
            self.k = param(rngs, (k, d, h), ("kv_heads", "embed", "head_dim"), param_dtype, d**-0.5)
            if not config.values_are_keys(attn_type):
                self.v = param(rngs, (k, d, h), ("kv_heads", "embed", "head_dim"), param_dtype, d**-0.5)
        self.o = param(rngs, (n, h, d), ("heads", "head_dim", "embed"), param_dtype, (n * h) ** -0.5)
        if config.use_qk_norm:
            self.query_norm = qk_norm()
            if not shared:
                self.key_norm = qk_norm()
        self.config = config
        self.attn_type = attn_type

    def weights(self) -> dict[str, Array | None]:
        """The projections (q, k, v [N, D, H], o [N, H, D]) and the QK-norm scales (None without)."""
        out: dict[str, Array | None] = {}
        for name in ("q", "k", "v", "o"):
            weight = getattr(self, name, None)
            out[name] = None if weight is None else weight[...]
        for name in ("query_norm", "key_norm"):
            norm = getattr(self, name, None)
            out[name] = None if norm is None else norm.scale[...]
        return out

    def __call__(
        self, x: Array, positions: Array, segment_ids: Array | None = None, cache: LayerCache | None = None
    ) -> tuple[Array, LayerCache | None]:
        config, attn_type = self.config, self.attn_type
        attend = functools.partial(
            attend_batch, config, attn_type, positions=positions, segment_ids=segment_ids, cache=cache
        )
        return attention(config, attn_type, self.weights(), x, positions, attend=attend)


def attend_batch(
    config: TransformerConfig,
    attn_type: AttentionType,
    q: Array,
    k: Array,
    v: Array,
    *,
    positions: Array,
    segment_ids: Array | None,
    cache: LayerCache | None,
    kernel: Kernel = "xla",
) -> tuple[Array, LayerCache | None]:
    """q [B, T, N, H], k and v [B, T, K, H] at ``positions`` [B, T] -> [B, T, N, H]: each token attends
    causally inside its segment (``segment_ids``, 0 for padding) and window, and over what ``cache``
    held; returns the cache with this chunk written. ``kernel``: "auto" attends with splash attention
    (``model/splash.py``) where there is no cache, the mesh being traced for is of TPUs and a tile
    divides the sequence; "xla", and every other case, with the einsums below."""
    if kernel == "auto" and cache is None:
        mesh = jax.sharding.get_abstract_mesh()
        if splash.on_tpu(mesh) and splash.unsupported(q.shape[1]) is None:
            return splash.attend(config, attn_type, q, k, v, segment_ids=segment_ids, mesh=mesh), None
    dtype = q.dtype
    k_all, v_all, k_pos, k_seg, q_seg = k, v, positions, segment_ids, segment_ids
    if cache is not None:
        # Attend over what the cache held plus this chunk, then store the chunk (a ring may be
        # smaller than the chunk, so writing first could overwrite keys this chunk still needs).
        k_all = jnp.concatenate([cache["k"].astype(dtype), k], axis=1)
        v_all = jnp.concatenate([cache["v"].astype(dtype), v], axis=1)
        k_pos = jnp.concatenate([cache["pos"], positions], axis=1)
        k_seg = q_seg = None
        cache = _write(cache, k, v, positions)

    window = config.sliding_window if attn_type == AttentionType.LOCAL else None
    mask = attention_mask(positions, k_pos, window, q_seg, k_seg)  # [B, T, S]
    b, t, n, h = q.shape
    kv = k.shape[2]
    q = q.reshape(b, t, kv, n // kv, h)  # [B, T, K, G, H]
    logits = jnp.einsum("BTKGH,BSKH->BKGTS", q, k_all, preferred_element_type=jnp.float32)
    logits = softcap(logits, config.attn_logit_softcap)
    logits = jnp.where(mask[:, None, None, :, :], logits, MASK_VALUE)
    probs = jax.nn.softmax(logits, axis=-1).astype(dtype)  # [B, K, G, T, S]
    return jnp.einsum("BKGTS,BSKH->BTKGH", probs, v_all).reshape(b, t, n, h), cache  # [B, T, N, H]


def _write(cache: LayerCache, k: Array, v: Array, positions: Array) -> LayerCache:
    """Store this chunk's keys and values in slot ``position % slots`` (a ring for local layers)."""
    slots = cache["k"].shape[1]
    if k.shape[1] > slots:  # only the newest `slots` positions can be kept
        k, v, positions = k[:, -slots:], v[:, -slots:], positions[:, -slots:]
    batch = jnp.arange(k.shape[0])[:, None]  # [B, 1]
    index = positions % slots  # [B, T]
    return {
        "k": cache["k"].at[batch, index].set(k.astype(cache["k"].dtype)),
        "v": cache["v"].at[batch, index].set(v.astype(cache["v"].dtype)),
        "pos": cache["pos"].at[batch, index].set(positions.astype(jnp.int32)),
    }

"""Training's attention on TPUs: Pallas's splash attention kernel (block-sparse flash attention), which
never holds a [B, N, T, S] score matrix. The XLA attention (``attention.attend_batch``) holds one per
layer: f32 [2, 16, 8192, 8192], 8 GiB, for a Gemma 7B layer at batch 2 x 8192 on one chip.

It covers every attention of the Gemma 1-3 presets: causal, a sliding window (Gemma 2 and 3's local
layers), soft-capped logits (Gemma 2), grouped and multi-query heads (K < N: the kernel's multi-query
form run once per KV head over its G = N / K query heads, so keys and values are never repeated), and
packed rows (segment ids). Queries arrive scaled (``block.queries_keys_values``), as the kernel takes them.
Gemma 4's attention reaches this kernel the same way: its differences (global head dim, keys as values,
value norm, shared keys and values) are all before the core.

The mask is by index in the row, where the XLA attention's is by position: the two agree on training's
rows, whose positions count up from 0 inside each segment (``train.data``). Padding (segment 0) attends to
itself here and to nothing in the XLA attention; no real token sees it either way, and it has no loss.

The kernel runs on each device's shard of the batch (and of the heads, over ``tensor``), under
``jax.shard_map`` on the mesh the step is traced for.
"""

from __future__ import annotations

import functools
from typing import Any, cast

import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as kernel_lib
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as mask_lib
from jax.sharding import AbstractMesh, PartitionSpec

from gemma_runtime.parallel.sharding import partition_spec
from gemma_runtime.variants import AttentionType, TransformerConfig

Array = jax.Array
# Tile sizes tried, largest first: a tile must divide the sequence, and its key side must be a multiple of
# the TPU's 128 lanes. 512 is MaxText's default for v5e training.
BLOCKS = (512, 256, 128)


def on_tpu(mesh: AbstractMesh | None) -> bool:
    """Whether the mesh the step is traced for is made of TPUs (a training plan's topology devices, or
    the chips of a TPU slice)."""
    device = None if mesh is None or mesh.empty else mesh.abstract_device
    return device is not None and device.platform == "tpu"


def block_size(length: int) -> int | None:
    """The kernel's tile for a sequence of ``length`` tokens, or None where no tile divides it."""
    return next((b for b in BLOCKS if length % b == 0), None)


def unsupported(length: int) -> str | None:
    """Why a sequence of ``length`` tokens cannot take the kernel (None: it can)."""
    if block_size(length) is None:
        return (
            f"splash attention needs a sequence that a tile of {', '.join(map(str, BLOCKS))} divides; "
            f"{length} tokens take the XLA attention"
        )
    return None


@functools.lru_cache(maxsize=64)
def _kernel(
    groups: int, length: int, window: int | None, softcap: float | None, interpret: bool
) -> kernel_lib.SplashAttentionKernel:
    """The multi-query kernel for ``groups`` query heads over one KV head (the mask's block structure is
    worked out here, once per shape, in NumPy)."""
    shape = (length, length)
    one: mask_lib.Mask
    if window is None:
        one = mask_lib.CausalMask(shape=shape)
    else:  # the key within `window` tokens back, the query's own included
        one = mask_lib.LocalMask(shape=shape, window_size=(window - 1, 0), offset=0)
    block = block_size(length)
    if block is None:
        raise ValueError(unsupported(length))
    sizes = kernel_lib.BlockSizes(
        block_q=block,
        block_kv=block,
        block_kv_compute=block,
        block_q_dkv=block,
        block_kv_dkv=block,
        block_kv_dkv_compute=block,
        block_q_dq=block,
        block_kv_dq=block,
    )
    # Concrete arrays (the mask's block tables), whatever trace asks first: the kernel is reused.
    with jax.ensure_compile_time_eval():
        made: kernel_lib.SplashAttentionKernel = kernel_lib.make_splash_mqa(
            mask=mask_lib.MultiHeadMask([one] * groups),
            block_sizes=sizes,
            attn_logits_soft_cap=softcap,
            head_shards=1,
            q_seq_shards=1,
            interpret=interpret,
        )
    return made


def _local(
    q: Array,
    k: Array,
    v: Array,
    segment_ids: Array | None,
    *,
    config: TransformerConfig,
    attn_type: AttentionType,
    interpret: bool,
) -> Array:
    """One device's shard: q [B, K, G, T, H], k and v [B, K, T, H], segment_ids [B, T] or None ->
    [B, K, G, T, H]."""
    b, kv, g, t, h = q.shape
    window = config.sliding_window if attn_type == AttentionType.LOCAL else None
    kernel = _kernel(g, t, window, config.attn_logit_softcap, interpret)
    qs = q.reshape(b * kv, g, t, h)  # [B*K, G, T, H]
    ks, vs = k.reshape(b * kv, t, h), v.reshape(b * kv, t, h)  # [B*K, T, H]
    if segment_ids is None:
        out = jax.vmap(kernel)(qs, ks, vs)
    else:
        seg = jnp.repeat(segment_ids, kv, axis=0)  # [B*K, T]: each KV head's rows carry their row's ids
        out = jax.vmap(lambda q, k, v, s: kernel(q, k, v, segment_ids=kernel_lib.SegmentIds(q=s, kv=s)))(
            qs, ks, vs, seg
        )
    return cast(Array, out).reshape(b, kv, g, t, h)  # [B, K, G, T, H] (no residuals were asked for)


def _specs(mesh: AbstractMesh, batch: int, kv_heads: int, groups: int) -> tuple[PartitionSpec, ...]:
    """Shard specs of q [B, K, G, T, H], k and v [B, K, T, H] and segment ids [B, T]: the batch over the
    table's batch axes, the heads over ``tensor`` (on K where it divides, else on G), whatever does not
    divide left whole."""
    rows = partition_spec(("batch",), mesh)[0]
    rows_size = _size(mesh, rows)
    rows = rows if batch % rows_size == 0 else None
    heads = partition_spec(("heads",), mesh)[0]
    heads_size = _size(mesh, heads)
    on_k = heads if heads is not None and kv_heads % heads_size == 0 else None
    on_g = heads if heads is not None and on_k is None and groups % heads_size == 0 else None
    q = PartitionSpec(rows, on_k, on_g, None, None)
    kv = PartitionSpec(rows, on_k, None, None)
    return q, kv, kv, PartitionSpec(rows, None)


def _size(mesh: AbstractMesh, axes: Any) -> int:
    names = () if axes is None else (axes,) if isinstance(axes, str) else axes
    size = 1
    for name in names:
        size *= mesh.shape[name]
    return size


def attend(
    config: TransformerConfig,
    attn_type: AttentionType,
    q: Array,
    k: Array,
    v: Array,
    *,
    segment_ids: Array | None,
    mesh: AbstractMesh | None,
    interpret: bool = False,
) -> Array:
    """q [B, T, N, H] (scaled), k and v [B, T, K, H], segment_ids [B, T] (0: padding) or None -> the
    attended values [B, T, N, H], as ``attention.attend_batch`` without a cache. ``mesh``: the mesh the
    step is traced for (None or empty: one device); ``interpret``: run Pallas's interpreter instead of the
    TPU kernel (tests on CPU)."""
    b, t, n, h = q.shape
    kv = k.shape[2]
    g = n // kv
    q5 = q.reshape(b, t, kv, g, h).transpose(0, 2, 3, 1, 4)  # [B, K, G, T, H]
    k4, v4 = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # [B, K, T, H]
    local = functools.partial(_local, config=config, attn_type=attn_type, interpret=interpret)
    if mesh is None or mesh.empty:
        out = local(q5, k4, v4, segment_ids)
    else:
        q_spec, k_spec, v_spec, seg_spec = _specs(mesh, b, kv, g)
        if segment_ids is None:
            sharded = jax.shard_map(
                lambda q, k, v: local(q, k, v, None),
                mesh=mesh,
                in_specs=(q_spec, k_spec, v_spec),
                out_specs=q_spec,
                check_vma=False,
            )
            out = sharded(q5, k4, v4)
        else:
            out = jax.shard_map(
                local,
                mesh=mesh,
                in_specs=(q_spec, k_spec, v_spec, seg_spec),
                out_specs=q_spec,
                check_vma=False,
            )(q5, k4, v4, segment_ids)
    return out.transpose(0, 3, 1, 2, 4).reshape(b, t, n, h)  # [B, T, N, H]

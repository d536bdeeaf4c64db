"""The model's math, once, as pure functions over arrays: the embedding, RMSNorm, the attention
projections with QK-norm, RoPE and query scaling, soft-capping, the GeGLU feed-forward, the output
projection, and ``block``, which puts them together around an attention core passed in as a function.

Both paths call these: the NNX modules (training, and the model's own cache) and the serving step
(``serve/forward.py``). They differ only in how they attend (over a batch with masks, or over the
serving KV cache: the ``attend`` argument) and in how they hold parameters. A layer's parameters come
as a mapping by name (q, k, v, o, gate, up, down, and the norm scales, None for a norm the config has
not); a projection is held in the model's layout (q/k/v [N, D, H], o [N, H, D]) or as serving's flat
matrix (q/k/v [D, N*H], o [N*H, D], possibly int8: ``serve/weights.py``), and the functions read both.

Gemma 4 adds (names as ``block`` reads them, absent or None where the config has none): a v projection
of None where keys double as values, ``layer_scalar`` [1], the mixture of experts (``router`` [D, E],
``router_scale`` [D], ``per_expert_scale`` [E], ``experts_gate``/``experts_up`` [E, D, M],
``experts_down`` [E, M, D], norms ``pre_ffw_norm_2``, ``post_ffw_norm_1``, ``post_ffw_norm_2``) and the
per-layer input (``per_layer_gate`` [D, P], ``per_layer_projection`` [P, D], ``post_per_layer_norm``).
Global and local layers may differ in head dim H and KV heads K (``TransformerConfig.head_dim_of``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

from gemma_runtime.axes import mesh_axes
from gemma_runtime.model.matmul import PLAIN, Int8, Products, Weight, ndim, take_rows
from gemma_runtime.parallel.sharding import fitted_spec
from gemma_runtime.variants import AttentionType, TransformerConfig

Array = jax.Array
Params = Mapping[str, Any]  # a layer's weights and norm scales by name
# The attention core: q [B, T, N, H] (roped and scaled), k and v [B, T, K, H] -> the attended values
# [B, T, N, H] and whatever the core keeps (an updated cache).
Attend = Callable[[Array, Array, Array], tuple[Array, Any]]


def rms_norm(x: Array, scale: Array | None, eps: float, plus_one: bool = True) -> Array:
    """x / rms(x) * (1 + scale) (Gemma 1-3), or * scale (``plus_one=False``, Gemma 4), computed in f32
    whatever the dtype; no scale: x as it is (a norm the config has not)."""
    if scale is None:
        return x
    normed = _normalized(x, eps)  # before the scale's conversion: Gemma 1-3's programs stay as they were
    factor = scale.astype(jnp.float32)
    return (normed * (1.0 + factor if plus_one else factor)).astype(x.dtype)


def _normalized(x: Array, eps: float) -> Array:
    x32 = x.astype(jnp.float32)
    return x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)


def rms_normalize(x: Array, eps: float) -> Array:
    """x / rms(x), without a scale (Gemma 4's value norm and router norm), in f32."""
    return _normalized(x, eps).astype(x.dtype)


def norm(config: TransformerConfig, x: Array, scale: Array | None) -> Array:
    """The config's RMSNorm (its epsilon and scale form); no scale: x as it is."""
    return rms_norm(x, scale, config.norm_eps, config.norm_plus_one)


def softcap(x: Array, cap: float | None) -> Array:
    return x if cap is None else jnp.tanh(x / cap) * cap


def apply_rope(
    x: Array, positions: Array, *, base: float, scale: float = 1.0, fraction: float = 1.0
) -> Array:
    """Rotary embedding, split-half convention: rotate (first half, second half) of the head dim.

    x: [B, T, N, H], positions: [B, T]. ``scale`` divides positions (linear RoPE scaling).
    ``fraction`` < 1 is proportional RoPE (Gemma 4's global layers): only the first
    ``fraction * H / 2`` frequencies (the fastest) rotate, each with the timescale it has at full
    width; the other pairs pass unrotated.
    """
    half = x.shape[-1] // 2
    timescale = base ** (2 * jnp.arange(half, dtype=jnp.float32) / x.shape[-1])  # [H/2]
    angles = positions[..., None].astype(jnp.float32) / scale / timescale  # [B, T, H/2]
    if fraction < 1.0:
        turning = int(fraction * x.shape[-1] // 2)  # as transformers counts them
        angles = jnp.where(jnp.arange(half) < turning, angles, 0.0)
    sin, cos = jnp.sin(angles)[:, :, None, :], jnp.cos(angles)[:, :, None, :]  # [B, T, 1, H/2]
    first, second = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    rotated = jnp.concatenate([first * cos - second * sin, second * cos + first * sin], axis=-1)
    return rotated.astype(x.dtype)


def embed(table: Weight, tokens: Array, dtype: jnp.dtype) -> Array:
    """Token embeddings [..., D] of ``tokens`` [...], scaled by sqrt(D). The factor is cast to the
    activation dtype first, as the reference implementations do."""
    x = take_rows(table, tokens, dtype)  # [..., D]
    return x * jnp.asarray(math.sqrt(x.shape[-1]), dtype)


def logits(config: TransformerConfig, table: Weight, hidden: Array, products: Products = PLAIN) -> Array:
    """The tied output projection of final-normed ``hidden`` [B, T, D] -> [B, T, V] f32, soft-capped."""
    out = products(hidden, table, "BTD,VD->BTV", "embedding").astype(jnp.float32)
    return softcap(out, config.final_logit_softcap)


def to_heads(x: Array, weight: Weight, heads: int, head_dim: int, products: Products = PLAIN) -> Array:
    """x [B, T, D] -> [B, T, N, H] through q, k or v, in either layout."""
    if ndim(weight) == 3:  # [N, D, H]
        return products(x, weight, "BTD,NDH->BTNH")
    b, t, _ = x.shape
    return products(x, weight, "BTD,DE->BTE").reshape(b, t, heads, head_dim)  # [B, T, N, H]


def from_heads(x: Array, weight: Weight, products: Products = PLAIN) -> Array:
    """x [B, T, N, H] -> [B, T, D] through o, in either layout."""
    if ndim(weight) == 3:  # [N, H, D]
        return products(x, weight, "BTNH,NHD->BTD", "o")
    b, t, n, h = x.shape
    return products(x.reshape(b, t, n * h), weight, "BTE,ED->BTD", "o")


def queries_keys_values(
    config: TransformerConfig,
    attn_type: AttentionType,
    p: Params,
    x: Array,
    positions: Array,
    *,
    products: Products = PLAIN,
    shared_kv: tuple[Array, Array] | None = None,
) -> tuple[Array, Array, Array]:
    """Normed input x [B, T, D] at ``positions`` [B, T] -> q [B, T, N, H] (QK-normed, roped, scaled),
    k [B, T, K, H] (QK-normed, roped) and v [B, T, K, H] (value-normed where the config says). A
    KV-shared layer takes its keys and values as ``shared_kv`` and projects only queries."""
    n, kv, h = config.num_heads, config.kv_heads_of(attn_type), config.head_dim_of(attn_type)
    base, scale, fraction = config.rope_of(attn_type)
    # In Gemma 1-3's order (q, k, v projections, then the norms, then RoPE), so that their compiled
    # programs are unchanged by Gemma 4's additions.
    q = to_heads(x, p["q"], n, h, products)
    if shared_kv is None:
        k = to_heads(x, p["k"], kv, h, products)
        v = k if config.values_are_keys(attn_type) else to_heads(x, p["v"], kv, h, products)
    else:
        k, v = shared_kv
    if config.use_qk_norm:
        q = norm(config, q, p["query_norm"])
        if shared_kv is None:
            k = norm(config, k, p["key_norm"])
    if config.use_v_norm and shared_kv is None:
        v = rms_normalize(v, config.norm_eps)
    q = apply_rope(q, positions, base=base, scale=scale, fraction=fraction)
    q = q * jnp.asarray(config.query_scale, x.dtype)
    if shared_kv is None:
        k = apply_rope(k, positions, base=base, scale=scale, fraction=fraction)
    return q, k, v


def attention(
    config: TransformerConfig,
    attn_type: AttentionType,
    p: Params,
    x: Array,
    positions: Array,
    *,
    attend: Attend,
    products: Products = PLAIN,
    shared_kv: tuple[Array, Array] | None = None,
) -> tuple[Array, Any]:
    """The attention sub-layer of normed x [B, T, D] -> ([B, T, D], what ``attend`` keeps)."""
    q, k, v = queries_keys_values(config, attn_type, p, x, positions, products=products, shared_kv=shared_kv)
    out, kept = attend(q, k, v)  # [B, T, N, H]
    return from_heads(out, p["o"], products), kept


def feed_forward(p: Params, x: Array, products: Products = PLAIN) -> Array:
    """GeGLU: gelu_tanh(x W_gate) * (x W_up), then W_down. x [B, T, D] -> [B, T, D]."""
    gate = products(x, p["gate"], "BTD,DF->BTF")
    up = products(x, p["up"], "BTD,DF->BTF")
    hidden = jax.nn.gelu(gate, approximate=True) * up  # [B, T, F]
    return products(hidden, p["down"], "BTF,FD->BTD", "down")


def route(config: TransformerConfig, p: Params, x: Array) -> tuple[Array, Array]:
    """The router of the mixture of experts: x [S, D] (the block's residual stream, not normed) ->
    the chosen experts [S, k] and their weights [S, k] (f32): softmax over all experts, the top k
    renormalised to sum to one, each times its expert's learned scale."""
    h = rms_normalize(x, config.norm_eps) * p["router_scale"].astype(x.dtype)
    h = h * jnp.asarray(config.embed_dim**-0.5, x.dtype)
    scores = jnp.einsum("SD,DE->SE", h, p["router"].astype(x.dtype)).astype(jnp.float32)
    probs = jax.nn.softmax(scores, axis=-1)  # [S, E]
    weights, chosen = jax.lax.top_k(probs, config.experts_per_token)  # [S, k]
    weights = weights / jnp.sum(weights, axis=-1, keepdims=True)
    return chosen, weights * p["per_expert_scale"].astype(jnp.float32)[chosen]


def experts(
    p: Params,
    x: Array,
    chosen: Array,
    weights: Array,
    *,
    products: Products = PLAIN,
) -> Array:
    """Each token through its chosen experts' GeGLU feed-forwards, summed by the router's weights.
    x [S, D], chosen and weights [S, k] -> [S, D]. The (token, expert) pairs are sorted by expert and
    run as grouped products (``ragged_dot``): each expert's weights are read once, for its tokens only.
    Without ``products.grouped_experts``: every expert over every token, weighted (zero where unchosen).

    On a mesh with an ``expert`` axis (the one being traced for) the experts are split over it (expert
    parallelism) and each expert's hidden axis over ``tensor``: every device runs its own experts' share
    for the tokens it holds, and the partial sums add up over both axes."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or mesh.shape.get("expert", 1) == 1:
        return _local_experts(p, x, chosen, weights, first=0, grouped=products.grouped_experts)
    return _parallel_experts(p, x, chosen, weights, mesh=mesh, products=products)


def _parallel_experts(
    p: Params, x: Array, chosen: Array, weights: Array, *, mesh: Any, products: Products
) -> Array:
    """:func:`experts` mapped over the mesh: tokens as the step holds them (rows over ``products.
    token_axes``, replicated over ``expert`` and ``tensor``), the experts' weights as the logical-axis table
    splits them (gathered over ``fsdp`` first, as FSDP does)."""
    count, degree = _experts(p), mesh.shape["expert"]
    if count % degree:
        raise ValueError(f"mesh expert {degree} does not divide the model's {count} experts; use a divisor")
    token_axes = mesh_axes("batch") if products.token_axes is None else products.token_axes
    rows = PartitionSpec(tuple(a for a in token_axes if mesh.shape.get(a, 1) > 1) or None)
    names = ("experts_gate", "experts_up", "experts_down")
    axes = (("experts", None, "mlp"), ("experts", None, "mlp"), ("experts", "mlp", None))
    split = {name: _expert_spec(p[name], logical, mesh) for name, logical in zip(names, axes, strict=True)}
    values = [spec.values if isinstance(spec, Int8) else spec for spec in split.values()]
    summed = tuple(a for a in ("expert", "tensor") if any(a in spec for spec in values))

    def local(tokens: tuple[Array, Array, Array], mine: dict[str, Weight]) -> Array:
        first = jax.lax.axis_index("expert") * _experts(mine)
        out = _local_experts(mine, *tokens, first=first, grouped=products.grouped_experts)
        total: Array = jax.lax.psum(out, summed)
        return total

    specs = ((rows, rows, rows), split)
    # check_vma off: the loop over local experts starts its sum from zeros that do not vary over the
    # mesh; the psum above makes the result the same on every device of an expert x tensor group.
    mapped = jax.shard_map(local, mesh=mesh, in_specs=specs, out_specs=rows, check_vma=False)
    out: Array = mapped((x, chosen, weights), {name: p[name] for name in names})
    return out


def _experts(p: Params) -> int:
    """How many experts ``p`` holds (full-precision or int8)."""
    gate = p["experts_gate"]
    return int((gate.values if isinstance(gate, Int8) else gate).shape[0])


def _expert_spec(weight: Weight, logical: tuple[str | None, ...], mesh: Any) -> Any:
    """An expert weight's spec from the table; int8: its values' and its scale's (the scale has the
    values' axes but the contracted middle one)."""
    if not isinstance(weight, Int8):
        return fitted_spec(logical, weight.shape, mesh)
    kept = (logical[0], logical[2])
    return Int8._make(
        (fitted_spec(logical, weight.values.shape, mesh), fitted_spec(kept, weight.scale.shape, mesh))
    )


def _dense(weight: Weight, dtype: jnp.dtype) -> Array:
    """An expert weight [..., I, O] in ``dtype``: int8 values times their scale [..., O]."""
    if isinstance(weight, Int8):
        return weight.values.astype(dtype) * jnp.expand_dims(weight.scale, -2).astype(dtype)
    return weight.astype(dtype)


def _local_experts(p: Params, x: Array, chosen: Array, weights: Array, *, first: Any, grouped: bool) -> Array:
    """The experts ``first`` .. ``first + E'`` of ``p`` (E' of them, [E', D, M] and [E', M, D], full
    precision or int8 with a scale per expert and output channel) over x [S, D]; a pair whose expert is
    elsewhere adds nothing. -> [S, D]."""
    count = _experts(p)
    local = chosen - first  # [S, k]
    mine = (local >= 0) & (local < count)
    local, weights = jnp.where(mine, local, count), jnp.where(mine, weights, 0.0)
    if not grouped:
        return _every_expert(p, x, local, weights)
    s, k = chosen.shape
    expert = local.reshape(s * k)
    order = jnp.argsort(expert, stable=True)  # pairs grouped by expert, the others' last
    token = order // k
    sizes = jnp.bincount(expert, length=count + 1)[:count].astype(jnp.int32)  # [E']
    rows = x[token]  # [S*k, D]

    def grouped_product(a: Array, w: Weight) -> Array:
        return jax.lax.ragged_dot(a, _dense(w, a.dtype), sizes)  # rows past the groups: zero

    hidden = jax.nn.gelu(grouped_product(rows, p["experts_gate"]), approximate=True)
    out = grouped_product(hidden * grouped_product(rows, p["experts_up"]), p["experts_down"])  # [S*k, D]
    out = out * weights.reshape(s * k)[order][:, None].astype(out.dtype)
    return jnp.zeros_like(x).at[token].add(out)


def _every_expert(p: Params, x: Array, chosen: Array, weights: Array) -> Array:
    """:func:`experts` as a loop over experts, each over every token, weighted by the router (zero for
    a token that did not choose it; ``chosen`` past the experts adds nothing). x [S, D] -> [S, D]."""
    s = x.shape[0]
    e = _experts(p)
    combine = jnp.zeros((s, e), jnp.float32).at[jnp.arange(s)[:, None], chosen].add(weights, mode="drop")

    def one(total: Array, expert: Array) -> tuple[Array, None]:
        def weight(name: str) -> Array:
            one_expert = jax.tree.map(
                lambda a: jax.lax.dynamic_index_in_dim(a, expert, keepdims=False), p[name]
            )
            return _dense(one_expert, x.dtype)  # int8: this expert's values converted, one at a time

        hidden = jax.nn.gelu(x @ weight("experts_gate"), approximate=True) * (x @ weight("experts_up"))
        share = jax.lax.dynamic_index_in_dim(combine, expert, axis=1).astype(x.dtype)  # [S, 1]
        return total + (hidden @ weight("experts_down")) * share, None

    total: Array = jax.lax.scan(one, jnp.zeros_like(x), jnp.arange(e))[0]
    return total


def mixture_of_experts(config: TransformerConfig, p: Params, x: Array, products: Products = PLAIN) -> Array:
    """The MoE branch of a Gemma 4 block: routed on the residual stream x [B, T, D], run on its
    ``pre_ffw_norm_2`` norm, post-normed -> [B, T, D]."""
    b, t, d = x.shape
    flat = x.reshape(b * t, d)
    chosen, weights = route(config, p, flat)
    out = experts(p, norm(config, flat, p["pre_ffw_norm_2"]), chosen, weights, products=products)
    return norm(config, out.reshape(b, t, d), p["post_ffw_norm_2"])


def per_layer_inputs(
    config: TransformerConfig,
    tokens: Array,
    x: Array,
    *,
    table: Weight,
    projection: Weight,
    norm_scale: Array,
    products: Products = PLAIN,
) -> Array:
    """Gemma 4's per-layer inputs [B, T, L, P] for ``tokens`` [B, T] and their embeddings x [B, T, D]:
    the token's row of the per-layer table [V, L*P] (scaled by sqrt(P)) and a projection of x (scaled
    by D^-1/2, normed), summed and scaled by 2^-1/2."""
    b, t, d = x.shape
    layers, width = config.num_layers, config.per_layer_input_dim
    rows = take_rows(table, tokens, x.dtype) * jnp.asarray(math.sqrt(width), x.dtype)
    projected = products(x, projection, "BTD,DE->BTE") * jnp.asarray(d**-0.5, x.dtype)
    projected = norm(config, projected.reshape(b, t, layers, width), norm_scale)
    return (projected + rows.reshape(b, t, layers, width)) * jnp.asarray(2**-0.5, x.dtype)


def block(
    config: TransformerConfig,
    attn_type: AttentionType,
    p: Params,
    x: Array,
    positions: Array,
    *,
    attend: Attend,
    products: Products = PLAIN,
    shared_kv: tuple[Array, Array] | None = None,
    per_layer_input: Array | None = None,
) -> tuple[Array, Any]:
    """One decoder block: pre-norm attention and feed-forward, each with its optional post-norm and a
    residual. x [B, T, D] -> ([B, T, D], what ``attend`` keeps). Gemma 4: the mixture of experts beside
    the feed-forward, the per-layer input ``per_layer_input`` [B, T, P] through its gate, and the
    layer's scalar; a KV-shared layer takes its keys and values as ``shared_kv``."""
    h = norm(config, x, p["pre_attention_norm"])
    attn, kept = attention(
        config, attn_type, p, h, positions, attend=attend, products=products, shared_kv=shared_kv
    )
    x = x + norm(config, attn, p["post_attention_norm"])
    ffw = feed_forward(p, norm(config, x, p["pre_ffw_norm"]), products)
    if config.num_experts:
        ffw = norm(config, ffw, p["post_ffw_norm_1"]) + mixture_of_experts(config, p, x, products)
    x = x + norm(config, ffw, p["post_ffw_norm"])
    if per_layer_input is not None:
        gate = jax.nn.gelu(products(x, p["per_layer_gate"], "BTD,DP->BTP"), approximate=True)
        gated = products(gate * per_layer_input, p["per_layer_projection"], "BTP,PD->BTD")
        x = x + norm(config, gated, p["post_per_layer_norm"])
    if config.use_layer_scalar:
        x = x * p["layer_scalar"].astype(x.dtype)
    return x, kept

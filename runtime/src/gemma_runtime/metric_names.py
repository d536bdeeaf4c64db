"""Prometheus metric names that cross the package boundary: the operator's HorizontalPodAutoscaler and
metrics pipeline target them, the server exports them. JAX-free, so the operator may import it."""

from __future__ import annotations

REQUESTS_WAITING = "gemma_requests_waiting"  # gauge: requests queued for a decode slot
SLOTS_IN_USE = "gemma_slots_in_use"  # gauge: decode slots holding a request
BATCH_OCCUPANCY_PERCENT = "gemma_batch_occupancy_percent"  # gauge: slots in use over slots, 0-100

# The Gateway API Inference Extension's endpoint picker reads vLLM's names (its model server protocol):
# these five are its default "vllm" engine config (v1.5.0, the release the cluster tier runs), each
# scraped from every pod's /metrics. The two info gauges carry their figures in labels.
VLLM_REQUESTS_WAITING = "vllm:num_requests_waiting"  # gauge
VLLM_REQUESTS_RUNNING = "vllm:num_requests_running"  # gauge
VLLM_KV_CACHE_USAGE = "vllm:kv_cache_usage_perc"  # gauge, a fraction 0-1
VLLM_LORA_INFO = "vllm:lora_requests_info"  # labels running_lora_adapters, waiting_lora_adapters, max_lora
VLLM_CACHE_CONFIG = "vllm:cache_config_info"  # labels block_size (tokens), num_gpu_blocks

# Every series the operator's autoscaler may target; a runtime test checks a live server exports each.
AUTOSCALING = (REQUESTS_WAITING, BATCH_OCCUPANCY_PERCENT)
INFERENCE_GATEWAY_LOAD = (VLLM_REQUESTS_WAITING, VLLM_REQUESTS_RUNNING, VLLM_KV_CACHE_USAGE)
INFERENCE_GATEWAY = (*INFERENCE_GATEWAY_LOAD, VLLM_LORA_INFO, VLLM_CACHE_CONFIG)

"""Prometheus metric names that cross the package boundary: the operator's HorizontalPodAutoscaler and
metrics pipeline target them, the server exports them. JAX-free, so the operator may import it."""

from __future__ import annotations

REQUESTS_WAITING = "gemma_requests_waiting"  # gauge: requests queued for a decode slot
SLOTS_IN_USE = "gemma_slots_in_use"  # gauge: decode slots holding a request
BATCH_OCCUPANCY_PERCENT = "gemma_batch_occupancy_percent"  # gauge: slots in use over slots, 0-100

# The Gateway API Inference Extension's endpoint picker reads vLLM's names (its model server protocol).
VLLM_REQUESTS_WAITING = "vllm:num_requests_waiting"  # gauge
VLLM_REQUESTS_RUNNING = "vllm:num_requests_running"  # gauge
VLLM_KV_CACHE_USAGE = "vllm:kv_cache_usage_perc"  # gauge, a fraction 0-1

# Every series the operator's autoscaler may target; a runtime test checks a live server exports each.
AUTOSCALING = (REQUESTS_WAITING, BATCH_OCCUPANCY_PERCENT)
INFERENCE_GATEWAY = (VLLM_REQUESTS_WAITING, VLLM_REQUESTS_RUNNING, VLLM_KV_CACHE_USAGE)

"""The metric names are a contract between the packages: every series the operator's autoscaler targets,
and every series the Inference Gateway's endpoint picker reads (vLLM's names), is a gauge on a live
server's /metrics, the picker's load figures equal our own, and its two info gauges carry, in vLLM's
labels, no LoRA adapters and one cache block per decode slot. (tests/cluster/operator/test_endpoint_picker.py
reads the list from the picker's own source and runs the picker against real servers.)"""

from __future__ import annotations

import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gemma_operator.api.validation import parse
from gemma_operator.config import Settings
from gemma_operator.offline import PLACEHOLDER_UID
from gemma_operator.render.serving import render_server
from gemma_runtime import metric_names
from gemma_runtime.serve.scheduler import Request
from gemma_runtime.serve.server import create_app
from tests.api_cases import DELETE, merge, sample
from tests.runtime.serve.helpers import Collect, fake_service, running_server


def _gauges(base: str) -> dict[str, float]:
    text = httpx.get(f"{base}/metrics", timeout=10).text
    return {
        family.name: family.samples[0].value
        for family in text_string_to_metric_families(text)
        if family.type == "gauge" and family.samples and not family.samples[0].labels
    }


def _hpa_metrics(autoscaling: dict[str, object]) -> list[str]:
    patch = {"metadata": {"namespace": "ns", "uid": PLACEHOLDER_UID}, "spec": {"autoscaling": autoscaling}}
    doc = merge(sample("server-gemma2-9b-int8-v6e"), patch)
    (hpa,) = [c for c in render_server(doc, parse(doc), Settings()) if c["kind"] == "HorizontalPodAutoscaler"]
    return [m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"]]


@pytest.mark.parametrize(
    "autoscaling",
    [{"targetQueueDepth": 8}, {"targetQueueDepth": DELETE, "targetBatchOccupancy": 75}],
    ids=["queue-depth", "batch-occupancy"],
)
def test_the_rendered_autoscaler_targets_series_a_live_server_exports(autoscaling: dict[str, object]) -> None:
    service, _ = fake_service()
    with running_server(create_app(service)) as base:
        assert service.wait_ready(10)
        exported = _gauges(base)
    targets = _hpa_metrics(autoscaling)
    assert targets
    assert all(name in exported for name in targets), (targets, sorted(exported))
    assert all(name in exported for name in metric_names.AUTOSCALING)


def test_the_endpoint_pickers_series_carry_our_queue_and_slot_figures() -> None:
    service, _ = fake_service(slots=2, max_queued=4, step_delay=0.05)
    with running_server(create_app(service)) as base:
        assert service.wait_ready(10)
        scheduler = service.scheduler
        assert scheduler is not None
        idle = _gauges(base)
        assert [idle[name] for name in metric_names.INFERENCE_GATEWAY_LOAD] == [0, 0, 0]
        requests = [Request([5], 200, Collect()) for _ in range(3)]  # two hold both slots, one waits
        for request in requests:
            scheduler.submit(request)
        deadline = time.monotonic() + 20
        while (gauges := _gauges(base))[metric_names.SLOTS_IN_USE] < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        for request in requests:
            scheduler.cancel(request)
    assert gauges[metric_names.VLLM_REQUESTS_WAITING] == gauges[metric_names.REQUESTS_WAITING] == 1
    assert gauges[metric_names.VLLM_REQUESTS_RUNNING] == gauges[metric_names.SLOTS_IN_USE] == 2
    assert gauges[metric_names.VLLM_KV_CACHE_USAGE] == 1.0  # every slot's cache reserved
    assert gauges[metric_names.BATCH_OCCUPANCY_PERCENT] == 100.0


def test_the_endpoint_pickers_info_gauges_say_no_adapters_and_one_block_per_slot() -> None:
    service, _ = fake_service(slots=3, max_len=192)
    with running_server(create_app(service)) as base:
        assert service.wait_ready(10)
        text = httpx.get(f"{base}/metrics", timeout=10).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert set(metric_names.INFERENCE_GATEWAY) <= set(families), sorted(families)
    (lora,) = families[metric_names.VLLM_LORA_INFO].samples
    assert lora.labels == {"running_lora_adapters": "", "waiting_lora_adapters": "", "max_lora": "0"}
    (cache,) = families[metric_names.VLLM_CACHE_CONFIG].samples
    assert cache.labels == {"block_size": "192", "num_gpu_blocks": "3"}

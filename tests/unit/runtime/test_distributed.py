"""jax.distributed's arguments from the operator's environment: one slice names the process by the Job's
completion index; across slices the id is slice x hosts per slice + worker, since the index repeats."""

from __future__ import annotations

import pytest

from gemma_runtime.config import ConfigError, Distributed, distributed

COORDINATOR = "t-a0-0.t.ns.svc:8476"


def test_one_process_needs_no_distributed_start() -> None:
    assert distributed({}) is None
    assert distributed({"JAX_COORDINATOR_ADDRESS": COORDINATOR, "JAX_PROCESS_COUNT": "1"}) is None


def test_one_slice_takes_the_completion_index() -> None:
    env = {"JAX_COORDINATOR_ADDRESS": COORDINATOR, "JAX_PROCESS_COUNT": "4", "JAX_PROCESS_ID": "3"}
    assert distributed(env) == Distributed(COORDINATOR, 4, 3)


def test_several_slices_number_processes_slice_by_slice() -> None:
    base = {"JAX_COORDINATOR_ADDRESS": COORDINATOR, "JAX_PROCESS_COUNT": "8", "GEMMA_HOSTS_PER_SLICE": "4"}
    ids = {
        (s, w): distributed({**base, "MEGASCALE_SLICE_ID": str(s), "TPU_WORKER_ID": str(w)})
        for s in range(2)
        for w in range(4)
    }
    assert {k: d.process_id for k, d in ids.items() if d} == {
        (s, w): s * 4 + w for s in range(2) for w in range(4)
    }


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({}, "neither JAX_PROCESS_ID nor MEGASCALE_SLICE_ID"),
        ({"MEGASCALE_SLICE_ID": "1", "TPU_WORKER_ID": "0"}, "GEMMA_HOSTS_PER_SLICE: expected an integer"),
        ({"MEGASCALE_SLICE_ID": "2", "TPU_WORKER_ID": "0", "GEMMA_HOSTS_PER_SLICE": "2"}, "outside 0..3"),
        ({"JAX_PROCESS_ID": "x"}, "JAX_PROCESS_ID: expected an integer, got 'x'"),
    ],
)
def test_a_process_that_cannot_be_named_is_an_error(extra: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        distributed({"JAX_COORDINATOR_ADDRESS": COORDINATOR, "JAX_PROCESS_COUNT": "4", **extra})

"""MaxText's training step compiled for a TPU slice, its figures printed as one JSON line: run by
MaxText's own Python (``tests.bench.maxtext_env``), not ours.

usage: <maxtext venv>/bin/python tests/bench/maxtext_driver.py model_name=gemma-7b per_device_batch_size=2 ...

The arguments are MaxText's ``key=value`` overrides of its ``configs/base.yml``. The steps are those of
``maxtext.trainers.pre_train.train_compile.main`` (shaped state and batch, the train step jitted with
MaxText's shardings and compiled with its compiler options), without writing the executable, and with
what ``main`` only prints kept: XLA's memory and cost analysis of the compiled step, or the compiler's
out-of-memory message when it does not fit.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any


def pallas_kernels(text: str) -> dict[str, int]:
    """The Pallas kernels in the optimized HLO (``tpu_custom_call``s) by name, e.g. MaxText's splash
    attention forward and backward: the evidence of which attention the step runs."""
    counts: dict[str, int] = {}
    for line in text.splitlines():
        if 'custom_call_target="tpu_custom_call"' not in line:
            continue
        match = re.match(r"\s*(?:ROOT )?%([A-Za-z_]+?)(?:\.\d+)? = ", line)
        name = match[1] if match else "?"
        counts[name] = counts.get(name, 0) + 1
    return counts


def main(argv: list[str]) -> int:
    import jax
    from flax.core.spmd import logical_axis_rules as axis_rules
    from maxtext.configs import pyconfig  # type: ignore[import-not-found]
    from maxtext.trainers.pre_train import train, train_compile  # type: ignore[import-not-found]
    from maxtext.utils import maxtext_utils, sharding  # type: ignore[import-not-found]

    # As train_compile.main does before compiling.
    jax.config.update("jax_default_prng_impl", "unsafe_rbg")
    os.environ["LIBTPU_INIT_ARGS"] = (
        os.environ.get("LIBTPU_INIT_ARGS", "") + " --xla_tpu_spmd_rng_bit_generator_unsafe=true"
    )
    import maxtext  # type: ignore[import-not-found]

    base = Path(maxtext.__file__).parent / "configs" / "base.yml"
    config = pyconfig.initialize(["train_compile", str(base), *argv])
    train_compile.validate_config(config)
    mesh = train_compile.get_topology_mesh(config)
    args, kwargs, state_shardings, _, model = train_compile.get_shaped_inputs(mesh, config)
    params_shardings, state_shardings = sharding.maybe_update_params_sharding_with_opt(
        config, state_shardings
    )
    input_shardings = sharding.build_zero1_input_state_mesh_shardings(
        config, state_shardings, params_shardings
    )
    data_sharding = sharding.get_input_data_sharding(config, mesh)
    func, in_shard, out_shard, static, donate = maxtext_utils.get_functional_train_with_signature(
        train.train_step, data_sharding, input_shardings, model, config, params_shardings
    )
    out: dict[str, Any] = {
        "argv": argv,
        "mesh": {k: int(v) for k, v in mesh.shape.items() if v > 1},
        "devices": int(mesh.size),
        "num_decoder_layers": int(config.num_decoder_layers),
        "attention": str(config.attention),
        "remat_policy": str(config.remat_policy),
        "scan_layers": bool(config.scan_layers),
        "dtype": str(config.dtype),
        "weight_dtype": str(config.weight_dtype),
        "per_device_batch_size": float(config.per_device_batch_size),
        "max_target_length": int(config.max_target_length),
        "jax": jax.__version__,
    }
    # MaxText's own model-FLOP count per device and step (causal attention counted at half).
    total, weights, attention = maxtext_utils.calculate_tflops_training_per_device(config, log=False)
    out["model_tflops"] = {"total": total, "weights": weights, "attention": attention}
    started = time.monotonic()
    try:
        compiled = train_compile.jit_and_compile(
            func,
            args,
            kwargs,
            mesh,
            in_shard,
            out_shard,
            static,
            donate,
            config,
            axis_rules(config.logical_axis_rules),
        )
    except Exception as err:  # JaxRuntimeError; its type is not public API
        if "RESOURCE_EXHAUSTED" not in str(err):
            raise
        out.update(compile_seconds=time.monotonic() - started, error=str(err).splitlines()[0])
        print(json.dumps(out), flush=True)
        return 0
    out["compile_seconds"] = time.monotonic() - started
    memory = compiled.memory_analysis()
    cost = compiled.cost_analysis() or {}
    if isinstance(cost, list):
        cost = cost[0] if cost else {}
    out.update(
        argument_bytes=int(memory.argument_size_in_bytes),
        output_bytes=int(memory.output_size_in_bytes),
        alias_bytes=int(memory.alias_size_in_bytes),
        temp_bytes=int(memory.temp_size_in_bytes),
        flops=float(cost.get("flops", 0.0)),
        bytes_accessed=float(cost.get("bytes accessed", 0.0)),
        optimal_seconds=float(cost.get("optimal_seconds", 0.0)),
        kernels=pallas_kernels(compiled.as_text()),
    )
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

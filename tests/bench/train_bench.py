"""Training benchmark: our jitted step against a Hugging Face transformers training step on the same
shape (bench-small), data, machine and run; MFU against the measured peak of a large matrix product.

    python -m tests.bench.train_bench --output bench/train.json [--steps 6]

The first step of each side (compilation, allocator warm-up) is left out of the rates.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
from pathlib import Path
from typing import Any

import yaml

from gemma_runtime.config import load_train_config
from gemma_runtime.model import preset
from gemma_runtime.tokenizer import Tokenizer
from gemma_runtime.train import flops, loop
from gemma_runtime.train.command import sample_data
from tests.bench import results
from tests.bench.serve_bench import hf_config
from tests.runtime.reference.hf import REQUIREMENTS, SMOKE_TEST
from tests.runtime.reference.venvs import HERE, ensure_venv, run_worker

VARIANT, SEQUENCE, BATCH = "bench-small", 256, 8


def ours(workdir: Path, steps: int) -> tuple[dict[str, Any], Any]:
    doc = {
        "name": "bench",
        "model": {"variant": VARIANT, "tokenizer": str(Tokenizer.tiny().path)},
        "data": {"path": str(sample_data()), "format": "text"},
        "training": {"steps": steps, "global_batch_size": BATCH, "sequence_length": SEQUENCE,
                     "learning_rate": 1e-4, "warmup_steps": 0, "weight_decay": 0.01, "precision": "f32",
                     "remat": "none", "schedule": "constant"},
        "port": 0,
    }  # fmt: skip
    path = workdir / "train.yaml"
    path.write_text(yaml.safe_dump(doc))
    config = load_train_config(path)
    metrics = workdir / "ours.jsonl"
    training = loop.Training(config, loop.Options(metrics_file=metrics, log_every=1, show_bar=False))
    training.run()
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    return {"records": records}, training.dataset


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("bench/train.json"))
    parser.add_argument("--steps", type=int, default=6, help="timed steps per side, plus one warm-up")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", force=True)
    logging.getLogger("absl").setLevel(logging.WARNING)
    steps = args.steps + 1
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        peak = flops.measured_cpu_peak()
        result, dataset = ours(workdir, steps)
        batches = [dataset.batch(s).tokens.tolist() for s in range(steps)]
        python = ensure_venv("hf", REQUIREMENTS, SMOKE_TEST)
        hyper = {"learning_rate": 1e-4, "weight_decay": 0.01, "max_grad_norm": 1.0}
        request = {"config": hf_config(preset(VARIANT)), "batches": batches, "training": hyper}
        hf = run_worker(
            python, HERE.parent.parent / "bench" / "hf_train_worker.py", request, workdir, timeout=3600
        )
    per_token = flops.train_flops_per_token(preset(VARIANT), SEQUENCE)
    tokens = BATCH * SEQUENCE
    our_rates = [r["tokens_per_second"] for r in result["records"][1:] if r["tokens_per_second"]]
    hf_rates = [tokens / s for s in hf["step_seconds"][1:]]
    ours_tps, hf_tps = statistics.median(our_rates), statistics.median(hf_rates)
    out = {
        "variant": VARIANT, "sequence_length": SEQUENCE, "global_batch_size": BATCH,
        "timed_steps": args.steps,
        "params": preset(VARIANT).param_count(), "train_flops_per_token": per_token,
        "peak_flops_jax_matmul": peak, "peak_flops_torch_matmul": float(hf["torch_peak_flops"]),
        "ours_tokens_per_second": ours_tps, "hf_tokens_per_second": hf_tps, "speedup": ours_tps / hf_tps,
        "ours_mfu": ours_tps * per_token / peak, "hf_mfu": hf_tps * per_token / peak,
        "ours_step_tokens_per_second": our_rates, "hf_step_tokens_per_second": hf_rates,
        "ours_losses": [r["loss"] for r in result["records"]], "hf_losses": hf["losses"].tolist(),
        "hf_versions": hf["versions"].tolist(),
    }  # fmt: skip
    results.write(out, args.output)
    print(json.dumps({k: v for k, v in out.items() if not k.endswith("losses")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

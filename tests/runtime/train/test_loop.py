"""A training as users see it: the loss falls on the shipped text, /progress, /metrics and /healthz
report it, fine-tuning starts from an imported checkpoint, LoRA exports merged weights, and bad input
is a clear error."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import orbax.checkpoint as ocp
import pytest

from gemma_runtime.config import TrainConfig, load_train_config
from gemma_runtime.tokenizer import Tokenizer
from gemma_runtime.train import loop
from tests.runtime.serve.helpers import free_port
from tests.runtime.train import runner


def _unigram_entropy() -> float:
    ids = Tokenizer.tiny().encode(runner.sample().read_text())
    counts = np.bincount(ids)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def test_the_tiny_preset_learns_the_sample_text(tmp_path: Path) -> None:
    metrics = tmp_path / "m.jsonl"
    done = runner.train(["--steps", "60", "--metrics-file", str(metrics), "--log-every", "5"])
    assert done.returncode == 0, done.stderr[-3000:]
    losses = runner.losses(metrics)
    first, last = losses[1], losses[60]
    assert first > 6.5  # ln(1024) = 6.93: a random model
    # Below the text's unigram entropy: the model predicts from context, not just word frequencies.
    assert last < _unigram_entropy() - 0.5, (first, last)
    assert last < first - 2
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert set(records[-1]) == {"step", "loss", "learning_rate", "grad_norm", "tokens_per_second", "mfu"}
    assert records[-1]["tokens_per_second"] > 0
    assert 0 < records[-1]["mfu"] < 1


def _get(port: int, path: str) -> tuple[int, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return response.status, response.read().decode()


def _progress_when(port: int, check: Any, what: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    progress: dict[str, Any] = {}
    while not check(progress):
        assert time.monotonic() < deadline, f"{what}: {progress}"
        time.sleep(0.05)
        try:
            progress = json.loads(_get(port, "/progress")[1])
        except OSError:
            continue
    return progress


def test_progress_metrics_and_health_endpoints_and_a_requested_stop(tmp_path: Path) -> None:
    port = free_port()
    config = load_train_config(
        runner.config(
            tmp_path,
            "p",
            training={"steps": 10_000},
            checkpoints={"directory": str(tmp_path / "ck"), "interval_steps": 5},
        )
    )
    config = config.model_copy(update={"port": port, "host": "127.0.0.1"})
    training = loop.Training(config, loop.Options(log_every=2, show_bar=False))
    stop, outcome = loop.Stop(), dict[str, Any]()
    thread = threading.Thread(target=lambda: outcome.setdefault("result", training.run(stop)))
    thread.start()
    try:
        progress = _progress_when(
            port,
            lambda p: bool(p.get("last_checkpoint") and p.get("tokens_per_second")),
            "a committed checkpoint and a rate",
        )
        assert progress["name"] == "p"
        assert progress["total_steps"] == 10_000
        assert progress["state"] == "Running"
        assert progress["step"] >= 2
        assert progress["loss"] > 0
        assert 0 < progress["mfu"] < 1
        assert progress["eta_seconds"] > 0
        assert progress["last_checkpoint"]["uri"].endswith(f"/ck/{progress['last_checkpoint']['step']}")
        assert _get(port, "/healthz") == (200, "ok\n")
        status, text = _get(port, "/metrics")
        assert status == 200
        for series in (
            "gemma_train_step ",
            "gemma_train_loss ",
            "gemma_train_tokens_total ",
            "gemma_train_mfu ",
            "gemma_train_step_seconds_bucket",
            "gemma_train_checkpoint_step ",
        ):
            assert series in text, series
    finally:
        stop.requested.set()
        thread.join(timeout=120)
    result = outcome["result"]
    assert result.interrupted
    assert result.steps < 10_000
    assert result.checkpoint.endswith(f"/ck/{result.steps}")
    assert (tmp_path / "ck" / str(result.steps) / "_CHECKPOINT_METADATA").exists()


def test_a_checkpoint_is_reported_only_once_committed_and_the_run_ends_with_its_final_figures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Hold Orbax's background finalization of each save open until the test releases it: the step loop
    # goes on meanwhile, and nothing may name the held checkpoint before it is committed.
    held, release = threading.Event(), threading.Event()
    finalize = ocp.CheckpointManager._finalize

    def held_finalize(manager: ocp.CheckpointManager, step: int, steps_to_remove: list[int]) -> None:
        held.set()
        release.wait(timeout=120)
        finalize(manager, step, steps_to_remove)

    monkeypatch.setattr(ocp.CheckpointManager, "_finalize", held_finalize)
    port, message = free_port(), tmp_path / "termination-log"
    config = load_train_config(
        runner.config(
            tmp_path,
            "c",
            training={"steps": 12},
            checkpoints={"directory": str(tmp_path / "ck"), "interval_steps": 5},
        )
    ).model_copy(update={"port": port, "host": "127.0.0.1"})
    training = loop.Training(config, loop.Options(log_every=1, show_bar=False, message_file=message))
    outcome = dict[str, Any]()
    thread = threading.Thread(target=lambda: outcome.setdefault("result", training.run()))
    thread.start()
    try:
        assert held.wait(timeout=120), "the step-5 save never reached its finalization"
        during = _progress_when(port, lambda p: p.get("step", 0) >= 7, "steps past the held save")
        assert during["last_checkpoint"] is None, during
        assert "gemma_train_checkpoint_step 0.0" in _get(port, "/metrics")[1]
        release.set()
        after = _progress_when(port, lambda p: bool(p.get("last_checkpoint")), "the committed checkpoint")
        assert after["last_checkpoint"]["step"] in (5, 10, 12)
        assert ocp.step.is_checkpoint_finalized(tmp_path / "ck" / str(after["last_checkpoint"]["step"]))
    finally:
        release.set()
        thread.join(timeout=120)
    result = outcome["result"]
    assert not result.interrupted
    assert result.checkpoint == f"{tmp_path / 'ck'}/12"
    final = json.loads(message.read_text())  # what the kubelet hands the operator after the exit
    assert final["state"] == "Finished"
    assert (final["step"], final["total_steps"], final["eta_seconds"]) == (12, 12, 0)
    assert final["loss"] == pytest.approx(result.losses[12], abs=1e-5)
    assert final["last_checkpoint"]["step"] == 12
    assert final["last_checkpoint"]["uri"] == f"{tmp_path / 'ck'}/12"


def test_fine_tuning_starts_from_an_imported_checkpoint_and_lora_exports_merged_weights(
    tmp_path: Path,
) -> None:
    base = tmp_path / "base"
    first = runner.train(["--steps", "40", "--output", str(base)])
    assert first.returncode == 0, first.stderr[-3000:]
    tuned, metrics = tmp_path / "tuned", tmp_path / "m.jsonl"
    args = [
        "--checkpoint",
        str(base / "model"),
        "--tokenizer",
        str(Tokenizer.tiny().path),
        "--steps",
        "3",
        "--lora-rank",
        "4",
        "--output",
        str(tuned),
        "--metrics-file",
        str(metrics),
        "--log-every",
        "1",
    ]
    second = runner.train(args)
    assert second.returncode == 0, second.stderr[-3000:]
    assert runner.losses(metrics)[1] < 6.0  # where the base run ended, not a random model's ~7
    assert (tuned / "model" / "config.json").exists()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"training": {"steps": 0}}, "training.steps"),
        ({"mesh": {"data": -2}}, "mesh.data"),
        ({"training": {"schedule": "exponential"}}, "training.schedule"),
        (
            {"data": {"path": "/nonexistent/data.jsonl", "format": "jsonl"}},
            "/nonexistent/data.jsonl: no such",
        ),
    ],
)
def test_bad_config_is_a_clear_error(tmp_path: Path, changes: dict[str, Any], message: str) -> None:
    done = runner.train(["--config", str(runner.config(tmp_path, "bad", **changes))])
    assert done.returncode == 1
    assert message in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr


def test_the_progress_endpoint_defaults_to_the_operators_runtime_port() -> None:
    doc = {"name": "x", "model": {"variant": "tiny"}, "data": {"path": "/d"}, "training": {"steps": 1}}
    assert TrainConfig.model_validate(doc).port == 8000

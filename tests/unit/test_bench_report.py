"""`make bench`'s report: from the benchmarks' JSON results it writes bench/report.md with the tables and
PNG plots (latency against request rate, throughput against batch size, training tokens/s and loss) and
the compilation cache's second start."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.api_cases import REPO
from tests.bench import report


def test_report_writes_tables_and_plots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("serve.json", "train.json", "operator.json"):
        shutil.copy(REPO / "bench" / name, tmp_path / name)
    machine = {"peak_gflops": 190.0, "bandwidth_gbps": 28.0}
    sweep = {
        "model": "bench-small",
        "prompt": 64,
        "tokens": 32,
        "machine": machine,
        "weight_bytes": 1.0e9,
        "flops_per_token": 5.0e8,
        "rows": [{"batch": b, "tokens_per_second": 20.0 * b**0.6} for b in (1, 2, 4, 8)],
    }
    loss = {"steps": [5, 10, 15], "loss": [7.5, 6.1, 5.2], "tokens_per_second": [None, 900.0, 910.0]}
    (tmp_path / "sweep.json").write_text(json.dumps(sweep))
    (tmp_path / "loss.json").write_text(json.dumps(loss))
    start = {"ready_seconds": 30.0, "warm_up_seconds": 20.0, "cache_hits": 0.0, "cache_misses": 7.0}
    again = {"ready_seconds": 12.0, "warm_up_seconds": 5.0, "cache_hits": 7.0, "cache_misses": 0.0}
    case = {"variant": "tiny", "slots": 4, "max_sequence_length": 256, "max_prefill_length": 64}
    case |= {"first": start, "second": again, "cache_bytes": 1.3e6, "warm_up_ratio": 0.25, "ready_ratio": 0.4}
    (tmp_path / "compile_cache.json").write_text(json.dumps({"cases": [case]}))
    monkeypatch.setattr(report, "OUT", tmp_path)

    assert report.main() == 0

    text = (tmp_path / "report.md").read_text()
    for section in ("## Operator", "## Serving", "### Decode throughput against batch size", "## Training"):
        assert section in text
    assert "| tokens/s | 20.0 | 30.3 | 45.9 | 69.6 |" in text
    assert "7.50 at step 5 to 5.20 at step 15" in text
    row = "| tiny | 4 x 256 | 7 compiled, then 7 loaded | 30.0 s / 20.0 s | 12.0 s / 5.0 s | 0.25x | 1.3 MB |"
    assert row in text
    for plot in ("latency_vs_rate.png", "throughput_vs_batch.png", "training.png"):
        assert f"]({plot})" in text
        data = (tmp_path / plot).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
        assert len(data) > 5_000


def test_report_sets_ours_beside_maxtext(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copy(REPO / "bench" / "maxtext.json", tmp_path / "maxtext.json")
    result = json.loads((tmp_path / "maxtext.json").read_text())
    monkeypatch.setattr(report, "OUT", tmp_path)

    assert report.main() == 0

    text = (tmp_path / "report.md").read_text()
    assert "## Training beside MaxText" in text
    for model, m in result["models"].items():
        assert f"### {model} ({m['layers']} layers)" in text
        for side in ("maxtext", "ours"):
            cell = report._fit(m[side]["batch_2_full"])
            assert f"| per-chip memory, batch 2, full remat | {cell}" in text or f" | {cell} |" in text
    for run in [*result["maxtext_runs"], *result["our_runs"]]:  # every compile's exact command
        assert f"| `{run['command']}` |" in text

"""`exphil bench` end to end on the dummy replays, and the docs' tables against the shipped JSON."""

import json
from pathlib import Path

import pytest
from exphil_cli import exphil

from exphil_keras import architectures, train
from exphil_keras.bench import render
from exphil_keras.datasets.slippi_windows import build

DUMMY = Path(train.__file__).resolve().parent / "datasets" / "slippi_windows" / "dummy_data"
DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_exphil_bench_trains_times_and_writes_every_figure(tmp_path):
    build(DUMMY, tmp_path / "tfds", "w60")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "ARCHITECTURES.md").write_text("# Architectures\n\nProse that stays.\n")
    cmd = ["bench", "--data-dir", str(tmp_path / "tfds")]
    cmd += ["--epochs", "2", "--backbones", "mlp,gru", "--hidden-size", "16", "--batch-size", "4"]
    cmd += ["--max-files", "0", "--latency-repeats", "20", "--out", str(docs / "bench")]
    cmd += ["--work-dir", str(tmp_path / "runs"), "--docs", str(docs)]
    done = exphil(*cmd)
    assert done.returncode == 0, done.stderr[-3000:]
    out = docs / "bench"
    for name in ("results.md", "loss_curves.png", "latency.png", "loss_vs_latency.png"):
        assert (out / name).stat().st_size > 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["backbones"]) == {"mlp", "gru"}
    for r in results["backbones"].values():
        assert len(r["val_loss_curve"]) == 2 and r["val_loss"] == r["val_loss_curve"][-1]
        assert r["frames_per_second"] == pytest.approx(r["batches_per_second"] * 4 * 60)
        assert r["parameters"] > 0 and r["peak_host_memory_mb"] > 100
        for kind in ("step", "window"):
            assert 0 < r["latency_ms"][kind]["median"] <= r["latency_ms"][kind]["p99"]
    page = (docs / "ARCHITECTURES.md").read_text()
    assert page.startswith("# Architectures\n\nProse that stays.")
    assert render.architectures_block(results) in page
    assert render.backbone_block(results, "gru") in (docs / "GRU.md").read_text()
    render.update_docs(results, docs)  # idempotent: the block is replaced, not appended
    assert (docs / "ARCHITECTURES.md").read_text() == page


def test_the_docs_tables_are_the_committed_bench_results():
    results = json.loads((DOCS / "bench" / "results.json").read_text())
    assert set(results["backbones"]) == set(architectures.ARCHITECTURES)
    assert render.architectures_block(results) in (DOCS / "ARCHITECTURES.md").read_text()
    for name, architecture in architectures.ARCHITECTURES.items():
        assert render.backbone_block(results, name) in (DOCS / architecture.page).read_text()

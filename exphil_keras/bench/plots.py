"""`exphil bench`'s PNG plots: loss curves, latency, loss against latency."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from exphil_keras import features


def plots(results, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["backbones"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, r in rows.items():
        epochs = range(1, len(r["val_loss_curve"]) + 1)
        ax.plot(epochs, r["val_loss_curve"], marker="o", label=name)
    ax.set(xlabel="epoch", ylabel="validation loss (last position)", title="Loss curves")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "loss_curves.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    names = list(rows)
    steps = [rows[n]["latency_ms"]["step"]["p99"] for n in names]
    windows = [rows[n]["latency_ms"]["window"]["p99"] for n in names]
    x = np.arange(len(names))
    ax.bar(x - 0.2, steps, 0.4, label="step (one frame), p99")
    ax.bar(x + 0.2, windows, 0.4, label="window of 60, p99")
    ax.axhline(features.FRAME_BUDGET_MS, color="red", linestyle="--", label="16.67 ms frame budget")
    ax.set_xticks(x, names)
    ax.set(ylabel="ms, batch 1, one CPU thread", title="Inference latency")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "latency.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in names:
        ax.scatter(rows[name]["latency_ms"]["step"]["median"], rows[name]["val_loss"])
        ax.annotate(name, (rows[name]["latency_ms"]["step"]["median"], rows[name]["val_loss"]))
    ax.set(xlabel="step latency, median ms", ylabel="validation loss", title="Loss vs latency")
    fig.tight_layout()
    fig.savefig(out / "loss_vs_latency.png", dpi=110)
    plt.close(fig)

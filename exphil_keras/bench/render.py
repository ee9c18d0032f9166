"""`exphil bench`'s pages: the tables, the selection tree and docs/ARCHITECTURES.md's and each
backbone page's measured blocks, all rendered from the results dict alone."""

from __future__ import annotations

from pathlib import Path

from exphil_keras import features
from exphil_keras.architectures import ARCHITECTURES

HEADS = tuple(features.TARGETS)
BEGIN, END = "<!-- exphil bench: begin -->", "<!-- exphil bench: end -->"


def _rows(results):
    return sorted(results["backbones"].items(), key=lambda item: item[1]["val_loss"])


def _fps(timing) -> str:
    return "yes" if timing["step"]["p99"] < features.FRAME_BUDGET_MS else "no"


def source_line(results) -> str:
    s = results["settings"]
    return (
        f"Measured by `{results['command']}` on {results['date']}: {results['machine']}; "
        f"{results['dataset']}, "
        + (
            f"the first {s['max_files']} training games by sha256"
            if s["max_files"]
            else "all training games"
        )
        + ", "
        f"validation split for the losses; hidden {s['hidden_size']}, {s['num_layers']} layers, "
        f"window {s['window']}, batch {s['batch_size']}, {s['epochs']} epoch(s) at a "
        f"{s['schedule']} learning rate {s['learning_rate']:g}, seed {s['seed']}; latency on "
        f"the {s['latency']}. Training frames/s counts window frames (batches x batch x "
        f"{s['window']}; at stride {s['window'] // 2} each game frame is in two windows). "
        "Source: [bench/results.json](bench/results.json)."
    )


def quick_comparison(results) -> str:
    lines = [
        "| backbone | type | step ms (p99) | 60 FPS | val loss | train batches/s |",
        "|---|---|---:|---|---:|---:|",
    ]
    for name, r in _rows(results):
        a = ARCHITECTURES[name]
        lines.append(
            f"| [{name}]({a.page}) | {a.kind} | {r['latency_ms']['step']['p99']:.3f} "
            f"| {_fps(r['latency_ms'])} | {r['val_loss']:.4f} | {r['batches_per_second']:.2f} |"
        )
    return "\n".join(lines)


def benchmark_results(results) -> str:
    heads = " | ".join(f"{h} acc" for h in HEADS)
    lines = [
        f"| rank | backbone | val loss | {heads} | frames/s | batches/s | wall s "
        "| window ms (median / p99) | step ms (median / p99) |",
        "|---:|---|---:|" + "---:|" * len(HEADS) + "---:|---:|---:|---:|---:|",
    ]
    for rank, (name, r) in enumerate(_rows(results), 1):
        accuracy = " | ".join(f"{r['accuracy'][h]:.4f}" for h in HEADS)
        window, step = r["latency_ms"]["window"], r["latency_ms"]["step"]
        lines.append(
            f"| {rank} | {name} | {r['val_loss']:.4f} | {accuracy} | "
            f"{r['frames_per_second']:,.0f} | {r['batches_per_second']:.2f} | "
            f"{r['wall_seconds']:.0f} | {window['median']:.3f} / {window['p99']:.3f} | "
            f"{step['median']:.3f} / {step['p99']:.3f} |"
        )
    return "\n".join(lines)


def memory_and_compute(results) -> str:
    lines = [
        "| backbone | parameters | peak host memory (training) | peak device memory "
        "| time per window | streaming state | parallel over T |",
        "|---|---:|---:|---:|---|---|---|",
    ]
    for name, r in results["backbones"].items():
        device = r["peak_device_memory_mb"]
        device = f"{device:,.0f} MB" if device else "- (CPU)"
        a = ARCHITECTURES[name]
        lines.append(
            f"| {name} | {r['parameters']:,} | {r['peak_host_memory_mb']:,.0f} MB | {device} "
            f"| {a.cost} | {a.state} | {a.parallel} |"
        )
    return "\n".join(lines)


def selection_tree(results) -> str:
    rows = results["backbones"]
    by_loss = min(rows, key=lambda n: rows[n]["val_loss"])
    by_speed = max(rows, key=lambda n: rows[n]["batches_per_second"])
    by_step = min(rows, key=lambda n: rows[n]["latency_ms"]["step"]["p99"])
    real_time = [n for n in rows if _fps(rows[n]["latency_ms"]) == "yes"]
    slowest = max(rows, key=lambda n: rows[n]["latency_ms"]["step"]["p99"])
    temporal = [n for n in rows if n != "mlp"]
    budget = features.FRAME_BUDGET_MS
    lines = [
        "```",
        f"Need a decision every frame at 60 FPS ({budget:.2f} ms, one CPU thread)?",
        f"├─ {len(real_time)} of {len(rows)} qualify by step p99: {', '.join(real_time) or '-'}"
        f" (slowest: {slowest}, {rows[slowest]['latency_ms']['step']['p99']:.3f} ms)",
        "└─ then choose by what matters next:",
        f"   ├─ lowest validation loss → {by_loss} ({rows[by_loss]['val_loss']:.4f})",
        f"   ├─ fastest training → {by_speed} ({rows[by_speed]['batches_per_second']:.2f} b/s)",
        f"   ├─ cheapest frame → {by_step} "
        f"({rows[by_step]['latency_ms']['step']['median']:.3f} ms median)",
    ]
    if "mlp" in rows and temporal:
        best_temporal = min(temporal, key=lambda n: rows[n]["val_loss"])
        gain = 1 - rows[best_temporal]["val_loss"] / rows["mlp"]["val_loss"]
        lines.append(
            f"   └─ temporal context: {best_temporal} is {gain:.1%} below mlp "
            f"({rows['mlp']['val_loss']:.4f}), which sees one frame"
        )
    lines.append("```")
    return "\n".join(lines)


def architectures_block(results) -> str:
    """The measured part of docs/ARCHITECTURES.md."""
    return "\n".join(
        [
            BEGIN,
            source_line(results),
            "",
            "### Quick comparison",
            "",
            quick_comparison(results),
            "",
            "### Selection",
            "",
            selection_tree(results),
            "",
            "### Benchmark results",
            "",
            benchmark_results(results),
            "",
            "### Memory and compute",
            "",
            memory_and_compute(results),
            "",
            "Plots: [loss curves](bench/loss_curves.png), "
            "[latency](bench/latency.png), [loss vs latency](bench/loss_vs_latency.png).",
            END,
        ]
    )


def backbone_block(results, name) -> str:
    """The measured part of docs/<BACKBONE>.md."""
    r = results["backbones"][name]
    window, step = r["latency_ms"]["window"], r["latency_ms"]["step"]
    curve = ", ".join(f"{x:.4f}" for x in r["val_loss_curve"])
    rows = [
        ("parameters (policy)", f"{r['parameters']:,}"),
        (f"validation loss after {len(r['val_loss_curve'])} epoch(s)", f"{r['val_loss']:.4f}"),
        ("validation loss per epoch", curve),
        *((f"{h} accuracy", f"{r['accuracy'][h]:.4f}") for h in HEADS),
        (
            "training",
            f"{r['frames_per_second']:,.0f} window frames/s, {r['batches_per_second']:.2f} b/s",
        ),
        ("step, batch 1 (median / p99)", f"{step['median']:.3f} / {step['p99']:.3f} ms"),
        (
            "window of 60, batch 1 (median / p99)",
            f"{window['median']:.3f} / {window['p99']:.3f} ms",
        ),
        ("peak host memory, training", f"{r['peak_host_memory_mb']:,.0f} MB"),
    ]
    return "\n".join(
        [
            BEGIN,
            source_line(results),
            "",
            "| measured | value |",
            "|---|---|",
            *(f"| {k} | {v} |" for k, v in rows),
            END,
        ]
    )


def replace_block(page: str, block: str) -> str:
    """`page` with its measured block (between the markers) replaced by `block`."""
    if BEGIN not in page or END not in page:
        return page.rstrip("\n") + "\n\n" + block + "\n"
    head, rest = page.split(BEGIN, 1)
    return head + block + rest.split(END, 1)[1]


def markdown(results) -> str:
    return "\n\n".join(
        [
            "# exphil bench",
            source_line(results),
            benchmark_results(results),
            memory_and_compute(results),
            selection_tree(results),
        ]
    )


def update_docs(results, docs: Path) -> None:
    """Rewrite the measured blocks of docs/ARCHITECTURES.md and each backbone's page."""
    pages = {"ARCHITECTURES.md": architectures_block(results)}
    pages.update({ARCHITECTURES[n].page: backbone_block(results, n) for n in results["backbones"]})
    for page, block in pages.items():
        path = docs / page
        path.write_text(replace_block(path.read_text() if path.exists() else "", block))

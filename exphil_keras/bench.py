"""`exphil bench`: ExPhil's architecture tables, measured on this project's own code and data.

Each backbone trains at one comparable size on the same games, split and seed, for N epochs,
with `exphil train` in its own process (so its peak memory is its own). Then each trained policy
is timed at batch 1 on one CPU thread: one compiled `step` per frame (what the agent pays) and
the windowed forward. The figures go to `results.json`. `results.md`, the PNG plots and the
tables of docs/ARCHITECTURES.md and docs/<BACKBONE>.md are all rendered from that file.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
import time
from importlib.util import find_spec
from pathlib import Path

import numpy as np

from exphil_keras import features

BACKBONES = ("mlp", "lstm", "gru", "attention", "mamba", "jamba")
HEADS = tuple(features.TARGETS)
# The training settings every backbone shares (TrainConfig fields), and their `exphil train` flags.
SETTINGS = {
    "epochs": "--epochs",
    "hidden_size": "--hidden-size",
    "num_layers": "--num-layers",
    "window": "--window-size",
    "batch_size": "--batch-size",
    "max_files": "--max-files",
    "learning_rate": "--lr",
    "schedule": "--schedule",
    "seed": "--seed",
}
ONE_THREAD = {
    "OMP_NUM_THREADS": "1",
    "TF_NUM_INTRAOP_THREADS": "1",
    "TF_NUM_INTEROP_THREADS": "1",
    "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false",
}
PAGES = {
    "mlp": "MLP.md",
    "lstm": "LSTM.md",
    "gru": "GRU.md",
    "attention": "ATTENTION.md",
    "mamba": "MAMBA.md",
    "jamba": "JAMBA.md",
}
BEGIN, END = "<!-- exphil bench: begin -->", "<!-- exphil bench: end -->"


def timings_ms(function, repeats: int, warmup: int = 10) -> dict:
    """Median and p99 wall time of `function()` in milliseconds, after `warmup` calls."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    times = np.asarray(times) * 1e3
    return {"median": float(np.median(times)), "p99": float(np.percentile(times, 99))}


def run(
    replays=None,
    data_dir=None,
    out="docs/bench",
    work_dir="runs/bench",
    backbones=BACKBONES,
    epochs: int = 3,
    hidden_size: int = 128,
    batch_size: int = 256,
    max_files: int | None = 50,
    learning_rate: float = 3e-3,
    latency_backend: str | None = None,
    latency_repeats: int = 300,
) -> dict:
    """Train, time and write every figure; returns the results written to OUT/results.json."""
    from exphil_keras import train

    out, work_dir = Path(out), Path(work_dir)
    out.mkdir(parents=True, exist_ok=True)
    # JAX's jitted step is the agent's fastest; TensorFlow's where the jax extra is missing.
    latency_backend = latency_backend or ("jax" if find_spec("jax") else "tensorflow")
    config = train.TrainConfig(
        replays=replays, data_dir=data_dir, epochs=epochs, hidden_size=hidden_size,
        num_layers=2, batch_size=batch_size, max_files=max_files or None,
        learning_rate=learning_rate,
    )  # fmt: skip
    builder = train.dataset_builder(config)  # built once, before the runs share it
    results = {
        "command": "exphil " + " ".join(sys.argv[1:]) if sys.argv[1:] else "exphil bench",
        "date": datetime.date.today().isoformat(),
        "machine": f"{_cpu_name()}; {train.device()}",
        "dataset": f"slippi_windows/{builder.builder_config.name} from {replays or data_dir}",
        "settings": {
            **{key: getattr(config, key) for key in SETTINGS},
            "latency": f"{latency_backend} backend, batch 1, one CPU thread",
        },
        "backbones": {},
    }
    for name in backbones:
        print(f"== {name}: training {epochs} epoch(s)", flush=True)
        results["backbones"][name] = _train(name, data_dir, work_dir / name, results["settings"])
    print(f"== latency ({results['settings']['latency']})", flush=True)
    latencies = _latency(
        {name: work_dir / name / "preset" for name in backbones}, latency_backend, latency_repeats
    )
    for name, timing in latencies.items():
        results["backbones"][name]["latency_ms"] = timing
    write(results, out)
    return results


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(
                line.split(":", 1)[1].strip() for line in f if line.startswith("model name")
            )
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def _train(name, data_dir, output, settings) -> dict:
    cmd = [sys.executable, "-m", "exphil_keras.cli", "train"]
    cmd += ["--data-dir", str(data_dir)] if data_dir else []
    cmd += ["--backbone", name, "--name", f"{name}_bench", "--output", str(output)]
    for key in SETTINGS:
        if settings[key] is not None:
            cmd += [SETTINGS[key], str(settings[key])]
    process = subprocess.Popen(cmd)
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status):
        raise RuntimeError(f"exphil bench: training {name} failed: {' '.join(cmd)}")
    meta = json.loads((output / "preset" / "metadata.json").read_text())
    training = json.loads((output / "preset" / "training.json").read_text())
    history = training["history"]
    batches = sum(e["batches"] for e in training["throughput"])
    seconds = sum(e["seconds"] for e in training["throughput"])
    batches_per_second = batches / seconds if seconds else float("nan")
    return {
        "parameters": meta["parameters"],
        "val_loss": history["val_last_loss"][-1],
        "val_loss_curve": history["val_last_loss"],
        "train_loss_curve": history["loss"],
        "accuracy": {head: history[f"val_{head}_accuracy"][-1] for head in HEADS},
        "batches_per_second": batches_per_second,
        "frames_per_second": batches_per_second * settings["batch_size"] * settings["window"],
        "wall_seconds": training["wall_seconds"],
        "peak_host_memory_mb": usage.ru_maxrss / 1024,
        "peak_device_memory_mb": (
            training["peak_device_memory_bytes"] / 2**20
            if training["peak_device_memory_bytes"]
            else None
        ),
        "command": " ".join(["exphil", *cmd[3:]]),
    }


def _latency(presets: dict, backend: str, repeats: int) -> dict:
    env = {**os.environ, **ONE_THREAD, "KERAS_BACKEND": backend}
    cmd = [sys.executable, "-m", "exphil_keras.bench", str(repeats)]
    cmd += [f"{name}={path}" for name, path in presets.items()]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        raise RuntimeError(f"exphil bench: latency worker failed:\n{done.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def _latency_worker(repeats: int, presets: list[str]) -> None:
    """Batch 1, one thread: the policy's compiled `step`, and its compiled windowed forward."""
    import keras

    from exphil_keras import zoo
    from exphil_keras.ops import compile_function
    from exphil_keras.policy import example_batch

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    if keras.backend.backend() == "jax":
        import jax

        ready = jax.block_until_ready
    else:

        def ready(tree):
            return tree

    results = {}
    for item in presets:
        name, path = item.split("=", 1)
        model = zoo.load(path, compile=False)
        inputs, _ = example_batch(model, 1)
        inputs = {k: keras.ops.convert_to_tensor(v) for k, v in inputs.items()}
        frame = {k: v[:, -1] for k, v in inputs.items()}
        state = [model.initial_state(1)]

        def one_step(model=model, frame=frame, state=state):
            logits, state[0] = model.step(frame, state[0])
            ready(logits)

        forward = compile_function(model.__call__, model)
        results[name] = {
            "step": timings_ms(one_step, repeats),
            "window": timings_ms(lambda f=forward, x=inputs: ready(f(x)), max(repeats // 3, 10)),
        }
    print("RESULT " + json.dumps(results))


# Rendering: everything below reads only the results dict.


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
    kinds = {
        "mlp": "single frame",
        "lstm": "recurrent",
        "gru": "recurrent",
        "attention": "sliding-window attention",
        "mamba": "state space",
        "jamba": "hybrid (Mamba + attention)",
    }
    for name, r in _rows(results):
        lines.append(
            f"| [{name}]({PAGES[name]}) | {kinds[name]} | {r['latency_ms']['step']['p99']:.3f} "
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


COMPLEXITY = {
    "mlp": ("O(H²)", "none", "yes"),
    "lstm": ("O(T·H²)", "h, c per layer", "no (sequential in T)"),
    "gru": ("O(T·H²)", "h per layer", "no (sequential in T)"),
    "attention": ("O(T·K·H + T·H²)", "K/V of the last K frames", "yes"),
    "mamba": ("O(T·E·N + T·H·E)", "conv tail + SSM state [E, N]", "partly (scan in T)"),
    "jamba": ("mamba + attention layers", "both kinds", "partly"),
}


def memory_and_compute(results) -> str:
    lines = [
        "| backbone | parameters | peak host memory (training) | peak device memory "
        "| time per window | streaming state | parallel over T |",
        "|---|---:|---:|---:|---|---|---|",
    ]
    for name, r in results["backbones"].items():
        device = r["peak_device_memory_mb"]
        device = f"{device:,.0f} MB" if device else "- (CPU)"
        cost, state, parallel = COMPLEXITY[name]
        lines.append(
            f"| {name} | {r['parameters']:,} | {r['peak_host_memory_mb']:,.0f} MB | {device} "
            f"| {cost} | {state} | {parallel} |"
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


def write(results, out: Path) -> None:
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / "results.md").write_text(markdown(results) + "\n")
    plots(results, out)


def update_docs(results, docs: Path) -> None:
    """Rewrite the measured blocks of docs/ARCHITECTURES.md and each backbone's page."""
    pages = {"ARCHITECTURES.md": architectures_block(results)}
    pages.update({PAGES[name]: backbone_block(results, name) for name in results["backbones"]})
    for page, block in pages.items():
        path = docs / page
        path.write_text(replace_block(path.read_text() if path.exists() else "", block))


if __name__ == "__main__":  # the latency worker, in a one-thread process
    _latency_worker(int(sys.argv[1]), sys.argv[2:])

"""`exphil bench`: ExPhil's architecture tables, measured on this project's own code and data.

Each backbone trains at one comparable size on the same games, split and seed, for N epochs,
with `exphil train` in its own process (so its peak memory is its own). Then each trained policy
is timed at batch 1 on one CPU thread (`latency_worker`): one compiled `step` per frame (what the
agent pays) and the windowed forward. The figures go to `results.json`; `render` and `plots` turn
that file into results.md, the PNG plots and the measured blocks of the docs.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

from exphil_keras import zoo
from exphil_keras.architectures import ARCHITECTURES
from exphil_keras.bench.plots import plots
from exphil_keras.bench.render import HEADS, markdown
from exphil_keras.timing import ONE_THREAD
from exphil_keras.training.config import TrainConfig
from exphil_keras.training.data import dataset_builder
from exphil_keras.training.record import device

# The training settings every backbone shares (TrainConfig fields).
SETTINGS = (
    "epochs", "hidden_size", "num_layers", "window", "batch_size", "max_files", "learning_rate",
    "schedule", "seed",
)  # fmt: skip


def run(
    replays=None,
    data_dir=None,
    out="docs/bench",
    work_dir="runs/bench",
    backbones=tuple(ARCHITECTURES),
    epochs: int = 3,
    hidden_size: int = 128,
    batch_size: int = 256,
    max_files: int | None = 50,
    learning_rate: float = 3e-3,
    latency_backend: str | None = None,
    latency_repeats: int = 300,
) -> dict:
    """Train, time and write every figure; returns the results written to OUT/results.json."""
    out, work_dir = Path(out), Path(work_dir)
    out.mkdir(parents=True, exist_ok=True)
    # JAX's jitted step is the agent's fastest; TensorFlow's where the jax extra is missing.
    latency_backend = latency_backend or ("jax" if find_spec("jax") else "tensorflow")
    config = TrainConfig(
        replays=replays, data_dir=data_dir, epochs=epochs, hidden_size=hidden_size,
        num_layers=2, batch_size=batch_size, max_files=max_files or None,
        learning_rate=learning_rate,
    )  # fmt: skip
    builder = dataset_builder(config)  # built once, before the runs share it
    results = {
        "command": "exphil " + " ".join(sys.argv[1:]) if sys.argv[1:] else "exphil bench",
        "date": datetime.date.today().isoformat(),
        "machine": f"{_cpu_name()}; {device()}",
        "dataset": f"slippi_windows/{builder.builder_config.name} from {replays or data_dir}",
        "settings": {
            **{key: getattr(config, key) for key in SETTINGS},
            "latency": f"{latency_backend} backend, batch 1, one CPU thread",
        },
        "backbones": {},
    }
    for name in backbones:
        print(f"== {name}: training {epochs} epoch(s)", flush=True)
        results["backbones"][name] = _train(name, config, work_dir / name)
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


def _train(name, config, output) -> dict:
    cmd = [sys.executable, "-m", "exphil_keras.cli", "train"]
    cmd += config.flags(("data_dir", *SETTINGS))
    cmd += ["--backbone", name, "--name", f"{name}_bench", "--output", str(output)]
    process = subprocess.Popen(cmd)
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status):
        raise RuntimeError(f"exphil bench: training {name} failed: {' '.join(cmd)}")
    meta, training = zoo.info(output / "preset"), zoo.training(output / "preset")
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
        "frames_per_second": batches_per_second * config.batch_size * config.window,
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
    cmd = [sys.executable, "-m", "exphil_keras.bench.latency_worker", str(repeats)]
    cmd += [f"{name}={path}" for name, path in presets.items()]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        raise RuntimeError(f"exphil bench: latency worker failed:\n{done.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def write(results, out: Path) -> None:
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / "results.md").write_text(markdown(results) + "\n")
    plots(results, out)

"""Training throughput of every backbone at about 1 M parameters, beside a plain PyTorch GRU.

For each backend (TensorFlow, JAX) and backbone, `train_on_batch` on a random batch of 256
windows of 60 frames (`build_policy`'s Adam, `example_batch`): frames/s after warm-up and the
peak memory of training. A plain PyTorch GRU of the same size (torch.nn.GRU and the same heads,
Adam, its own forward/backward/step loop) runs in the same table, as the reference that says
whether our models are slow or the machine is. `--size production` gives every backbone the
production recipe's size instead (hidden 256, 3 layers, state 32), the GPU row's size.

Each run is its own subprocess, so its peak memory is one model's training and no two backends
share a process: the process's peak RSS on a CPU, the device allocator's peak on a GPU. The
machine is usually shared: compare ratios within one table, not across tables. `--scan-rows`
runs Mamba and Jamba once per block size of the selective scan ("whole": one block), which is how
`ops/selective_scan.py`'s choice per backend and device is measured; `--scan-frames` likewise
runs each chunk length of its backward.

    python bench/train_throughput.py            # both backends, all backbones (~5 min, 2 cores)
    python bench/train_throughput.py --backends jax --backbones gru mamba --steps 5
    python bench/train_throughput.py --backends jax --size production --scan-rows whole 32
    python bench/train_throughput.py --backends jax --size production --scan-frames whole 10
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys

from exphil_keras.timing import timings_ms
from exphil_keras.training.config import RECIPES

# hidden/layers per backbone for about 1 M policy parameters (the counts are printed).
SIZES = {
    "mlp": {"hidden_size": 544, "num_layers": 2},
    "lstm": {"hidden_size": 224, "num_layers": 2},
    "gru": {"hidden_size": 256, "num_layers": 2},
    "attention": {"hidden_size": 256, "num_layers": 3},
    "mamba": {"hidden_size": 248, "num_layers": 2, "state_size": 16},
    "jamba": {"hidden_size": 272, "num_layers": 2, "state_size": 16},
}
TORCH_GRU = {"hidden_size": 256, "num_layers": 2}
PRODUCTION = {k: RECIPES["production"][k] for k in ("hidden_size", "num_layers", "state_size")}
SCANNING = ("mamba", "jamba")


def size(backbone, args):
    """The backbone's constructor sizes at `args.size` ("torch_gru": the plain GRU's)."""
    if args.size == "production":
        scanning = backbone in SCANNING
        return {k: v for k, v in PRODUCTION.items() if scanning or k != "state_size"}
    return TORCH_GRU if backbone == "torch_gru" else SIZES[backbone]


def median_step(step, warmup, steps):
    """Median wall seconds of `step()` over `steps` calls, after `warmup` calls (compilation)."""
    return timings_ms(step, steps, warmup)["median"] / 1e3


def whole_or_int(text):
    """A --scan-rows / --scan-frames value: "whole" is None (one block), else a count."""
    return None if text == "whole" else int(text)


def keras_run(backbone, args):
    """One backbone on the backend in KERAS_BACKEND: (parameters, seconds per step)."""
    from exphil_keras.ops import device_kind
    from exphil_keras.ops.selective_scan import BACKWARD_FRAMES, BACKWARD_ROWS, FORWARD_ROWS
    from exphil_keras.policy import build_policy, example_batch

    key = (os.environ["KERAS_BACKEND"], device_kind())
    if args.scan_rows != "default":
        FORWARD_ROWS[key] = BACKWARD_ROWS[key] = whole_or_int(args.scan_rows)
    if args.scan_frames != "default":
        BACKWARD_FRAMES[key] = whole_or_int(args.scan_frames)
    model = build_policy(backbone, window=args.window, **size(backbone, args))
    inputs, targets = example_batch(model, args.batch)
    seconds = median_step(lambda: model.train_on_batch(inputs, targets), args.warmup, args.steps)
    return model.count_params(), seconds


def torch_gru_run(args):
    """The plain PyTorch GRU policy: embeddings, projection, GRU stack, ExPhil's heads."""
    import torch
    from torch import nn

    from exphil_keras import features
    from exphil_keras.policy import EMBEDDING_WIDTHS, HEAD_HIDDEN_SIZE

    sizes = size("torch_gru", args)
    hidden, layers = sizes["hidden_size"], sizes["num_layers"]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    kinds = {name: name.split("_")[-1] for name in features.CATEGORICAL_INPUTS}

    class Policy(nn.Module):
        def __init__(self):
            super().__init__()
            sizes = {kind: features.CATEGORICAL_INPUTS[name] for name, kind in kinds.items()}
            self.tables = nn.ModuleDict(
                {kind: nn.Embedding(sizes[kind], width) for kind, width in EMBEDDING_WIDTHS.items()}
            )
            width = sum(features.CONTINUOUS_INPUTS.values())
            width += sum(EMBEDDING_WIDTHS[kind] for kind in kinds.values())
            self.projection = nn.Linear(width, hidden)
            self.gru = nn.GRU(hidden, hidden, layers, batch_first=True)
            self.heads = nn.ModuleDict(
                {
                    head: nn.Sequential(
                        nn.Linear(hidden, HEAD_HIDDEN_SIZE),
                        nn.ReLU(),
                        nn.Linear(HEAD_HIDDEN_SIZE, classes),
                    )
                    for head, classes in features.TARGETS.items()
                }
            )

        def forward(self, inputs):
            parts = [inputs[name] for name in features.CONTINUOUS_INPUTS]
            parts += [self.tables[kind](inputs[name]) for name, kind in kinds.items()]
            hidden_states, _ = self.gru(self.projection(torch.cat(parts, -1)))
            return {head: layer(hidden_states) for head, layer in self.heads.items()}

    shape = (args.batch, args.window)
    inputs = {
        name: torch.randn(shape + (w,), device=device)
        for name, w in features.CONTINUOUS_INPUTS.items()
    }
    inputs |= {
        name: torch.randint(0, 33, shape, device=device) for name in features.CATEGORICAL_INPUTS
    }
    targets = {
        head: torch.randint(0, 2, shape + (classes,), device=device).float()
        if head == "buttons"
        else torch.randint(0, classes, shape, device=device)
        for head, classes in features.TARGETS.items()
    }
    model = Policy().to(device)
    optimizer = torch.optim.Adam(model.parameters(), 3e-4)

    def step():
        logits = model(inputs)
        loss = nn.functional.binary_cross_entropy_with_logits(logits["buttons"], targets["buttons"])
        for head in features.TARGETS:
            if head != "buttons":
                loss = loss + nn.functional.cross_entropy(
                    logits[head].flatten(0, 1), targets[head].flatten()
                )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()  # Keras's train_on_batch returns numbers: it waits too

    seconds = median_step(step, args.warmup, args.steps)
    return sum(p.numel() for p in model.parameters()), seconds


def peak_bytes():
    """Peak memory of this process's training: the GPU allocator's peak, else the peak RSS."""
    from exphil_keras.ops import device_kind

    backend, kind = os.environ["KERAS_BACKEND"], device_kind()
    if kind == "gpu" and backend == "torch":
        import torch

        return torch.cuda.max_memory_allocated()
    if kind == "gpu" and backend == "jax":
        import jax

        return jax.devices()[0].memory_stats()["peak_bytes_in_use"]
    if kind == "gpu":
        import tensorflow as tf

        return tf.config.experimental.get_memory_info("GPU:0")["peak"]
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def child(args):
    """Runs one measurement in this process and prints it as one JSON line."""
    from exphil_keras.ops import device_kind

    if args.child == "torch_gru":
        parameters, seconds = torch_gru_run(args)
    else:
        parameters, seconds = keras_run(args.child, args)
    print(
        json.dumps(
            {
                "parameters": parameters,
                "seconds": seconds,
                "peak_bytes": peak_bytes(),
                "device": device_kind(),
            }
        )
    )


def measure(backend, backbone, args, scan_rows="default", scan_frames="default"):
    """Runs `child` in a subprocess; its result dict, or None (the error is printed)."""
    command = [sys.executable, __file__, "--child", backbone, "--size", args.size]
    command += ["--steps", str(args.steps), "--warmup", str(args.warmup)]
    command += ["--batch", str(args.batch), "--window", str(args.window)]
    command += ["--scan-rows", scan_rows, "--scan-frames", scan_frames]
    # On a GPU, JAX would otherwise take most of the device up front, hiding the real peak.
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
    env |= {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    try:
        done = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=args.timeout
        )
    except subprocess.TimeoutExpired:
        print(f"{backend} {backbone} ran past {args.timeout} s", file=sys.stderr)
        return None
    if done.returncode != 0:
        print(f"{backend} {backbone} failed:\n{done.stderr[-2000:]}", file=sys.stderr)
        return None
    result = json.loads(done.stdout.strip().splitlines()[-1])
    scan = f"scan rows {scan_rows}, frames {scan_frames}"
    print(f"{backend} {backbone} ({scan}): {result}", file=sys.stderr, flush=True)
    return result


def combined(results):
    """One model's runs over the rounds: the median of their seconds and the highest peak; None
    if every run failed."""
    done = [r for r in results if r is not None]
    if not done:
        return None
    seconds = statistics.median(r["seconds"] for r in done)
    peak = max(r["peak_bytes"] for r in done)
    return dict(done[0], seconds=seconds, peak_bytes=peak, runs=len(done))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", nargs="+", default=["tensorflow", "jax"])
    parser.add_argument("--backbones", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument(
        "--size",
        choices=("equal", "production"),
        default="equal",
        help="equal: about 1 M parameters each (SIZES); production: the production recipe's",
    )
    parser.add_argument(
        "--scan-rows",
        nargs="+",
        default=["default"],
        help="Mamba/Jamba scan block sizes to run: default (the scan's own choice), whole, or N",
    )
    parser.add_argument(
        "--scan-frames",
        nargs="+",
        default=["default"],
        help="Mamba/Jamba backward chunk lengths to run (each with each --scan-rows): default, "
        "whole, or N frames",
    )
    parser.add_argument("--steps", type=int, default=3, help="timed steps (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (compiling)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--window", type=int, default=60)
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure every model this many times, round after round; each row is the median",
    )
    parser.add_argument("--timeout", type=float, default=900, help="seconds per run at most")
    parser.add_argument("--json", help="also write every run's result to this file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.scan_rows, args.scan_frames = args.scan_rows[0], args.scan_frames[0]
        return child(args)

    frames = args.batch * args.window
    plan = {("torch", "plain gru"): ("torch", "torch_gru", "default", "default")}
    for backend in args.backends:
        for backbone in args.backbones:
            scanning = backbone in SCANNING
            for rows in args.scan_rows if scanning else ["default"]:
                for chunk in args.scan_frames if scanning else ["default"]:
                    label = backbone + (f" rows {rows}" if rows != "default" else "")
                    label += f" frames {chunk}" if chunk != "default" else ""
                    plan[backend, label] = (backend, backbone, rows, chunk)
    # Whole rounds one after another, so that a slow spell of a shared machine falls on every
    # model of a round rather than on one model's every run.
    rounds = [
        {key: measure(b, m, args, r, c) for key, (b, m, r, c) in plan.items()}
        for _ in range(args.rounds)
    ]
    runs = {key: combined([r[key] for r in rounds]) for key in plan}
    reference = runs["torch", "plain gru"]
    if args.json:
        with open(args.json, "w") as file:
            json.dump({f"{b} {label}": run for (b, label), run in runs.items()}, file, indent=1)

    device = reference and reference["device"]
    medians = f"median of {args.steps} steps"
    medians += f", then of {args.rounds} rounds" if args.rounds > 1 else ""
    print(f"\nbatch {args.batch} x {args.window} frames, {medians}, {device}")
    header = f"{'backend':10} {'backbone':30} {'size':>9} {'params':>9} {'s/step':>7}"
    print(f"{header} {'frames/s':>9} {'peak GB':>8} {'x torch GRU':>12}")
    for (backend, label), run in runs.items():
        backbone = "torch_gru" if label == "plain gru" else label.split()[0]
        sizes = "x".join(str(v) for v in size(backbone, args).values())
        if run is None:
            print(f"{backend:10} {label:30} {sizes:>9} failed")
            continue
        speed = reference and reference["seconds"] / run["seconds"]
        print(
            f"{backend:10} {label:30} {sizes:>9} {run['parameters']:>9,} {run['seconds']:7.3f}"
            f" {frames / run['seconds']:9,.0f} {run['peak_bytes'] / 2**30:8.2f}"
            f" {speed or float('nan'):12.2f}"
        )
    print()
    for backend in args.backends:
        gru = runs.get((backend, "gru"))
        for label in [label for b, label in runs if b == backend and label.split()[0] in SCANNING]:
            run = runs[backend, label]
            if gru and run:
                print(
                    f"{backend} {label}/gru: frames/s {gru['seconds'] / run['seconds']:.2f},"
                    f" peak memory {run['peak_bytes'] / gru['peak_bytes']:.2f}"
                )
        if gru and reference:
            ratio = reference["seconds"] / gru["seconds"]
            print(f"{backend} gru / plain PyTorch GRU frames/s: {ratio:.2f}")


if __name__ == "__main__":
    main()

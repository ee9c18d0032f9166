"""Training throughput of every backbone at about 1 M parameters, beside a plain PyTorch GRU.

For each backend (TensorFlow, JAX) and backbone, `train_on_batch` on a random batch of 256
windows of 60 frames (`build_policy`'s Adam, `example_batch`): frames/s after warm-up and the
peak memory of training. A plain PyTorch GRU of the same size (torch.nn.GRU and the same heads,
Adam, its own forward/backward/step loop) runs in the same table, as the reference that says
whether our models are slow or the machine is.

Each run is its own subprocess, so its peak RSS is one model's training and no two backends share
a process. The machine is usually shared: compare ratios within one table, not across tables.

    python bench/train_throughput.py            # both backends, all backbones (~5 min, 2 cores)
    python bench/train_throughput.py --backends jax --backbones gru mamba --steps 5
"""

import argparse
import json
import os
import resource
import subprocess
import sys

from exphil_keras.timing import timings_ms

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


def median_step(step, warmup, steps):
    """Median wall seconds of `step()` over `steps` calls, after `warmup` calls (compilation)."""
    return timings_ms(step, steps, warmup)["median"] / 1e3


def keras_run(backbone, args):
    """One backbone on the backend in KERAS_BACKEND: (parameters, seconds per step)."""
    from exphil_keras.policy import build_policy, example_batch

    model = build_policy(backbone, window=args.window, **SIZES[backbone])
    inputs, targets = example_batch(model, args.batch)
    seconds = median_step(lambda: model.train_on_batch(inputs, targets), args.warmup, args.steps)
    return model.count_params(), seconds


def torch_gru_run(args):
    """The plain PyTorch GRU policy: embeddings, projection, GRU stack, ExPhil's heads."""
    import torch
    from torch import nn

    from exphil_keras import features
    from exphil_keras.policy import EMBEDDING_WIDTHS, HEAD_HIDDEN_SIZE

    hidden, layers = TORCH_GRU["hidden_size"], TORCH_GRU["num_layers"]
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
    inputs = {name: torch.randn(shape + (w,)) for name, w in features.CONTINUOUS_INPUTS.items()}
    inputs |= {name: torch.randint(0, 33, shape) for name in features.CATEGORICAL_INPUTS}
    targets = {
        head: torch.randint(0, 2, shape + (classes,)).float()
        if head == "buttons"
        else torch.randint(0, classes, shape)
        for head, classes in features.TARGETS.items()
    }
    model = Policy()
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

    seconds = median_step(step, args.warmup, args.steps)
    return sum(p.numel() for p in model.parameters()), seconds


def child(args):
    """Runs one measurement in this process and prints it as one JSON line."""
    if args.child == "torch_gru":
        parameters, seconds = torch_gru_run(args)
    else:
        parameters, seconds = keras_run(args.child, args)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux
    print(json.dumps({"parameters": parameters, "seconds": seconds, "peak_bytes": peak}))


def measure(backend, backbone, args):
    """Runs `child` in a subprocess; its result dict, or None (the error is printed)."""
    command = [sys.executable, __file__, "--child", backbone]
    command += ["--steps", str(args.steps), "--warmup", str(args.warmup)]
    command += ["--batch", str(args.batch), "--window", str(args.window)]
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        print(f"{backend} {backbone} failed:\n{done.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", nargs="+", default=["tensorflow", "jax"])
    parser.add_argument("--backbones", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--steps", type=int, default=3, help="timed steps (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (compiling)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--window", type=int, default=60)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)

    frames = args.batch * args.window
    runs = {("torch", "plain gru"): measure("torch", "torch_gru", args)}
    for backend in args.backends:
        for backbone in args.backbones:
            runs[backend, backbone] = measure(backend, backbone, args)
    reference = runs["torch", "plain gru"]

    print(f"\nbatch {args.batch} x {args.window} frames, median of {args.steps} steps")
    print("backend    backbone        size    params  s/step  frames/s  peak GB  x torch GRU")
    for (backend, backbone), run in runs.items():
        size = "x".join(str(v) for v in (SIZES.get(backbone) or TORCH_GRU).values())
        if run is None:
            print(f"{backend:10} {backbone:10} {size:>9} failed")
            continue
        speed = reference and reference["seconds"] / run["seconds"]
        print(
            f"{backend:10} {backbone:10} {size:>9} {run['parameters']:>9,} {run['seconds']:7.2f}"
            f" {frames / run['seconds']:9,.0f} {run['peak_bytes'] / 2**30:8.2f}"
            f" {speed or float('nan'):12.2f}"
        )
    print()
    for backend in args.backends:
        gru = runs.get((backend, "gru"))
        for backbone in ("mamba", "jamba"):
            run = runs.get((backend, backbone))
            if gru and run:
                print(
                    f"{backend} {backbone}/gru: frames/s {gru['seconds'] / run['seconds']:.2f},"
                    f" peak memory {run['peak_bytes'] / gru['peak_bytes']:.2f}"
                )
        if gru and reference:
            ratio = reference["seconds"] / gru["seconds"]
            print(f"{backend} gru / plain PyTorch GRU frames/s: {ratio:.2f}")


if __name__ == "__main__":
    main()

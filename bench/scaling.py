"""Scale-out throughput: training frames/s on 1 and 2 devices, build frames/s plain and Beam.

    python bench/scaling.py [--replays ../shared/replays] [--devices 2] [--steps 20]

Training: `exphil_keras.distribution` (keras.distribution on JAX, tf.distribute on TensorFlow)
on the CPU split into virtual devices by XLA_FLAGS, one process per (backend, device count),
the same global batch of real windows (cached, so the input pipeline is not timed), timed after
a warm-up. Build: `slippi_windows.build` of the same folder in one process, then with Beam's
DirectRunner on as many worker processes. Virtual CPU devices share this machine's cores, so
the 2-device figure here measures the engines' overhead, not a speed-up; docs/SCALING.md says
how to read it.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

WINDOW = 60


def train_rate(data_dir, backend, distribute, devices, batch, steps) -> float:
    """Frames/s of `fit` in a fresh process (XLA_FLAGS and TF's devices are fixed at start)."""
    env = {
        **os.environ,
        "KERAS_BACKEND": backend,
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    args = [data_dir, distribute, str(batch), str(steps)]
    cmd = [sys.executable, __file__, "--train-worker", *args]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])["frames_per_second"]


def train_worker(data_dir, distribute, batch, steps):
    import keras
    import tensorflow as tf

    from exphil_keras import distribution, policy
    from exphil_keras.training import data
    from exphil_keras.training.config import TrainConfig

    scope, replicas = distribution.scope(distribute)
    builder = data.dataset_builder(TrainConfig(data_dir=data_dir))
    ds = data.windows(builder, "train").take(batch * 4).cache().repeat().batch(batch)
    with scope:
        model = policy.build_policy(backbone="gru", window=WINDOW, hidden_size=128)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile="auto")
    ds = ds.prefetch(tf.data.AUTOTUNE)
    model.fit(ds, steps_per_epoch=5, epochs=1, verbose=0)  # compile and warm up
    started = time.perf_counter()
    model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0)
    seconds = time.perf_counter() - started
    rate = steps * batch * WINDOW / seconds
    print(json.dumps({"replicas": replicas, "frames_per_second": rate}))


def build_rates(replays, workers) -> dict:
    from exphil_keras.datasets.slippi_windows import build

    rates = {}
    for name, kwargs in (
        ("plain", {}),
        (
            f"beam DirectRunner x{workers}",
            {
                "beam_runner": "DirectRunner",
                "beam_args": [
                    f"--direct_num_workers={workers}",
                    "--direct_running_mode=multi_processing",
                ],
            },
        ),
    ):
        with tempfile.TemporaryDirectory() as data_dir:
            _, report = build(replays, data_dir, "w60", **kwargs)
        rates[name] = sum(report.frames.values()) / report.seconds
    return rates


def main():
    if sys.argv[1:2] == ["--train-worker"]:
        data_dir, distribute, batch, steps = sys.argv[2:]
        return train_worker(data_dir, distribute, int(batch), int(steps))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replays", default="../shared/replays")
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64, help="global batch")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()

    from exphil_keras.datasets.slippi_windows import build

    print(f"build frames/s ({args.replays}):")
    for name, rate in build_rates(args.replays, args.devices).items():
        print(f"  {name:<22} {rate:>10,.0f}")
    with tempfile.TemporaryDirectory() as data_dir:
        build(args.replays, data_dir, "w60")
        print(f"training frames/s (gru hidden 128, global batch {args.batch_size} x {WINDOW}):")
        for backend in ("jax", "tensorflow"):
            one = train_rate(data_dir, backend, "none", 1, args.batch_size, args.steps)
            many = train_rate(
                data_dir, backend, "data-parallel", args.devices, args.batch_size, args.steps
            )
            print(
                f"  {backend:<10} 1 device {one:>9,.0f}   {args.devices} devices {many:>9,.0f}"
                f"   ratio {many / one:.2f}"
            )


if __name__ == "__main__":
    main()

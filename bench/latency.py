"""Latency of every backbone at the default sizes, batch 1, one CPU thread, per Keras backend.

Per backbone: the compiled one-frame `step`, the compiled windowed forward (60 frames) and the
policy model's `step` (embeddings + backbone + heads: what the agent pays per frame), median and
p99, beside plain PyTorch modules of matching size timed in the same run; plus the selective
scan alone (T = 60, D*N = 8192). Then, per shipped preset, its `step` three ways: Keras
(TensorFlow), the exported SavedModel's `step` endpoint and onnxruntime's `step.onnx`.

    python bench/latency.py                      # TensorFlow and JAX, one subprocess each
    python bench/latency.py --backends jax torch
"""

import argparse
import json
import os
import subprocess
import sys

import numpy as np

from exphil_keras.timing import ONE_THREAD, one_thread_backend, timings_ms

DEFAULTS = {"hidden_size": 256, "num_layers": 2, "state_size": 16}
WINDOW = 60
TORCH_REFERENCE = {"lstm": "torch LSTM", "gru": "torch GRU", "attention": "torch Transformer"}


def keras_worker(step_repeats, window_repeats):
    """In a process with KERAS_BACKEND set: time each backbone and the scan loops, print JSON."""
    import keras
    from keras import ops

    from exphil_keras import architectures, backbones
    from exphil_keras.ops import compile_function, selective_scan
    from exphil_keras.policy import build_policy, example_batch

    backend = keras.backend.backend()
    ready = one_thread_backend()
    rng = np.random.default_rng(0)
    results = {"backend": backend, "backbones": {}}
    for name in architectures.ARCHITECTURES:
        backbone = backbones.build(name, window=WINDOW, **DEFAULTS)
        backbone.build((None, None, DEFAULTS["hidden_size"]))
        window = ops.convert_to_tensor(
            rng.normal(size=(1, WINDOW, DEFAULTS["hidden_size"])), "float32"
        )
        frame = window[:, 0]
        forward = compile_function(backbone.__call__, backbone)
        step = compile_function(backbone.step, backbone)
        state = [backbone.initial_state(1)]

        def one_step(step=step, frame=frame, state=state):
            y, state[0] = step(frame, state[0])
            ready(y)

        policy = build_policy(name, window=WINDOW, **DEFAULTS)
        inputs, _ = example_batch(policy, 1)
        frame_inputs = {k: ops.convert_to_tensor(v[:, 0]) for k, v in inputs.items()}
        policy_state = [policy.initial_state(1)]

        def one_policy_step(policy=policy, frame_inputs=frame_inputs, state=policy_state):
            logits, state[0] = policy.step(frame_inputs, state[0])
            ready(logits)

        results["backbones"][name] = {
            "step": timings_ms(one_step, step_repeats),
            "window": timings_ms(lambda f=forward, w=window: ready(f(w)), window_repeats),
            "policy step": timings_ms(one_policy_step, step_repeats),
        }
    inner, state_size = 2 * DEFAULTS["hidden_size"], DEFAULTS["state_size"]
    u, delta = (rng.normal(size=(1, WINDOW, inner)), rng.uniform(1e-3, 0.1, (1, WINDOW, inner)))
    A = -np.exp(rng.normal(size=(inner, state_size)))
    B, C = (rng.normal(size=(1, WINDOW, state_size)) for _ in range(2))
    scan_args = [ops.convert_to_tensor(t, "float32") for t in (u, delta, A, B, C, np.ones(inner))]
    compiled = compile_function(selective_scan)
    results["scan"] = timings_ms(lambda: ready(compiled(*scan_args)), window_repeats)
    print("RESULT " + json.dumps(results))


def exported_worker(step_repeats, presets):
    """TensorFlow process, one thread: per preset, the Keras `step`, the reloaded SavedModel's
    `step` endpoint and onnxruntime's `step.onnx`, each fed its own state; prints JSON."""
    one_thread_backend()  # KERAS_BACKEND is tensorflow here (run_worker)
    results = {name: time_exported_steps(name, step_repeats) for name in presets}
    print("RESULT " + json.dumps(results))


def time_exported_steps(name, step_repeats):
    import tempfile

    import onnxruntime
    import tensorflow as tf

    from exphil_keras import export, zoo
    from exphil_keras.policy import NUM_UNIFORMS, example_batch

    model = zoo.load(name, compile=False)
    inputs, _ = example_batch(model, 1)
    frame = {k: v[:, -1] for k, v in inputs.items()}
    tf_frame = {k: tf.constant(v) for k, v in frame.items()}
    # Each endpoint draws the decision from the same uniforms, at temperature 1.
    sampling = {
        "uniforms": np.full((1, NUM_UNIFORMS), 0.5, "float32"),
        "temperature": np.array(1, "float32"),
    }
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    with tempfile.TemporaryDirectory() as folder:
        files = export.onnx(export.savedmodel(model, f"{folder}/saved"), folder)
        saved = tf.saved_model.load(f"{folder}/saved")
        session = onnxruntime.InferenceSession(str(files["step"]), options)
    outputs = [o.name for o in session.get_outputs()]
    keras_state = [model.initial_state(1)]
    saved_state = [[tf.constant(s) for s in export.initial_state(model)]]
    onnx_state = [export.initial_state(model)]

    def keras_step():
        _, _, keras_state[0] = model.sample_step(tf_frame, keras_state[0], *sampling.values())

    def saved_step():
        out = saved.step(tf_frame, *sampling.values(), *saved_state[0])
        saved_state[0] = [out[f"next_state_{i}"] for i in range(len(saved_state[0]))]

    def onnx_step():
        feed = frame | sampling | {f"state_{i}": s for i, s in enumerate(onnx_state[0])}
        out = dict(zip(outputs, session.run(None, feed), strict=True))
        onnx_state[0] = [out[f"next_state_{i}"] for i in range(len(onnx_state[0]))]

    return {
        "keras step (TF)": timings_ms(keras_step, step_repeats),
        "SavedModel step": timings_ms(saved_step, step_repeats),
        "onnxruntime step": timings_ms(onnx_step, step_repeats),
    }


def torch_references(step_repeats, window_repeats):
    """Plain PyTorch GRU/LSTM (step and window) and a 2-layer pre-norm TransformerEncoder."""
    import torch

    torch.set_num_threads(1)
    hidden = DEFAULTS["hidden_size"]
    window = torch.randn(1, WINDOW, hidden)
    frame = window[:, :1]
    results = {}
    with torch.inference_mode():
        for name, module in (
            ("torch GRU", torch.nn.GRU(hidden, hidden, num_layers=2, batch_first=True)),
            ("torch LSTM", torch.nn.LSTM(hidden, hidden, num_layers=2, batch_first=True)),
        ):
            state = [module(frame)[1]]

            def one_step(module=module, state=state):
                _, state[0] = module(frame, state[0])

            results[name] = {
                "step": timings_ms(one_step, step_repeats),
                "window": timings_ms(lambda m=module: m(window), window_repeats),
            }
        layer = torch.nn.TransformerEncoderLayer(
            hidden, 4, dim_feedforward=hidden, batch_first=True, norm_first=True
        )
        transformer = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()
        mask = torch.nn.Transformer.generate_square_subsequent_mask(WINDOW)
        results["torch Transformer"] = {
            "window": timings_ms(
                lambda: transformer(window, mask=mask, is_causal=True), window_repeats
            )
        }
    return results


def run_worker(backend, *args, flag="--worker"):
    env = {**os.environ, **ONE_THREAD, "KERAS_BACKEND": backend}
    command = [sys.executable, __file__, flag, *map(str, args)]
    run = subprocess.run(command, env=env, capture_output=True, text=True)
    lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
    if run.returncode or not lines:
        raise RuntimeError(f"{backend} worker failed:\n{run.stdout}\n{run.stderr[-4000:]}")
    return json.loads(lines[0][len("RESULT ") :])


def report(results, references):
    print(f"{'':<21}{'step ms':>16}{'window ms':>16}{'policy step ms':>16}   ratio to PyTorch")
    print(f"{'':<21}{'median   p99':>16}{'median   p99':>16}{'median   p99':>16}   (medians)")
    for name, timing in references.items():
        step = timing.get("step")
        step_text = f"{step['median']:7.3f} {step['p99']:7.3f}" if step else f"{'-':>15}"
        window = timing["window"]
        print(f"{name:<21}{step_text:>16}{window['median']:8.3f}{window['p99']:8.3f}{'-':>16}")
    for result in results:
        print(f"\n{result['backend']}")
        for name, timing in result["backbones"].items():
            step, window, policy_step = timing["step"], timing["window"], timing["policy step"]
            ratios = ""
            if name in TORCH_REFERENCE:
                reference = references[TORCH_REFERENCE[name]]
                ratios = f"   x{window['median'] / reference['window']['median']:.2f} window"
                if "step" in reference:
                    ratios += f", x{step['median'] / reference['step']['median']:.2f} step"
                ratios += f" ({TORCH_REFERENCE[name]})"
            print(
                f"  {name:<19}{step['median']:8.3f}{step['p99']:8.3f}"
                f"{window['median']:8.3f}{window['p99']:8.3f}"
                f"{policy_step['median']:8.3f}{policy_step['p99']:8.3f}{ratios}"
            )
        scan = result["scan"]
        print(f"  selective scan (T {WINDOW}, D*N 8192): {scan['median']:.3f} ms median")


def report_exported(results, references):
    reference = references["torch GRU"]["step"]["median"]
    print("\nexported step per shipped preset (ms; ratio of medians to the torch GRU step):")
    for preset, timings in results.items():
        cells = "  ".join(
            f"{kind} {t['median']:.3f}/{t['p99']:.3f} (x{t['median'] / reference:.2f})"
            for kind, t in timings.items()
        )
        print(f"  {preset:<20}{cells}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=["tensorflow", "jax"])
    parser.add_argument("--step-repeats", type=int, default=500)
    parser.add_argument("--window-repeats", type=int, default=100)
    parser.add_argument(
        "--presets", nargs="*", help="shipped presets whose exported steps to time (default all)"
    )
    parser.add_argument("--worker", nargs=2, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--exported-worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        keras_worker(*args.worker)
        return
    if args.exported_worker:
        exported_worker(int(args.exported_worker[0]), args.exported_worker[1:])
        return
    os.environ.update(ONE_THREAD)
    references = torch_references(args.step_repeats, args.window_repeats)
    results = [run_worker(b, args.step_repeats, args.window_repeats) for b in args.backends]
    report(results, references)
    from exphil_keras import zoo

    presets = args.presets or zoo.names()
    exported = run_worker("tensorflow", args.step_repeats, *presets, flag="--exported-worker")
    report_exported(exported, references)


if __name__ == "__main__":
    main()

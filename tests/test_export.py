"""`exphil export` of a shipped preset, as a user runs it: ONNX files that equal the model."""

import subprocess
import sys

import numpy as np
import onnxruntime

from exphil_keras import zoo
from exphil_keras.policy import example_batch


def exphil(*args):
    cmd = [sys.executable, "-m", "exphil_keras.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def test_exphil_export_onnx_of_a_shipped_preset_equals_the_model(tmp_path):
    done = exphil("export", "--model", "mlp_quick", "--format", "onnx", "--output", str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "savedmodel" / "saved_model.pb").exists()
    model = zoo.load("mlp_quick", compile=False)
    inputs, _ = example_batch(model, 3)
    expected = {k: np.asarray(v) for k, v in model(inputs).items()}
    serve = onnxruntime.InferenceSession(str(tmp_path / "serve.onnx"))
    names = [o.name for o in serve.get_outputs()]
    for head, value in zip(names, serve.run(None, inputs), strict=True):
        np.testing.assert_allclose(value, expected[head], atol=1e-4, rtol=0)
    step = onnxruntime.InferenceSession(str(tmp_path / "step.onnx"))
    assert {i.name for i in step.get_inputs()} >= set(inputs)


def test_onnx_export_explains_that_it_needs_tensorflow(tmp_path):
    done = exphil(
        "export", "--model", "mlp_quick", "--format", "onnx", "--output", str(tmp_path),
        "--backend", "jax",
    )  # fmt: skip
    assert done.returncode == 2 and "--backend tensorflow" in done.stderr

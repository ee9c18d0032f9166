"""One weights file gives the same outputs on TensorFlow, JAX and torch (one subprocess each)."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from keras import ops

from exphil_keras.policy import build_policy, example_batch

BACKENDS = ["tensorflow", "jax", "torch"]
TIMEOUT = 900  # seconds for the other backend to load and run every architecture

# Run in a subprocess per other backend: load each weights file, write each model's outputs.
LOAD_AND_RUN = """
import json, sys
import numpy as np
from keras import ops
from exphil_keras.policy import PolicyModel
folder, architectures = sys.argv[1], json.loads(sys.argv[2])
inputs = dict(np.load(f"{folder}/inputs.npz"))
for name in architectures:
    model = PolicyModel.from_config(json.load(open(f"{folder}/{name}.json")))
    model.load_weights(f"{folder}/{name}.weights.h5")
    outputs = {head: ops.convert_to_numpy(v) for head, v in model(inputs).items()}
    np.savez(f"{folder}/{name}.{sys.argv[3]}.npz", **outputs)
"""


def test_same_weights_same_outputs_on_every_backend(architectures, small, tmp_path):
    expected = {}
    for name in architectures:
        model = build_policy(name, **small)
        inputs, _ = example_batch(model, 2, num_frames=20)
        model.save_weights(tmp_path / f"{name}.weights.h5")
        (tmp_path / f"{name}.json").write_text(json.dumps(model.get_config()))
        expected[name] = {head: ops.convert_to_numpy(v) for head, v in model(inputs).items()}
    np.savez(tmp_path / "inputs.npz", **inputs)
    others = [b for b in BACKENDS if b != keras.backend.backend()]
    runs = {
        backend: subprocess.Popen(
            [sys.executable, "-c", LOAD_AND_RUN, str(tmp_path), json.dumps(architectures), backend],
            env={**os.environ, "KERAS_BACKEND": backend},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for backend in others
    }
    for backend, run in runs.items():
        try:
            output = run.communicate(timeout=TIMEOUT)[0]
        except subprocess.TimeoutExpired:
            run.kill()
            output = run.communicate()[0]
            pytest.fail(f"{backend} still running after {TIMEOUT} s:\n{output[-4000:]}")
        assert run.returncode == 0, f"{backend} failed:\n{output[-4000:]}"
        for name in architectures:
            actual = np.load(tmp_path / f"{name}.{backend}.npz")
            for head, logits in expected[name].items():
                np.testing.assert_allclose(
                    actual[head], logits, atol=1e-4, err_msg=f"{name}/{head} on {backend}"
                )

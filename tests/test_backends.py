"""tests/models under JAX and torch, each in its own subprocess (this run covers TensorFlow).

Both subprocesses start together, so on a multi-core machine they overlap.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

OTHER_BACKENDS = ["jax", "torch"]
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_test_runs():
    command = [sys.executable, "-m", "pytest", "tests/models", "-q", "-p", "no:cacheprovider"]
    command += ["--import-mode=importlib"]
    runs = {
        backend: subprocess.Popen(
            command,
            cwd=REPO,
            env={**os.environ, "KERAS_BACKEND": backend},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for backend in OTHER_BACKENDS
    }
    yield runs
    for run in runs.values():
        if run.poll() is None:
            run.kill()


@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_model_tests_pass_on(backend, model_test_runs):
    run = model_test_runs[backend]
    output = run.communicate()[0]
    assert run.returncode == 0, f"tests/models failed under KERAS_BACKEND={backend}:\n{output}"

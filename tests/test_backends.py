"""tests/models under JAX and torch, one subprocess each (this run covers TensorFlow): the tests
that TensorFlow collects all pass on the other backends, except the backend-specific skips
listed in SKIPS, each with its reason. Read from each run's JUnit XML, so a run where tests were
skipped, deselected or never collected fails here, not only one that exits non-zero.

The three subprocesses (the two runs and TensorFlow's collection) start together and overlap;
each is killed at TIMEOUT. Each run's counts are recorded (`record_property`) and printed at the
end of the session by tests/conftest.py, on success too. And the package on a machine with JAX
and no TensorFlow.
"""

import math
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OTHER_BACKENDS = ["jax", "torch"]
# tests/models takes 5-10 minutes per backend on 2 free cores; several times that when the
# cores are shared. A hang fails here instead of hanging CI.
TIMEOUT = 3600

_ONNX = "tests/models/test_export.py::test_onnx_serve_and_step_equal_keras"
_ONNX_DRAWS = "tests/models/test_export.py::test_onnx_step_draws_what_keras_draws"
_SAVEDMODEL_DRAWS = "tests/models/test_export.py::test_savedmodel_step_draws_what_keras_draws"
_SAVEDMODEL = (
    "tests/models/test_export.py::test_savedmodel_serve_equals_keras_and_60_steps_equal_serve"
)
# Node id prefix (parameters follow in brackets) -> the skip reason it must give, per backend.
SKIPS = {
    "jax": {
        _ONNX: "ONNX is converted from TensorFlow's graph",
        _ONNX_DRAWS: "ONNX is converted from TensorFlow's graph",
    },
    "torch": {
        _ONNX: "ONNX is converted from TensorFlow's graph",
        _ONNX_DRAWS: "ONNX is converted from TensorFlow's graph",
        _SAVEDMODEL: "SavedModel export: TF and JAX",
        _SAVEDMODEL_DRAWS: "SavedModel export: TF and JAX",
    },
}
PYTEST = [sys.executable, "-m", "pytest", "tests/models", "-p", "no:cacheprovider"]


@pytest.fixture(scope="module")
def model_test_runs(tmp_path_factory):
    """backend -> (Popen, JUnit XML path) for the other backends; "tensorflow" -> the Popen of
    TensorFlow's collection (`--collect-only -q`: one node id per line)."""
    folder = tmp_path_factory.mktemp("backends")
    runs = {}
    for backend in OTHER_BACKENDS:
        xml = folder / f"{backend}.xml"
        command = [*PYTEST, "-q", "-o", "junit_family=xunit1", f"--junitxml={xml}"]
        runs[backend] = (_start(command, backend), xml)
    runs["tensorflow"] = (_start([*PYTEST, "--collect-only", "-q"], "tensorflow"), None)
    yield runs
    for run, _ in runs.values():
        if run.poll() is None:
            run.kill()
            run.communicate()


def _start(command, backend):
    return subprocess.Popen(
        command,
        cwd=REPO,
        env={**os.environ, "KERAS_BACKEND": backend},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(run, what) -> str:
    """The run's output, once it exits; killed (and failed) at TIMEOUT."""
    try:
        return run.communicate(timeout=TIMEOUT)[0]
    except subprocess.TimeoutExpired:
        run.kill()
        output = run.communicate()[0]
        pytest.fail(f"{what} still running after {TIMEOUT} s; its output:\n{output[-4000:]}")


@pytest.fixture(scope="module")
def tensorflow_tests(model_test_runs) -> set[str]:
    run, _ = model_test_runs["tensorflow"]
    output = _finish(run, "tests/models --collect-only under tensorflow")
    assert run.returncode == 0, output[-4000:]
    ids = {line for line in output.splitlines() if line.startswith("tests/models/")}
    assert len(ids) > 50, output[-4000:]
    return ids


def outcomes(xml: Path) -> dict[str, tuple[str, str]]:
    """Node id -> (passed | skipped | failed | error, message) from a JUnit XML (xunit1: each
    testcase names its file)."""
    out = {}
    for case in ET.parse(xml).getroot().iter("testcase"):
        node = f"{case.get('file')}::{case.get('name')}"
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("skipped", "failure", "error"):
                outcome = {"failure": "failed"}.get(child.tag, child.tag)
                message = child.get("message", "")
        out[node] = (outcome, message)
    return out


def expected_skip(backend, node) -> str | None:
    return next((r for p, r in SKIPS[backend].items() if node.split("[")[0] == p), None)


@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_model_tests_pass_on(backend, model_test_runs, tensorflow_tests, record_property):
    run, xml = model_test_runs[backend]
    output = _finish(run, f"tests/models under KERAS_BACKEND={backend}")
    assert xml.exists(), f"no JUnit XML from {backend} (exit {run.returncode}):\n{output[-4000:]}"
    results = outcomes(xml)
    counts = {k: sum(o == k for o, _ in results.values()) for k in ("passed", "skipped")}
    bad = {n: r for n, r in results.items() if r[0] not in ("passed", "skipped")}
    summary = (
        f"tests/models under {backend}: {counts['passed']} passed, {counts['skipped']} skipped "
        f"(as listed), {len(bad)} failed, of {len(tensorflow_tests)} that TensorFlow collects"
    )
    record_property("backend_summary", summary)
    print(summary)
    assert not bad, "\n".join(f"{n}: {o} {m}"[:500] for n, (o, m) in bad.items()) + output[-3000:]
    assert run.returncode == 0, output[-4000:]
    missing = sorted(tensorflow_tests - set(results))
    assert not missing, f"collected under tensorflow, not run under {backend}: {missing}"
    extra = sorted(set(results) - tensorflow_tests)
    assert not extra, f"run under {backend}, not collected under tensorflow: {extra}"
    skipped = {n: m for n, (o, m) in results.items() if o == "skipped"}
    unlisted = {n: m for n, m in skipped.items() if expected_skip(backend, n) is None}
    assert not unlisted, f"skipped under {backend} without being listed in SKIPS: {unlisted}"
    for node, message in skipped.items():
        assert expected_skip(backend, node) in message, (node, message)
    should_skip = {n for n in tensorflow_tests if expected_skip(backend, n) is not None}
    assert set(skipped) == should_skip, f"listed in SKIPS but passed: {should_skip - set(skipped)}"
    assert counts["passed"] == len(tensorflow_tests) - len(should_skip) > 0


def test_the_package_trains_without_tensorflow_installed():
    """A machine with JAX and no TensorFlow (a GPU box, a play-only install) imports the package
    and trains a policy; only the TFDS builder needs TensorFlow."""
    blocked = "tensorflow", "tensorflow_datasets", "tf2onnx"
    program = "\n".join(
        [
            "import sys",
            f"sys.modules.update(dict.fromkeys({blocked!r}))",  # None: ImportError on import
            "import exphil_keras",
            "from exphil_keras.policy import build_policy, example_batch",
            "model = build_policy('mamba', window=8, hidden_size=16, num_layers=1, state_size=4)",
            "print(model.train_on_batch(*example_batch(model, 2))[0])",
        ]
    )
    env = dict(os.environ, KERAS_BACKEND="jax")
    done = subprocess.run(
        [sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert math.isfinite(float(done.stdout.split()[-1]))

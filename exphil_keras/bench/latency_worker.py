"""`exphil bench`'s latency worker, run in a one-thread process:
`python -m exphil_keras.bench.latency_worker REPEATS NAME=PRESET_FOLDER ...` prints one
`RESULT {json}` line."""

from __future__ import annotations

import json
import sys

import keras

from exphil_keras import zoo
from exphil_keras.ops import compile_function
from exphil_keras.policy import example_batch
from exphil_keras.timing import one_thread_backend, timings_ms


def main(repeats: int, presets: list[str]) -> None:
    """Batch 1, one thread: the policy's compiled `step`, and its compiled windowed forward."""
    ready = one_thread_backend()
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


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2:])

"""`exphil` run as a user runs it: its own process, its output captured, `env` added to ours."""

import os
import subprocess
import sys

EXPHIL = [sys.executable, "-m", "exphil_keras.cli"]  # for a process a test signals or kills


def exphil(*args, env=None, timeout=900, **options):
    """`exphil ARGS` to its end; `options` go to `subprocess.run`."""
    return subprocess.run(
        [*EXPHIL, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        **options,
    )

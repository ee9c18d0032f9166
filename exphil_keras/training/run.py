"""The run folder: what a run was started with, so that running the same command again resumes
an interrupted run, reports a finished one, trains it further when asked for more epochs, and
refuses settings that differ from the run's."""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path

from exphil_keras.training.config import TrainConfig

RECORD = "run.json"
MAY_CHANGE = ("epochs", "command", "output", "replays", "data_dir", "description")


@dataclasses.dataclass
class RunState:
    finished: bool = False  # the run trained all its epochs: nothing to do
    epochs_done: int = 0  # finished epochs of a run that trains on from its best weights


def prepare(config) -> RunState:
    """Checks the output folder (a writable folder) and the run already in it, and records this
    run's settings. A ValueError names each setting that differs from the run's."""
    output = Path(config.output)
    if output.exists() and not output.is_dir():
        raise ValueError(f"--output {output}: a file, not a folder")
    output.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=output):  # an unwritable folder fails here, before any work
        pass
    record = output / RECORD
    settings = dataclasses.asdict(config)
    state = RunState()
    if record.exists():
        before = json.loads(record.read_text())
        _refuse_other_settings(output, before, settings)
        if (output / "preset").is_dir() and (output / "epochs.json").exists():
            done = len(json.loads((output / "epochs.json").read_text()))
            if config.epochs <= before["epochs"]:
                return RunState(finished=True, epochs_done=done)
            state = RunState(epochs_done=done)
    partial = record.with_suffix(".partial")
    partial.write_text(json.dumps(settings, indent=1) + "\n")
    os.replace(partial, record)
    return state


def _refuse_other_settings(output: Path, before: dict, settings: dict) -> None:
    flags = {f.name: f.metadata["flag"] for f in dataclasses.fields(TrainConfig)}
    differences = [
        f"{flags[name] or name} {settings[name]} (the run's: {before.get(name)})"
        for name in settings
        if name not in MAY_CHANGE and settings[name] != before.get(name)
    ]
    if differences:
        raise ValueError(
            f"{output} holds a run with other settings: {'; '.join(differences)}. Run the same "
            "command to resume or extend it, or choose another --output"
        )

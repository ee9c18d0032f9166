"""Trained presets that load by name: `exphil_keras.zoo.load("jamba_production")`.

A preset is a keras-hub preset folder (`config.json`, `model.weights.h5`) with a short
`metadata.json` (what it is, what it scored, the sha256 of every other file) and, beside it,
`training.json` (the training record) and `markov1.json` (the Markov-1 baseline's tables).
Shipped presets live in the package (`exphil_keras/presets/`); any such folder loads by path, and
keras-hub's `hf://` and `kaggle://` handles load too. `preset_files` checks every file first.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import keras
from keras_hub.src.utils import preset_utils
from keras_hub.src.version import __version__ as keras_hub_version

from exphil_keras import baselines, features, preset_files
from exphil_keras.features import sha256_hex as sha256
from exphil_keras.policy import PolicyModel, example_batch

SHIPPED = preset_files.SHIPPED
names = preset_files.names


def info(handle) -> dict:
    """The preset's `metadata.json`, checked (keys, and a sha256 for every file it has)."""
    return preset_files.PresetFiles(handle).metadata


def load(handle, compile: bool = True) -> PolicyModel:  # noqa: A002  (Keras' own name)
    """The preset's PolicyModel (`PolicyModel.from_preset`: every file checked, safe mode).

    With `compile=True` it is compiled for fine-tuning: Adam at a tenth of the peak learning
    rate it was trained with (a trained model overshoots at its training peak).
    """
    model = PolicyModel.from_preset(handle)
    if compile:
        learning_rate = info(handle)["learning_rate"] / 10
        model.compile(optimizer=keras.optimizers.Adam(learning_rate), jit_compile="auto")
    return model


def architecture(handle) -> dict:
    """The preset's PolicyModel arguments (backbone, window, sizes), read from its checked
    config.json without building the model."""
    files = preset_files.PresetFiles(handle)
    try:
        return dict(files.json(preset_files.CONFIG_FILE)["config"])
    except (KeyError, TypeError, ValueError) as e:
        where = files.where(preset_files.CONFIG_FILE)
        raise ValueError(f"{where}: no model arguments ({preset_files.one_line(e)})") from None


def training(handle) -> dict | None:
    """The preset's training record (command, data, history, device), if it has one."""
    files = preset_files.PresetFiles(handle)
    if preset_files.TRAINING_FILE not in files.hashes:
        return None
    return files.json(preset_files.TRAINING_FILE)


def markov1(handle) -> baselines.Markov1 | None:
    """The Markov-1 baseline fitted on the preset's training data, if it has its tables."""
    files = preset_files.PresetFiles(handle)
    if preset_files.MARKOV1_FILE not in files.hashes:
        return None
    tables = files.json(preset_files.MARKOV1_FILE)
    try:
        return baselines.Markov1.from_json(tables)
    except (AttributeError, TypeError, ValueError) as e:  # valid JSON, but not the tables
        where = files.where(preset_files.MARKOV1_FILE)
        raise ValueError(f"{where}: not Markov-1 tables ({preset_files.one_line(e)})") from None


def save(
    model: PolicyModel,
    folder,
    metadata: dict,
    training: dict | None = None,
    markov1: baselines.Markov1 | None = None,
) -> dict:
    """Write `model` as a preset folder; returns the `metadata.json` written.

    `metadata` holds every key of `preset_files.METADATA_KEYS` but parameters, sha256 and
    versions, which this adds. Each file is written under a temporary name, then renamed into
    place, metadata.json last: an interrupted save leaves files that fail their hash, never a
    preset that loads half old, half new.
    """
    folder = Path(folder)
    given = {"parameters", "sha256", "versions"}
    missing = [k for k in preset_files.METADATA_KEYS if k not in metadata and k not in given]
    if missing:
        raise ValueError(f"preset metadata for {folder} lacks {', '.join(missing)}")
    folder.mkdir(parents=True, exist_ok=True)
    extras = {
        preset_files.TRAINING_FILE: training,
        preset_files.MARKOV1_FILE: None if markov1 is None else markov1.to_json(),
    }
    with tempfile.TemporaryDirectory(dir=folder, prefix=".saving-") as temporary:
        temporary = Path(temporary)
        saver = preset_utils.get_preset_saver(str(temporary))
        # config.json, model.weights.h5, a metadata.json replaced below
        saver.save_backbone(_without_optimizer(model))
        for name, content in extras.items():
            if content is not None:
                _write_json(temporary / name, content)
        files = [*preset_files.MODEL_FILES, *(n for n, c in extras.items() if c is not None)]
        metadata = {
            **metadata,
            "parameters": int(model.count_params()),
            "sha256": {name: sha256(temporary / name) for name in files},
            "versions": {
                "keras": keras.__version__,
                "keras_hub": keras_hub_version,
                "backend": keras.backend.backend(),
            },
        }
        _write_json(temporary / preset_files.METADATA_FILE, metadata)
        for name in files:
            os.replace(temporary / name, folder / name)
        os.replace(temporary / preset_files.METADATA_FILE, folder / preset_files.METADATA_FILE)
    for name, content in extras.items():
        if content is None:  # a stale one from an earlier save would be an unhashed file
            (folder / name).unlink(missing_ok=True)
    return metadata


def _without_optimizer(model: PolicyModel) -> PolicyModel:
    """`model`, or for a compiled one the same model and weights rebuilt without an optimizer:
    a compiled model's weights file also holds the optimizer's state (Adam's two slots and an
    EMA's copy, 3x the weights), which loading a preset never reads."""
    if getattr(model, "optimizer", None) is None:  # never compiled, or compiled without one
        return model
    bare = PolicyModel.from_config(model.get_config())
    bare(example_batch(model, 1)[0])
    bare.set_weights(model.get_weights())
    return bare


def _write_json(path: Path, content) -> None:
    path.write_text(json.dumps(content, indent=1) + "\n")


def markdown_table(names=None) -> str:
    """docs/ZOO.md's table, from each preset's metadata.json and training.json, then each
    preset's description (where its caveats live).

    Beside each preset, its baselines on the same validation frames (each window's last
    position, seen at the preset's frame delay): Markov-1's loss and the main-stick accuracy of
    repeating the previous input.
    """
    rows = [
        "| preset | backbone | parameters | frame delay | val loss | main_x acc | main_y acc "
        "| Markov-1 loss | repeat-previous main_x / main_y acc | epochs | wall time | device "
        "| command |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    descriptions = [""]
    for name in names if names is not None else preset_files.names():
        meta, record = info(name), training(name)
        descriptions.append(f"- `{name}`: {meta['description']}")
        val = meta["validation"]
        markov, repeat = val["baselines"]["markov1"], val["baselines"]["repeat_previous"]
        heads = val["last_position"]["heads"]
        rows.append(
            f"| {name} | {meta['backbone']} | {meta['parameters']:,} "
            f"| {features.delay_text(meta['frame_delay'])} | {val['last_loss']:.4f} "
            f"| {heads['main_x']['acc']:.4f} | {heads['main_y']['acc']:.4f} "
            f"| {markov['loss']:.4f} "
            f"| {repeat['main_x']['acc']:.4f} / {repeat['main_y']['acc']:.4f} "
            f"| {record['epochs_run']} | {record['wall_seconds'] / 60:.0f} min "
            f"| {record['device']} | `{record['command']}` |"
        )
    return "\n".join(rows + descriptions) + "\n"

"""Trained presets that load by name: `exphil_keras.zoo.load("jamba_production")`.

A preset is a folder: `model.keras` (the PolicyModel) and `metadata.json` (how it was built and
trained, what it scored, the sha256 of every file). Shipped presets live in the package
(`zoo/` in the repository); any folder of that form loads by path.
"""

from __future__ import annotations

import json
from pathlib import Path

import keras

from exphil_keras import policy  # noqa: F401  (registers PolicyModel for loading)
from exphil_keras.features import sha256_hex as sha256

SHIPPED = Path(__file__).resolve().parent / "presets"
MODEL_FILE = "model.keras"
METADATA_FILE = "metadata.json"


def names() -> list[str]:
    """Names of the presets shipped in the package."""
    if not SHIPPED.is_dir():
        return []
    return sorted(p.name for p in SHIPPED.iterdir() if (p / METADATA_FILE).is_file())


def _folder(name_or_path) -> Path:
    path = Path(name_or_path).expanduser()
    if (path / METADATA_FILE).is_file():
        return path
    if (SHIPPED / str(name_or_path) / METADATA_FILE).is_file():
        return SHIPPED / str(name_or_path)
    known = ", ".join(names()) or "none yet"
    raise ValueError(
        f"unknown preset {str(name_or_path)!r}: not a preset folder nor one of: {known}"
    )


def info(name_or_path) -> dict:
    """The preset's metadata.json."""
    return json.loads((_folder(name_or_path) / METADATA_FILE).read_text())


def load(name_or_path, compile: bool = True) -> keras.Model:  # noqa: A002  (Keras' own name)
    """The preset's PolicyModel, weights checked against metadata's sha256, loaded in safe mode.

    With `compile=True` it is compiled for fine-tuning: Adam at a tenth of the peak learning
    rate it was trained with (a trained model overshoots at its training peak).
    """
    folder = _folder(name_or_path)
    metadata = info(folder)
    for file, expected in metadata["sha256"].items():
        actual = sha256(folder / file)
        if actual != expected:
            raise ValueError(
                f"{folder / file}: sha256 {actual} does not match metadata.json ({expected}); "
                "the file was changed or damaged, refusing to load it"
            )
    model = keras.saving.load_model(folder / MODEL_FILE, compile=False, safe_mode=True)
    if compile:
        learning_rate = metadata["training"]["learning_rate"] / 10
        model.compile(optimizer=keras.optimizers.Adam(learning_rate), jit_compile="auto")
    return model


def save(model: keras.Model, folder, metadata: dict) -> dict:
    """Write `model` and `metadata` (completed with file hashes and sizes) as a preset folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / MODEL_FILE)
    metadata = {
        **metadata,
        "parameters": int(model.count_params()),
        "sha256": {MODEL_FILE: sha256(folder / MODEL_FILE)},
        "bytes": {MODEL_FILE: (folder / MODEL_FILE).stat().st_size},
        "versions": {"keras": keras.__version__, "backend": keras.backend.backend()},
    }
    (folder / METADATA_FILE).write_text(json.dumps(metadata, indent=1) + "\n")
    return metadata


def markdown_table(presets=None) -> str:
    """docs/ZOO.md's table, from each preset's metadata.json (so every figure is traceable).

    Beside each preset, its baselines on the same validation frames (each window's last
    position): Markov-1's loss and the main-stick accuracy of repeating the previous input.
    """
    rows = [
        "| preset | backbone | parameters | val loss | main_x acc | main_y acc | Markov-1 loss "
        "| repeat-previous main_x / main_y acc | epochs | wall time | device | command |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in presets if presets is not None else names():
        meta = info(name)
        val, training = meta["validation"], meta["training"]
        markov, repeat = val["baselines"]["markov1"], val["baselines"]["repeat_previous"]
        heads = val["last_position"]["heads"]
        rows.append(
            f"| {name} | {meta['backbone']} | {meta['parameters']:,} | {val['last_loss']:.4f} "
            f"| {heads['main_x']['acc']:.4f} | {heads['main_y']['acc']:.4f} "
            f"| {markov['loss']:.4f} "
            f"| {repeat['main_x']['acc']:.4f} / {repeat['main_y']['acc']:.4f} "
            f"| {training['epochs_run']} | {training['wall_seconds'] / 60:.0f} min "
            f"| {training['device']} | `{training['command']}` |"
        )
    return "\n".join(rows) + "\n"

"""The training options, written once: each field of `TrainConfig` carries its flag, type,
default, bounds and help, and `exphil train`'s flags, the config and bench's subprocess flags
are all generated from them (nanoGPT's "the options are the flag list", with types)."""

from __future__ import annotations

import argparse
import dataclasses
import math

from exphil_keras import architectures, distribution, features

# ExPhil's training recipes (its `--preset` flag, DESIGN.md); explicit flags override them.
RECIPES = {
    "gpu_mlp_quick": dict(
        epochs=5, max_files=50, batch_size=256, hidden_size=128, backbone="mlp", num_layers=2,
        learning_rate=3e-4, schedule="cosine", warmup_steps=100,
    ),
    "gpu_standard": dict(
        epochs=20, max_files=100, batch_size=256, hidden_size=128, backbone="mamba", window=60,
        num_layers=2, learning_rate=1e-4, schedule="cosine", warmup_steps=500,
        label_smoothing=0.1, ema=0.999, patience=5,
    ),
    "production": dict(
        epochs=100, max_files=None, batch_size=256, hidden_size=256, backbone="mamba",
        window=60, num_layers=3, state_size=32, expand=2, learning_rate=1e-4,
        schedule="cosine_restarts", warmup_steps=2000, label_smoothing=0.1, ema=0.9995,
        grad_accumulation=4, patience=10,
    ),
}  # fmt: skip
SCHEDULES = ("constant", "cosine", "cosine_restarts")


def option(default, flag, kind, help, choices=None, low=None, above=None, below=None):  # noqa: A002
    """A TrainConfig field with its flag and bounds: `low` the least value allowed, `above` and
    `below` bounds it must stay strictly beyond (all checked by `TrainConfig.check`)."""
    spec = dict(flag=flag, kind=kind, help=help, choices=choices, low=low, above=above, below=below)
    return dataclasses.field(default=default, metadata=spec)


def _frame_delays(text: str) -> int | tuple[int, int]:
    """--frame-delay's type: a bad value is argparse's one-line error, naming the flag."""
    try:
        return features.frame_delays(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


@dataclasses.dataclass
class TrainConfig:
    replays: str | None = option(
        None, "--replays", str, "folder tree of .slp files; the dataset is built from it if needed"
    )
    data_dir: str | None = option(
        None, "--data-dir", str, "TFDS data dir (default: TFDS's, ~/tensorflow_datasets)"
    )
    output: str = option(
        "runs/exphil",
        "--output",
        str,
        "run folder: logs, checkpoints, the backup, and the preset in OUTPUT/preset",
    )
    name: str | None = option(None, "--name", str, "preset name (default: <backbone>_custom)")
    description: str | None = option(
        None, "--description", str, "what the preset is for, in a sentence or three (its metadata)"
    )
    preset: str | None = option(
        None,
        "--preset",
        str,
        "ExPhil's training recipe (exphil_keras.training.config.RECIPES); explicit flags "
        "override its values",
        choices=tuple(RECIPES),
    )
    fine_tune: str | None = option(
        None,
        "--fine-tune",
        str,
        "start from a trained preset (a shipped name, a folder, hf:// or kaggle://): its "
        "weights, architecture, window and delays replace those flags",
    )
    temporal: bool = option(
        False, "--temporal", bool, "a temporal backbone: mamba unless --backbone names another"
    )
    backbone: str = option(
        "mlp", "--backbone", str, "the backbone architecture", choices=architectures.NAMES
    )
    window: int = option(60, "--window-size", int, "frames per training window", low=2)
    hidden_size: int = option(256, "--hidden-size", int, "backbone width", low=1)
    num_layers: int = option(2, "--num-layers", int, "backbone layers", low=1)
    state_size: int = option(16, "--state-size", int, "Mamba state size", low=1)
    expand: int = option(2, "--expand", int, "Mamba inner width per hidden unit", low=1)
    heads: str = option(
        "independent",
        "--heads",
        str,
        "controller heads: each on its own, or each conditioned on the heads before it "
        "(teacher-forced in training, drawn in turn when playing)",
        choices=architectures.HEADS,
    )
    epochs: int = option(
        1,
        "--epochs",
        int,
        "epochs to train in all (a finished run trains on only if this grows)",
        low=1,
    )
    batch_size: int = option(
        256, "--batch-size", int, "windows per batch (global, over every device)", low=1
    )
    learning_rate: float = option(3e-4, "--lr", float, "peak learning rate", above=0)
    schedule: str = option(
        "constant",
        "--schedule",
        str,
        "learning rate after the warmup, over --epochs (stepped every batch)",
        choices=SCHEDULES,
    )
    warmup_steps: int = option(
        0, "--warmup-steps", int, "optimizer steps of linear warmup to --lr", low=0
    )
    label_smoothing: float = option(
        0.0,
        "--label-smoothing",
        float,
        "on the categorical heads' training loss (never buttons)",
        low=0,
        below=1,
    )
    ema: float | None = option(
        None,
        "--ema",
        float,
        "EMA momentum per batch, 0: off (validation and the preset use the averaged weights)",
        low=0,
        below=1,
    )
    grad_accumulation: int = option(
        1, "--grad-accumulation", int, "batches per optimizer step", low=1
    )
    patience: int | None = option(
        None,
        "--patience",
        int,
        "stop early after this many epochs without a better validation loss",
        low=1,
    )
    action_delay: int = option(
        1, "--action-delay", int, "predict the input this many frames ahead", low=1
    )
    frame_delay: int | tuple[int, int] = option(
        0,
        "--frame-delay",
        _frame_delays,
        "see the game state this many frames late, or LOW-HIGH: a delay drawn per window "
        "(ExPhil's --online-robust 0-18), for a policy that plays at any delay in the range",
    )
    max_files: int | None = option(
        None,
        "--max-files",
        int,
        "train on the first N training games, by sha256 (default: all)",
        low=1,
    )
    max_steps_per_epoch: int | None = option(
        None, "--max-steps-per-epoch", int, "cap the steps per epoch (smoke runs)", low=1
    )
    seed: int = option(0, "--seed", int, "random seed")
    distribute: str = option(
        "none",
        "--distribute",
        str,
        "data-parallel: every local device (GPUs, or XLA_FLAGS' virtual CPUs) through "
        "keras.distribution on JAX, tf.distribute on TensorFlow; multi-host when the backend's "
        "cluster variables are set (docs/SCALING.md)",
        choices=distribution.MODES,
    )
    command: str = option("", None, str, "the command that started the run, as recorded")

    @classmethod
    def from_recipe(cls, preset: str | None, **overrides) -> TrainConfig:
        """The recipe's values, then every override that is not None."""
        values = dict(RECIPES[preset]) if preset else {}
        values.update({k: v for k, v in overrides.items() if v is not None})
        if values.get("temporal") and values.get("backbone", "mlp") == "mlp":
            if overrides.get("backbone") == "mlp":
                raise ValueError("--temporal needs a temporal backbone; mlp sees one frame")
            values["backbone"] = "mamba"
        return cls(preset=preset, **values).check()

    @classmethod
    def from_args(cls, args: argparse.Namespace, command: str = "") -> TrainConfig:
        """The config of `exphil train`'s parsed flags (see `add_flags`)."""
        given = {f.name: getattr(args, f.name) for f in _flagged() if f.name != "preset"}
        return cls.from_recipe(args.preset, **given, command=command)

    def check(self) -> TrainConfig:
        """Every value within its bounds, finite, among its choices; a ValueError names the flag."""
        for f in _flagged():
            value, spec = getattr(self, f.name), f.metadata
            if value is None or isinstance(value, bool):
                continue
            flag = spec["flag"]
            if spec["choices"] and value not in spec["choices"]:
                raise ValueError(f"{flag} {value!r}: choose one of {', '.join(spec['choices'])}")
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{flag} {value}: must be a finite number")
            if spec["low"] is not None and value < spec["low"]:
                raise ValueError(f"{flag} {value}: must be {spec['low']} or more")
            if spec["above"] is not None and value <= spec["above"]:
                raise ValueError(f"{flag} {value}: must be above {spec['above']}")
            if spec["below"] is not None and value >= spec["below"]:
                raise ValueError(f"{flag} {value}: must be below {spec['below']}")
        features.delay_range(self.frame_delay)  # a ValueError for a delay below 0
        return self

    def flags(self, names) -> list[str]:
        """`exphil train` flags that reproduce these fields (bench's subprocesses)."""
        specs = {f.name: f.metadata for f in _flagged()}
        out = []
        for name in names:
            value = getattr(self, name)
            if isinstance(value, tuple | list):  # a frame delay range
                out += [specs[name]["flag"], features.delay_text(value)]
            elif value is not None:
                out += [specs[name]["flag"], str(value)]
        return out


def _flagged():
    return [f for f in dataclasses.fields(TrainConfig) if f.metadata["flag"]]


def add_flags(parser: argparse.ArgumentParser) -> None:
    """Every option's flag; defaults stay None so that a recipe's values apply underneath."""
    for f in _flagged():
        spec = f.metadata
        if spec["kind"] is bool:
            parser.add_argument(spec["flag"], dest=f.name, action="store_true", help=spec["help"])
            continue
        shown = f" (default: {f.default})" if f.default not in (None, "") else ""
        parser.add_argument(
            spec["flag"], dest=f.name, type=spec["kind"], choices=spec["choices"],
            help=spec["help"] + shown,
        )  # fmt: skip

"""`exphil`: the command line. Thin: parses flags and calls the library."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from pathlib import Path


def _build_data(args) -> int:
    from tqdm.contrib.logging import logging_redirect_tqdm

    if args.beam_runner:
        _extra("apache_beam", "beam")
    from exphil_keras.datasets.slippi_windows import build

    with logging_redirect_tqdm():  # skip messages print above the progress bar, not through it
        builder, report = build(
            args.replays,
            args.data_dir,
            args.config,
            overwrite=args.overwrite,
            beam_runner=args.beam_runner,
            beam_args=args.beam_option,
            memory_buffer_mb=args.memory_buffer_mb,
        )
    if not report.files_read and not report.skipped:
        print(f"dataset already built at {builder.data_dir} (--overwrite rebuilds it)")
        return 0
    print(report.format())
    report_path = Path(builder.data_dir) / "build_report.json"
    report_path.write_text(json.dumps(report.to_dict(), indent=1))
    print(f"dataset: {builder.data_dir}\nreport: {report_path}")
    return 0


def _train(args) -> int:
    from exphil_keras import train, zoo

    metadata = train.train(train.config_from_args(args))
    print(
        f"preset {metadata['name']} written to {Path(args.output) / 'preset'}: validation "
        f"last_loss {metadata['validation']['last_loss']:.4f}, "
        f"{zoo.training(Path(args.output) / 'preset')['wall_seconds']:.0f} s"
    )
    return 0


def _eval(args) -> int:
    from exphil_keras import evaluate

    result = evaluate.evaluate_preset(args.model, args.replays, args.batch_size, args.split)
    print(evaluate.format_result(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


def _play_replay(args) -> int:
    from exphil_keras.bench import ONE_THREAD

    for name, value in ONE_THREAD.items():  # the frame budget is one CPU thread's
        os.environ.setdefault(name, value)
    agent = _extra("exphil_keras.agent", "play")
    result = agent.play_preset(args.model, args.replay, args.port)
    print(agent.format_play_report(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


def _export(args) -> int:
    from exphil_keras import export

    if args.format == "onnx":
        _extra("tf2onnx", "onnx")
    written = export.export(args.model, args.output, args.format)
    print(f"{args.format} of {args.model} written to {written}")
    return 0


def _bench(args) -> int:
    from exphil_keras import bench

    backbones = [b.strip() for b in args.backbones.split(",") if b.strip()]
    if args.docs and Path(args.out).resolve() != (Path(args.docs) / "bench").resolve():
        raise ValueError("with --docs DIR, --out must be DIR/bench: the pages link to it")
    unknown = sorted(set(backbones) - set(bench.BACKBONES))
    if unknown:
        raise ValueError(f"unknown backbone(s) {unknown}; choose from {list(bench.BACKBONES)}")
    results = bench.run(
        replays=args.replays,
        data_dir=args.data_dir,
        out=args.out,
        work_dir=args.work_dir,
        backbones=backbones,
        epochs=args.epochs,
        hidden_size=args.hidden_size,
        batch_size=args.batch_size,
        max_files=args.max_files or None,
        latency_repeats=args.latency_repeats,
    )
    if args.docs:
        bench.update_docs(results, Path(args.docs))
    print(bench.markdown(results))
    print(f"\nwritten: {Path(args.out) / 'results.json'}, results.md, *.png")
    return 0


def _zoo(args) -> int:
    from exphil_keras import zoo

    if args.name:
        print(json.dumps(zoo.info(args.name), indent=1))
    else:
        for name in zoo.names():
            print(f"{name}\n    {zoo.info(name)['description']}")
    return 0


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="exphil",
        description="Melee policies from Slippi replays, as a Keras 3 model zoo.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    build = commands.add_parser(
        "build-data",
        help="build the slippi_windows TFDS dataset from a folder of .slp replays",
        description=(
            "Read every .slp file under --replays with peppi-py, skip unusable ones (with the "
            "reason), and write training windows to a TFDS data dir, split by whole game "
            "(train 80 / validation 10 / test 10 by the file's sha256). Prints a report."
        ),
    )
    build.add_argument("--replays", required=True, help="folder tree of .slp files")
    build.add_argument(
        "--data-dir", default=None, help="TFDS data dir (default: TFDS's, ~/tensorflow_datasets)"
    )
    build.add_argument(
        "--config",
        default="w60",
        choices=["w60", "w30", "w90"],
        help="window length in frames (stride is half of it; default: w60)",
    )
    build.add_argument(
        "--overwrite", action="store_true", help="rebuild even if the dataset already exists"
    )
    build.add_argument(
        "--memory-buffer-mb",
        type=int,
        help="MB of examples the writer shuffles in memory before spilling them to disk "
        "(default: TFDS's 1000); bounds the build's memory, which otherwise grows to it. "
        "Plain builds only (Beam shuffles on its runner)",
    )
    build.add_argument(
        "--beam-runner",
        help="read the replays in an Apache Beam pipeline on this runner (DirectRunner, "
        "DataflowRunner, FlinkRunner, ...; needs the beam extra). Default: one local process",
    )
    build.add_argument(
        "--beam-option",
        action="append",
        default=[],
        metavar="OPTION",
        help="a Beam pipeline option, repeatable: --beam-option=--direct_num_workers=2 "
        "--beam-option=--direct_running_mode=multi_processing (docs/SCALING.md)",
    )
    build.set_defaults(run=_build_data)

    train = commands.add_parser(
        "train",
        help="train a policy (ExPhil's flags and presets) and save it as a preset folder",
        description=(
            "Builds the dataset if needed, trains with a progress bar, TensorBoard logs in "
            "OUTPUT/logs, the best epoch by validation last_loss in OUTPUT/best.keras, and a "
            "resumable backup in OUTPUT/backup: run the same command again after an "
            "interruption to continue. Ends by writing OUTPUT/preset (a keras-hub preset "
            "folder). A --preset sets ExPhil's values; explicit flags override them."
        ),
    )
    train.add_argument("--replays", help="folder of .slp files (to build the dataset from)")
    train.add_argument("--data-dir", help="TFDS data dir (default: TFDS's)")
    train.add_argument(
        "--preset",
        choices=["gpu_mlp_quick", "gpu_standard", "production"],
        help="ExPhil's training presets (their values: exphil_keras.train.PRESETS, docs/ZOO.md)",
    )
    train.add_argument(
        "--temporal", action="store_true", help="a temporal backbone (mamba unless --backbone)"
    )
    train.add_argument(
        "--backbone",
        choices=["mlp", "lstm", "gru", "attention", "sliding_window", "mamba", "jamba"],
    )
    for flag, kind, text in (
        ("--window-size", int, "frames per training window (default 60)"),
        ("--num-layers", int, "backbone layers"),
        ("--hidden-size", int, "backbone width"),
        ("--state-size", int, "Mamba state size"),
        ("--epochs", int, "epochs"),
        ("--batch-size", int, "windows per batch"),
        ("--lr", float, "peak learning rate"),
        ("--label-smoothing", float, "on the categorical heads' training loss (not buttons)"),
        ("--warmup-steps", int, "optimizer steps of linear warmup to --lr"),
        (
            "--ema",
            float,
            "EMA momentum per batch, 0: off (validation and presets use the EMA)",
        ),
        ("--grad-accumulation", int, "batches per optimizer step"),
        ("--patience", int, "early stop after this many epochs without a better val loss"),
        ("--action-delay", int, "predict the input this many frames ahead (default 1)"),
        ("--frame-delay", int, "see the game state this many frames late (default 0)"),
        ("--max-files", int, "train on the first N training games"),
        ("--max-steps-per-epoch", int, "cap the steps per epoch (smoke runs)"),
        ("--seed", int, "random seed (default 0)"),
    ):
        train.add_argument(flag, type=kind, help=text)
    train.add_argument(
        "--schedule",
        choices=["constant", "cosine", "cosine_restarts"],
        help="learning rate after the warmup, over --epochs (stepped every batch)",
    )
    train.add_argument("--name", help="preset name (default: <backbone>_custom)")
    train.add_argument(
        "--backend",
        choices=["tensorflow", "jax", "torch"],
        help="Keras backend (default: KERAS_BACKEND or tensorflow)",
    )
    train.add_argument(
        "--distribute",
        choices=["none", "data-parallel"],
        default="none",
        help="data-parallel: every local device (GPUs, or XLA_FLAGS' virtual CPUs) through "
        "keras.distribution on JAX, tf.distribute on TensorFlow; multi-host when the "
        "backend's cluster variables are set (docs/SCALING.md). --batch-size is global",
    )
    train.add_argument("--output", default="runs/exphil", help="run folder (default runs/exphil)")
    train.set_defaults(run=_train)

    evaluate = commands.add_parser(
        "eval",
        help="score a preset on replays against repeat-previous and Markov-1 baselines",
        description=(
            "Windows from the replays (the preset's window and delays), scored at their last "
            "position: seed-comparable loss, per-head NLL and accuracy, and the baselines on "
            "the same frames."
        ),
    )
    evaluate.add_argument("--model", required=True, help="preset name or preset folder")
    evaluate.add_argument("--replays", required=True, help="folder of .slp files")
    evaluate.add_argument(
        "--split",
        default="all",
        choices=["all", "train", "validation", "test"],
        help="only the games of this dataset split (by sha256; default: all)",
    )
    evaluate.add_argument("--json", help="also write the figures to this JSON file")
    evaluate.add_argument("--batch-size", type=int, default=256)
    evaluate.add_argument("--backend", choices=["tensorflow", "jax", "torch"])
    evaluate.set_defaults(run=_eval)

    play = commands.add_parser(
        "play-replay",
        help="run the live agent over a replay: decision latency and agreement with the player",
        description=(
            "Streams the replay through libmelee's Console as if live; the agent decides every "
            "playable frame (greedy, one CPU thread). Prints the decision latency (median, p99, "
            "max, frames over 16.67 ms) and how often each head matches the player's next input."
        ),
    )
    play.add_argument("--model", required=True, help="preset name or preset folder")
    play.add_argument("--replay", required=True, help="a .slp file (Slippi 3.0 or later)")
    play.add_argument(
        "--port", type=int, help="libmelee port (1-4) the agent plays (default: the first human)"
    )
    play.add_argument("--json", help="also write the figures to this JSON file")
    play.add_argument("--backend", choices=["tensorflow", "jax", "torch"])
    play.set_defaults(run=_play_replay)

    exporter = commands.add_parser(
        "export",
        help="export a preset as a SavedModel (serve + step endpoints) or ONNX",
        description=(
            "SavedModel: endpoints `serve` (windows -> logits) and `step` (one frame + the "
            "streaming state as tensors state_0.. -> logits + next_state_0..), from the "
            "TensorFlow or the JAX backend. ONNX: serve.onnx and step.onnx (with the "
            "SavedModel they come from, in OUTPUT/savedmodel), from the TensorFlow backend."
        ),
    )
    exporter.add_argument("--model", required=True, help="preset name or preset folder")
    exporter.add_argument("--output", required=True, help="folder to write")
    exporter.add_argument("--format", choices=["savedmodel", "onnx"], default="savedmodel")
    exporter.add_argument("--backend", choices=["tensorflow", "jax"])
    exporter.set_defaults(run=_export)

    bench = commands.add_parser(
        "bench",
        help="train and time every backbone at one size: ExPhil's architecture tables",
        description=(
            "Each backbone trains at one comparable size on the same games, split and seed "
            "(one `exphil train` process each, so peak memory is its own), then is timed at "
            "batch 1 on one CPU thread. Writes OUT/results.json, results.md and PNG plots; "
            "--docs also rewrites the measured tables of ARCHITECTURES.md and the backbone pages."
        ),
    )
    bench.add_argument("--replays", help="folder of .slp files (to build the dataset from)")
    bench.add_argument("--data-dir", help="TFDS data dir (default: TFDS's)")
    bench.add_argument("--epochs", type=int, default=3, help="epochs per backbone (default 3)")
    bench.add_argument(
        "--backbones",
        default="mlp,lstm,gru,attention,mamba,jamba",
        help="comma-separated (default: all six)",
    )
    bench.add_argument("--hidden-size", type=int, default=128, help="every backbone's width")
    bench.add_argument("--batch-size", type=int, default=256)
    bench.add_argument(
        "--max-files", type=int, default=50, help="training games, by sha256 (0: all; default 50)"
    )
    bench.add_argument("--latency-repeats", type=int, default=300)
    bench.add_argument("--out", default="runs/bench/results", help="where the results go")
    bench.add_argument("--work-dir", default="runs/bench", help="the training runs' folders")
    bench.add_argument("--docs", help="docs folder whose measured tables to rewrite")
    bench.set_defaults(run=_bench)

    presets = commands.add_parser("zoo", help="list the shipped presets, or show one's metadata")
    presets.add_argument("name", nargs="?", help="a preset to describe")
    presets.set_defaults(run=_zoo)
    return parser


def _extra(module: str, extra: str):
    """Import an optional dependency, or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        raise ValueError(
            f"this needs {e.name}, from the {extra} extra: pip install 'exphil-keras[{extra}]'"
        ) from None


def main(argv=None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter
    args = make_parser().parse_args(argv)
    if getattr(args, "backend", None):
        os.environ["KERAS_BACKEND"] = args.backend  # before anything imports keras
    try:
        return args.run(args)
    except (FileNotFoundError, NotADirectoryError, ValueError, FloatingPointError) as e:
        print(f"exphil {args.command}: error: {e}", file=sys.stderr)
        return 2
    except MemoryError as e:
        print(
            f"exphil {args.command}: error: out of memory ({e or 'MemoryError'}); "
            "build-data: lower --memory-buffer-mb; train: lower --batch-size",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print(f"exphil {args.command}: interrupted; nothing partial was kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

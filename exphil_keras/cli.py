"""`exphil`: the command line. Thin: each subcommand is a small parser function beside its
handler, and the handler calls the library. A user error prints one line and exits 2
(`--debug` shows the traceback)."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import shlex
import sys
from pathlib import Path

BACKENDS = ("tensorflow", "jax", "torch")


def _build_data_parser(commands):
    parser = commands.add_parser(
        "build-data",
        help="build the slippi_windows TFDS dataset from a folder of .slp replays",
        description=(
            "Read every .slp file under --replays with peppi-py, skip unusable ones (with the "
            "reason), and write training windows to a TFDS data dir, split by whole game "
            "(train 80 / validation 10 / test 10 by the file's sha256). Prints a report."
        ),
    )
    parser.add_argument("--replays", required=True, help="folder tree of .slp files")
    parser.add_argument("--data-dir", help="TFDS data dir (default: TFDS's, ~/tensorflow_datasets)")
    parser.add_argument(
        "--config",
        default="w60",
        choices=["w60", "w30", "w90"],
        help="window length in frames (stride is half of it; default: w60)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="rebuild even if the dataset already exists"
    )
    parser.add_argument(
        "--memory-buffer-mb",
        type=int,
        help="MB of examples the writer shuffles in memory before spilling them to disk "
        "(default: TFDS's 1000); bounds the build's memory, which otherwise grows to it. "
        "Plain builds only (Beam shuffles on its runner)",
    )
    parser.add_argument(
        "--beam-runner",
        help="read the replays in an Apache Beam pipeline on this runner (DirectRunner, "
        "DataflowRunner, FlinkRunner, ...; needs the beam extra). Default: one local process",
    )
    parser.add_argument(
        "--beam-option",
        action="append",
        default=[],
        metavar="OPTION",
        help="a Beam pipeline option, repeatable: --beam-option=--direct_num_workers=2 "
        "--beam-option=--direct_running_mode=multi_processing (docs/SCALING.md)",
    )
    parser.set_defaults(run=_build_data)


def _build_data(args) -> int:
    from tqdm.contrib.logging import logging_redirect_tqdm

    if args.beam_runner:
        _extra("apache_beam", "beam")
    from exphil_keras.datasets.slippi_windows import build

    if args.data_dir:
        _writable_folder(args.data_dir, "--data-dir")
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


def _train_parser(commands):
    from exphil_keras.training.config import add_flags

    parser = commands.add_parser(
        "train",
        help="train a policy (ExPhil's flags and recipes) and save it as a preset folder",
        description=(
            "Builds the dataset if needed, trains with a progress bar, TensorBoard logs in "
            "OUTPUT/logs, the best epoch by validation last_loss in OUTPUT/best.keras, and a "
            "resumable backup in OUTPUT/backup: run the same command again after an "
            "interruption to continue; on a finished run it reports the run, and with more "
            "--epochs it trains on from the best epoch. Ends by writing OUTPUT/preset. A "
            "--preset sets ExPhil's recipe; explicit flags override it."
        ),
    )
    add_flags(parser)
    _backend_flag(parser)
    parser.set_defaults(run=_train)


def _train(args) -> int:
    from exphil_keras import train

    command = shlex.join(["exphil", *sys.argv[1:]])
    metadata = train.train(train.TrainConfig.from_args(args, command))
    print(
        f"preset {metadata['name']} in {Path(args.output or 'runs/exphil') / 'preset'}: "
        f"validation last_loss {metadata['validation']['last_loss']:.4f}"
    )
    return 0


def _eval_parser(commands):
    parser = commands.add_parser(
        "eval",
        help="score a preset on replays against repeat-previous and Markov-1 baselines",
        description=(
            "Windows from the replays (the preset's window and delays), scored at their last "
            "position: seed-comparable loss, per-head NLL and accuracy, and the baselines on "
            "the same frames."
        ),
    )
    _preset_flag(parser)
    parser.add_argument("--replays", required=True, help="folder of .slp files")
    parser.add_argument(
        "--split",
        default="all",
        choices=["all", "train", "validation", "test"],
        help="only the games of this dataset split (by sha256; default: all)",
    )
    parser.add_argument(
        "--frame-delay",
        type=int,
        help="score at this frame delay (default: the preset's; a range's lowest)",
    )
    _json_flag(parser)
    parser.add_argument("--batch-size", type=int, default=256)
    _backend_flag(parser)
    parser.set_defaults(run=_eval)


def _eval(args) -> int:
    from exphil_keras import evaluate

    _writable_file(args.json, "--json")
    result = evaluate.evaluate_preset(
        args.model, args.replays, args.batch_size, args.split, args.frame_delay
    )
    print(evaluate.format_result(result))
    if args.json:
        _write_json(args.json, result)
    return 0


def _play_replay_parser(commands):
    parser = commands.add_parser(
        "play-replay",
        help="run the live agent over a replay: decision latency and agreement with the player",
        description=(
            "Streams the replay through libmelee's Console as if live; the agent decides every "
            "playable frame (greedy, one CPU thread). Prints the decision latency (median, p99, "
            "max, frames over 16.67 ms) and how often each head matches the player's next input."
        ),
    )
    _preset_flag(parser)
    parser.add_argument("--replay", required=True, help="a .slp file (Slippi 3.0 or later)")
    parser.add_argument(
        "--port", type=int, help="libmelee port (1-4) the agent plays (default: the first human)"
    )
    parser.add_argument(
        "--frame-delay",
        type=int,
        help="for a preset trained on a range of frame delays: the one to play at (default: "
        "the range's lowest)",
    )
    _json_flag(parser)
    _backend_flag(parser)
    parser.set_defaults(run=_play_replay)


def _play_replay(args) -> int:
    from exphil_keras.timing import ONE_THREAD

    for name, value in ONE_THREAD.items():  # the frame budget is one CPU thread's
        os.environ.setdefault(name, value)
    _writable_file(args.json, "--json")
    agent = _extra("exphil_keras.agent", "play")
    result = agent.play_preset(args.model, args.replay, args.port, args.frame_delay)
    print(agent.format_play_report(result))
    if args.json:
        _write_json(args.json, result)
    return 0


def _export_parser(commands):
    parser = commands.add_parser(
        "export",
        help="export a preset as a SavedModel (serve + step endpoints) or ONNX",
        description=(
            "SavedModel: endpoints `serve` (windows -> logits) and `step` (one frame + the "
            "streaming state as tensors state_0.. -> logits + next_state_0..), from the "
            "TensorFlow or the JAX backend. ONNX: serve.onnx and step.onnx (with the "
            "SavedModel they come from, in OUTPUT/savedmodel), from the TensorFlow backend."
        ),
    )
    _preset_flag(parser)
    parser.add_argument("--output", required=True, help="folder to write")
    parser.add_argument("--format", choices=["savedmodel", "onnx"], default="savedmodel")
    _backend_flag(parser, choices=("tensorflow", "jax"))
    parser.set_defaults(run=_export)


def _export(args) -> int:
    from exphil_keras import export

    if args.format == "onnx":
        _extra("tf2onnx", "onnx")
    _writable_folder(args.output, "--output")
    written = export.export(args.model, args.output, args.format)
    print(f"{args.format} of {args.model} written to {written}")
    return 0


def _bench_parser(commands):
    from exphil_keras.architectures import ARCHITECTURES

    parser = commands.add_parser(
        "bench",
        help="train and time every backbone at one size: ExPhil's architecture tables",
        description=(
            "Each backbone trains at one comparable size on the same games, split and seed "
            "(one `exphil train` process each, so peak memory is its own), then is timed at "
            "batch 1 on one CPU thread. Writes OUT/results.json, results.md and PNG plots; "
            "--docs also rewrites the measured tables of ARCHITECTURES.md and the backbone pages."
        ),
    )
    parser.add_argument("--replays", help="folder of .slp files (to build the dataset from)")
    parser.add_argument("--data-dir", help="TFDS data dir (default: TFDS's)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per backbone (default 3)")
    parser.add_argument(
        "--backbones",
        default=",".join(ARCHITECTURES),
        help=f"comma-separated (default: all {len(ARCHITECTURES)})",
    )
    parser.add_argument("--hidden-size", type=int, default=128, help="every backbone's width")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument(
        "--max-files", type=int, default=50, help="training games, by sha256 (0: all; default 50)"
    )
    parser.add_argument("--latency-repeats", type=int, default=300)
    parser.add_argument("--out", default="runs/bench/results", help="where the results go")
    parser.add_argument("--work-dir", default="runs/bench", help="the training runs' folders")
    parser.add_argument("--docs", help="docs folder whose measured tables to rewrite")
    parser.set_defaults(run=_bench)


def _bench(args) -> int:
    from exphil_keras.architectures import ARCHITECTURES
    from exphil_keras.bench import render
    from exphil_keras.bench.run import run

    backbones = [b.strip() for b in args.backbones.split(",") if b.strip()]
    if args.docs and Path(args.out).resolve() != (Path(args.docs) / "bench").resolve():
        raise ValueError("with --docs DIR, --out must be DIR/bench: the pages link to it")
    unknown = sorted(set(backbones) - set(ARCHITECTURES))
    if unknown:
        raise ValueError(f"unknown backbone(s) {unknown}; choose from {list(ARCHITECTURES)}")
    results = run(
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
        render.update_docs(results, Path(args.docs))
    print(render.markdown(results))
    print(f"\nwritten: {Path(args.out) / 'results.json'}, results.md, *.png")
    return 0


def _zoo_parser(commands):
    parser = commands.add_parser(
        "zoo", help="list the shipped presets with their descriptions, or show one's metadata"
    )
    parser.add_argument(
        "name", nargs="?", help="a preset to describe: a shipped name, a folder, hf:// or kaggle://"
    )
    parser.set_defaults(run=_zoo)


def _zoo(args) -> int:
    from exphil_keras import zoo

    if args.name:
        print(json.dumps(zoo.info(args.name), indent=1))
    else:
        for name in zoo.names():
            print(f"{name}\n    {zoo.info(name)['description']}")
    return 0


SUBCOMMANDS = (
    _build_data_parser, _train_parser, _eval_parser, _play_replay_parser, _export_parser,
    _bench_parser, _zoo_parser,
)  # fmt: skip


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="exphil",
        description="Melee policies from Slippi replays, as a Keras 3 model zoo.",
    )
    debug = "show tracebacks and the backends' start-up logs (TensorFlow, XLA, Rust panics)"
    parser.add_argument("--debug", action="store_true", help=debug)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(commands)
    for subcommand in commands.choices.values():  # --debug after the subcommand works too
        subcommand.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help=debug
        )
    return parser


def _preset_flag(parser):
    parser.add_argument(
        "--model", required=True, help="a preset: a shipped name, a folder, hf:// or kaggle://"
    )


def _json_flag(parser):
    parser.add_argument("--json", help="also write the figures to this JSON file")


def _backend_flag(parser, choices=BACKENDS):
    parser.add_argument(
        "--backend", choices=choices, help="Keras backend (default: KERAS_BACKEND or tensorflow)"
    )


def _writable_file(path, flag) -> None:
    """A file the command will write at its end, checked before the work starts."""
    if path is None:
        return
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{flag} {path}: a folder, not a file")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise ValueError(f"{flag} {path}: cannot write in {folder}")


def _write_json(path, result) -> None:
    """The figures as JSON; a failed write (e.g. a full disk) names the file."""
    try:
        Path(path).write_text(json.dumps(result, indent=1) + "\n")
    except OSError as e:
        raise ValueError(f"{path}: {e.strerror}") from None


def _writable_folder(path, flag) -> None:
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {path}: a file, not a folder")
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not os.access(existing, os.W_OK):
        raise ValueError(f"{flag} {path}: cannot write in {existing}")


def _extra(module: str, extra: str):
    """Import an optional dependency, or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        raise ValueError(
            f"this needs {e.name}, from the {extra} extra: pip install 'exphil-keras[{extra}]'"
        ) from None


@contextlib.contextmanager
def _stderr_silenced():
    """fd 2 to /dev/null: TensorFlow's and XLA's C++ start-up lines (cudart, cuInit, absl) are
    written there before any log level applies."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _start_backends_quietly() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's later INFO and WARNING
    os.environ["RUST_BACKTRACE"] = "0"  # peppi's panics are reported as skipped replays
    with _stderr_silenced():
        import keras  # noqa: F401  (starts the chosen backend)
        import tensorflow as tf

        tf.config.list_physical_devices()  # probes CUDA now, inside the silence


def main(argv=None) -> int:
    for stream in (sys.stdout, sys.stderr):  # a file name with any bytes prints, escaped
        stream.reconfigure(errors="backslashreplace")
    args = make_parser().parse_args(argv)
    if getattr(args, "backend", None):
        os.environ["KERAS_BACKEND"] = args.backend  # before anything imports keras
    if args.debug:
        return args.run(args)
    _start_backends_quietly()
    try:
        return args.run(args)
    except (ValueError, FloatingPointError) as e:
        return _user_error(args, e)
    except OSError as e:  # a path the user gave: missing, unwritable, full disk, ...
        return _user_error(args, f"{e.filename}: {e.strerror}" if e.filename else e)
    except MemoryError as e:
        return _user_error(
            args,
            f"out of memory ({e or 'MemoryError'}); build-data: lower --memory-buffer-mb; "
            "train: lower --batch-size",
        )
    except KeyboardInterrupt:
        print(f"exphil {args.command}: interrupted; nothing partial was kept", file=sys.stderr)
        return 130


def _user_error(args, error) -> int:
    message = " ".join(str(error).split())  # one line, whatever the library's text
    print(f"exphil {args.command}: error: {message} (--debug shows more)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())

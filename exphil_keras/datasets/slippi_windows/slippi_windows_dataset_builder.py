"""`slippi_windows`: fixed-length training windows from a folder of Slippi replays."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import time
import typing
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from tqdm.auto import tqdm

from exphil_keras import features

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")

_MANUAL_DOWNLOAD_INSTRUCTIONS = """
Put any folder tree of Slippi replays (`.slp` files) in `manual_dir`, e.g.
`tfds.download.DownloadConfig(manual_dir="~/Slippi")` or `exphil build-data --replays ~/Slippi`.
"""


@dataclasses.dataclass(eq=False)
class SlippiWindowsConfig(tfds.core.BuilderConfig):
    """Window length W (stride W // 2) and the timing of inputs and targets."""

    window: int = 60
    action_delay: int = 1
    frame_delay: int = 0
    include_cpu_egos: bool = False

    @property
    def stride(self) -> int:
        return max(self.window // 2, 1)


@dataclasses.dataclass
class BuildReport:
    """What a build read and skipped; filled while the examples are generated."""

    files_read: int = 0
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)  # path -> reason
    games: dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    frames: dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    ego_frames: dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    windows: dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    # split -> {sha256: {"file": path under the replay folder, "frames": n}}: the games used.
    games_used: dict[str, dict] = dataclasses.field(
        default_factory=lambda: {split: {} for split in SPLITS}
    )
    seconds: float = 0.0  # wall time of the whole build, set by whoever timed it

    def skip(self, path, reason: str) -> None:
        self.skipped[str(path)] = reason
        log.warning("skipped %s: %s", path, reason)

    def add_game(self, split: str, sha: str, name: str, frames: int, ego_frames: int) -> None:
        self.files_read += 1
        self.games[split] += 1
        self.frames[split] += frames
        self.ego_frames[split] += ego_frames
        self.games_used[split][sha] = {"file": name, "frames": frames}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def format(self) -> str:
        frames = sum(self.frames.values())
        rate = frames / self.seconds if self.seconds else 0.0
        lines = [
            f"files read: {self.files_read}, skipped: {len(self.skipped)}",
            *(f"  skipped {path}: {reason}" for path, reason in sorted(self.skipped.items())),
            f"{'split':<11} {'games':>6} {'frames':>10} {'ego frames':>11} {'windows':>8}",
            *(
                f"{s:<11} {self.games[s]:>6} {self.frames[s]:>10} {self.ego_frames[s]:>11}"
                f" {self.windows[s]:>8}"
                for s in SPLITS
            ),
            f"{frames} frames in {self.seconds:.1f} s: {rate:,.0f} frames/s",
        ]
        return "\n".join(lines)


def find_replays(folder) -> list[Path]:
    """Every .slp file under `folder`, sorted; clear errors for a missing or empty folder."""
    folder = Path(folder).expanduser()
    if not folder.exists():
        raise FileNotFoundError(f"replay folder not found: {folder}")
    if not folder.is_dir():
        raise NotADirectoryError(f"not a folder of replays: {folder}")
    replays = sorted(p for p in folder.rglob("*") if p.suffix.lower() == ".slp" and p.is_file())
    if not replays:
        raise FileNotFoundError(f"no .slp files under {folder}")
    return replays


class PackedWindow(tfds.features.FeatureConnector):
    """A dict of per-frame arrays stored as ONE bytes field: frame rows of 4-byte words.

    Decodes to `{name: [W, width] float32 or [W] int32}`. One proto field per window instead of
    one per array is what keeps the build near the raw parse rate; values round-trip exactly.
    """

    def __init__(self, window: int, fields: dict[str, list], doc=None):
        """`fields`: name -> [width or 0 for a per-frame scalar, "float32" or "int32"]."""
        super().__init__(doc=doc)
        self.window = int(window)
        self.fields = {name: (int(width), str(dtype)) for name, (width, dtype) in fields.items()}
        self.width = sum(max(width, 1) for width, _ in self.fields.values())

    def get_tensor_info(self):
        return {
            name: tfds.features.TensorInfo(
                shape=(self.window, width) if width else (self.window,), dtype=np.dtype(dtype)
            )
            for name, (width, dtype) in self.fields.items()
        }

    def get_serialized_info(self):
        return tfds.features.TensorInfo(shape=(), dtype=np.object_)

    def pack(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        """Named arrays [T, ...] -> int32 words [T, width] (float32 bit patterns kept)."""
        columns = []
        for name, (width, dtype) in self.fields.items():
            value = np.asarray(arrays[name], dtype=dtype)
            columns.append(value.view(np.int32).reshape(len(value), max(width, 1)))
        return np.concatenate(columns, axis=1)

    def encode_example(self, example_data):
        words = example_data if isinstance(example_data, np.ndarray) else self.pack(example_data)
        if words.shape != (self.window, self.width) or words.dtype != np.int32:
            raise ValueError(
                f"expected packed words {(self.window, self.width)} int32, got "
                f"{words.shape} {words.dtype}"
            )
        return words.tobytes()

    def _unpack(self, words, bitcast, squeeze):
        out, col = {}, 0
        for name, (width, dtype) in self.fields.items():
            part = words[:, col : col + max(width, 1)]
            col += max(width, 1)
            if dtype == "float32":
                part = bitcast(part)
            out[name] = part if width else squeeze(part)
        return out

    def decode_example(self, tfexample_data):
        import tensorflow as tf

        words = tf.reshape(tf.io.decode_raw(tfexample_data, tf.int32), (self.window, self.width))
        return self._unpack(
            words, lambda x: tf.bitcast(x, tf.float32), lambda x: tf.squeeze(x, axis=1)
        )

    def decode_example_np(self, example_data):
        words = np.frombuffer(example_data, np.int32).reshape(self.window, self.width)
        return self._unpack(words, lambda x: x.view(np.float32), lambda x: x[:, 0])

    def to_json_content(self):
        return {"window": self.window, "fields": {k: list(v) for k, v in self.fields.items()}}


def _window_features(window: int) -> tfds.features.FeaturesDict:
    inputs = {name: [dim, "float32"] for name, dim in features.CONTINUOUS_INPUTS.items()}
    inputs.update({name: [0, "int32"] for name in features.CATEGORICAL_INPUTS})
    targets = {
        head: [classes, "float32"] if head == "buttons" else [0, "int32"]
        for head, classes in features.TARGETS.items()
    }
    return tfds.features.FeaturesDict(
        {
            "inputs": PackedWindow(window, inputs),
            "targets": PackedWindow(window, targets),
            "sha256": tfds.features.Text(),
            "port": np.int32,
            "first_frame": np.int32,
        }
    )


class Builder(tfds.core.GeneratorBasedBuilder):
    """Windows of W frames (stride W // 2) per human player's perspective of each 2-player game.

    Splits are by whole game, from the replay file's sha256: k = int(sha[:8], 16) % 10, k = 0
    validation, k = 1 test, the rest train. Unusable replays are skipped with their reason in
    `builder.report` (and logged); a build with some bad files still completes.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": f"First release; feature_version {features.FEATURE_VERSION}."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = _MANUAL_DOWNLOAD_INSTRUCTIONS
    BUILDER_CONFIGS = [
        SlippiWindowsConfig(
            name=f"w{w}", window=w, description=f"{w}-frame windows, stride {w // 2}"
        )
        for w in (60, 30, 90)
    ]
    DEFAULT_BUILDER_CONFIG_NAME = "w60"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.report = BuildReport()
        self._beam = False  # set per build: are the examples generated by a Beam pipeline?

    def _info(self) -> tfds.core.DatasetInfo:
        config = self.builder_config
        return self.dataset_info_from_configs(
            features=_window_features(config.window),
            supervised_keys=("inputs", "targets"),
            homepage="https://github.com/project-slippi/slippi-wiki/blob/master/SPEC.md",
            metadata=tfds.core.MetadataDict(
                feature_version=features.FEATURE_VERSION,
                window=config.window,
                stride=config.stride,
                action_delay=config.action_delay,
                frame_delay=config.frame_delay,
            ),
        )

    def _download_and_prepare(self, dl_manager, download_config):
        self._beam = bool(download_config.beam_runner or download_config.beam_options)
        super()._download_and_prepare(dl_manager, download_config)
        if self._beam:
            self._beam_report()

    def _beam_report(self):
        """The workers' per-file summaries -> the report (and the side files removed)."""
        folder = epath.Path(self.data_dir)
        summaries = sorted(folder.glob(f"{_BEAM_SUMMARIES}-*"))
        lines = [line for path in summaries for line in path.read_text().splitlines()]
        for path in [*summaries, *folder.glob(f"{_BEAM_FILES}-*")]:
            path.unlink()
        if len(lines) != self._beam_files:
            raise RuntimeError(
                f"the Beam workers reported {len(lines)} of {self._beam_files} replays: is "
                f"{folder} on storage that the workers and this process both see?"
            )
        expected = dict.fromkeys(SPLITS, 0)
        for line in lines:
            game = json.loads(line)
            if "skipped" in game:
                self.report.skip(game["path"], game["skipped"])
            else:
                expected[game["split"]] += game.pop("windows")
                self.report.add_game(**game)
        for split, info in self.info.splits.items():
            if info.num_examples != expected[split]:
                raise RuntimeError(
                    f"the Beam build wrote {info.num_examples} {split} windows where its workers "
                    f"made {expected[split]}: the runner lost or repeated work; build again"
                )
            self.report.windows[split] = info.num_examples
            if not info.num_examples:
                raise ValueError(f"no usable game in the {split} split: {self._skips()}")
        self.info.metadata["report"] = self.report.to_dict()

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        self.report = BuildReport()
        by_split = {split: [] for split in SPLITS}
        first_copy = {}
        root = Path(dl_manager.manual_dir)
        for path in find_replays(root):
            # Screen with the header alone, so that a split is declared only if it has a game.
            try:
                sha = features.file_sha256(path)
                if sha in first_copy:
                    raise features.ReplaySkipped(path, f"duplicate of {first_copy[sha]}")
                first_copy[sha] = path
                features.probe_replay(path)
            except features.ReplaySkipped as skipped:
                self.report.skip(path, skipped.reason)
                continue
            split = features.split_of(sha)
            by_split[split].append(Game(str(path), str(path.relative_to(root)), sha, split))
        if not any(by_split.values()):
            raise ValueError(f"no usable game under {root}: {self._skips()}")
        self._beam_files = sum(len(files) for files in by_split.values())
        generate = self._beam_examples if self._beam else self._generate_examples
        # TFDS refuses an empty split: a small folder may not reach all three.
        return {split: generate(files, split) for split, files in by_split.items() if files}

    def _skips(self) -> str:
        return "; ".join(f"{path}: {reason}" for path, reason in self.report.skipped.items())

    def _generate_examples(self, files, split):
        report = self.report
        yielded = 0
        for game in tqdm(files, desc=f"{split} replays", unit="file", leave=False):
            try:
                replay = _read(game, self.builder_config)
            except features.ReplaySkipped as skipped:
                report.skip(game.path, skipped.reason)
                continue
            report.add_game(**_summary(game, replay))
            for key, example in _replay_windows(replay, game, self.builder_config):
                yielded += 1
                yield key, example
        report.windows[split] = yielded
        self.info.metadata["report"] = report.to_dict()  # saved with the dataset's info
        log.info("%s: %d games, %d windows", split, report.games[split], yielded)
        if not yielded:
            raise ValueError(f"no usable game in the {split} split: {self._skips()}")

    def _beam_examples(self, files, split):
        """The same examples as `_generate_examples`, as a Beam PTransform: one replay per
        element, read on the workers; each file's summary goes to a side file for the report.
        The file list travels as a text file beside the data (a corpus-sized list is too big
        for a pipeline graph)."""
        import apache_beam as beam

        folder = epath.Path(self.data_dir)
        listing = folder / f"{_BEAM_FILES}-{split}.jsonl"
        listing.write_text("".join(json.dumps(game) + "\n" for game in files))
        summaries = os.fspath(folder / f"{_BEAM_SUMMARIES}-{split}")

        @beam.ptransform_fn
        def windows(pipeline):
            games = (
                pipeline
                | "Files" >> beam.io.ReadFromText(os.fspath(listing))
                | "Parse" >> beam.Map(lambda line: Game(*json.loads(line)))
                | "Spread" >> beam.Reshuffle()
                | "Read"
                >> beam.FlatMap(_beam_replay, config=self.builder_config).with_outputs(
                    "summary", main="windows"
                )
            )
            _ = games.summary | "Summaries" >> beam.io.WriteToText(summaries)
            return games.windows

        return windows()


_BEAM_SUMMARIES = "beam_build_summaries"
_BEAM_FILES = "beam_build_files"


class Game(typing.NamedTuple):
    """A replay file assigned to a split."""

    path: str
    name: str  # the path under the replay folder
    sha: str
    split: str


def _read(game: Game, config: SlippiWindowsConfig) -> features.Replay:
    return features.read_replay(
        game.path,
        action_delay=config.action_delay,
        frame_delay=config.frame_delay,
        min_frames=config.window,
        include_cpu_egos=config.include_cpu_egos,
        sha256=game.sha,
    )


def _summary(game: Game, replay: features.Replay) -> dict:
    ego_frames = sum(view.num_frames for view in replay.perspectives)
    return dict(
        split=game.split,
        sha=game.sha,
        name=game.name,
        frames=replay.num_frames,
        ego_frames=ego_frames,
    )


def _beam_replay(game: Game, config: SlippiWindowsConfig):
    """One replay on a Beam worker: its windows, and its summary (or skip) as a side output."""
    import apache_beam as beam

    try:
        replay = _read(game, config)
    except features.ReplaySkipped as skipped:
        yield beam.pvalue.TaggedOutput(
            "summary", json.dumps({"path": game.path, "skipped": skipped.reason})
        )
        return
    windows = sum(
        len(features.window_starts(view.num_frames, config.window, config.stride))
        for view in replay.perspectives
    )
    summary = {**_summary(game, replay), "windows": windows}  # checked against what was written
    yield beam.pvalue.TaggedOutput("summary", json.dumps(summary))
    yield from _replay_windows(replay, game, config)


def _replay_windows(replay: features.Replay, game: Game, config: SlippiWindowsConfig):
    packers = _window_features(config.window)
    for view in replay.perspectives:
        yield from _windows(view, game.sha, packers, config.window, config.stride)


def _windows(view: features.Perspective, sha: str, packers, window: int, stride: int):
    inputs = packers["inputs"].pack(view.inputs)
    targets = packers["targets"].pack(view.targets)
    for start in features.window_starts(view.num_frames, window, stride):
        end = start + window
        first_frame = int(view.frame_ids[start])
        yield (
            f"{sha}_{view.port}_{first_frame}",
            {
                "inputs": inputs[start:end],
                "targets": targets[start:end],
                "sha256": sha,
                "port": view.port,
                "first_frame": first_frame,
            },
        )


def config_for(window: int = 60, action_delay: int = 1, frame_delay: int = 0):
    """The shipped config's name (w30, w60, w90 with default delays), else a custom config."""
    if (action_delay, frame_delay) == (1, 0) and window in (30, 60, 90):
        return f"w{window}"
    return SlippiWindowsConfig(
        name=f"w{window}_a{action_delay}_f{frame_delay}",
        window=window,
        action_delay=action_delay,
        frame_delay=frame_delay,
    )


def build(
    replays,
    data_dir=None,
    config: str | SlippiWindowsConfig = "w60",
    overwrite: bool = False,
    beam_runner: str | None = None,
    beam_args: typing.Sequence[str] = (),
    memory_buffer_mb: int | None = None,
) -> tuple[Builder, BuildReport]:
    """Build (or reuse) the dataset from a folder of replays; returns the builder and its report.

    With `beam_runner` ("DirectRunner", "DataflowRunner", ...) the replays are read by an Apache
    Beam pipeline; `beam_args` are its pipeline options (e.g. `["--direct_num_workers=2"]`).
    The plain build holds one replay and at most `memory_buffer_mb` of written examples in
    memory (TFDS's default: 1000) and spills the rest to disk (docs/SCALING.md has the limits).
    """
    folder = Path(replays).expanduser()
    find_replays(folder)  # clear errors for a missing or empty folder, before TFDS's own
    builder = tfds.builder("slippi_windows", config=config, data_dir=data_dir)
    mode = (
        tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS
        if overwrite
        else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS
    )
    if beam_args and not beam_runner:
        raise ValueError("Beam options without --beam-runner: name the runner to use them")
    beam_options = None
    if beam_runner:
        from apache_beam.options.pipeline_options import PipelineOptions

        beam_options = PipelineOptions([f"--runner={beam_runner}", *beam_args])
    started = time.perf_counter()
    with _writer_memory(memory_buffer_mb):
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(
                manual_dir=str(folder), download_mode=mode, beam_options=beam_options
            )
        )
    builder.report.seconds = time.perf_counter() - started
    return builder, builder.report


@contextlib.contextmanager
def _writer_memory(megabytes: int | None):
    """TFDS's writer shuffles the examples in memory up to `shuffle.MAX_MEM_BUFFER_SIZE` (1 GB)
    before it spills them to bucket files on disk; TFDS has no public knob for it."""
    from tensorflow_datasets.core import shuffle

    saved = shuffle.MAX_MEM_BUFFER_SIZE
    if megabytes is not None:
        shuffle.MAX_MEM_BUFFER_SIZE = int(megabytes) << 20
    try:
        yield
    finally:
        shuffle.MAX_MEM_BUFFER_SIZE = saved

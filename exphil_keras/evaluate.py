"""Evaluation on any replays: the seed-comparable loss and its baselines, on the same frames.

Windows come straight from `features.read_replay` (no dataset build), one replay at a time, with
the preset's window and delays; each window is scored at its last position, like the
seed-comparable `last_loss` of training.
"""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from exphil_keras import baselines, features, zoo
from exphil_keras.replays import find_replays


def replay_windows(paths, window: int, action_delay: int, frame_delay: int, stride=None):
    """Yields (inputs, targets) numpy batches: all windows of one replay at a time."""
    stride = stride or max(window // 2, 1)
    for path in tqdm(paths, desc="replays", unit="file"):
        try:
            replay = features.read_replay(
                path, action_delay=action_delay, frame_delay=frame_delay, min_frames=window
            )
        except features.ReplaySkipped as skipped:
            tqdm.write(f"skipped {skipped}")
            continue
        for view in replay.perspectives:
            starts = np.asarray(features.window_starts(view.num_frames, window, stride))
            index = starts[:, None] + np.arange(window)
            yield (
                {name: value[index] for name, value in view.inputs.items()},
                {name: value[index] for name, value in view.targets.items()},
            )


def _split_or_none(path):
    try:
        return features.split_of(features.file_sha256(path))
    except features.ReplaySkipped:
        return None


def evaluate(
    model,
    replays,
    metadata: dict,
    batch_size: int = 256,
    split: str = "all",
    markov: baselines.Markov1 | None = None,
) -> dict:
    """The JSON of `exphil eval`: loss, frames, per-head NLL/accuracy, and both baselines.

    `split` keeps only the games of one dataset split (by sha256, as the dataset does); the
    Markov-1 baseline is scored when its tables, `markov`, are given.
    """
    paths = find_replays(replays)
    if split != "all":
        found = len(paths)
        paths = [p for p in paths if _split_or_none(p) == split]
        if not paths:
            raise ValueError(
                f"none of the {found} replays in {replays} is a {split} game (games are split "
                "by their file's sha256: 80% train, 10% validation, 10% test); try --split all"
            )
    window = metadata["window"]
    last_frames = baselines.LastFrames()
    for inputs, targets in replay_windows(
        paths, window, metadata["action_delay"], metadata["frame_delay"]
    ):
        scored = model.with_targets(inputs, targets)  # autoregressive heads: teacher-forced
        last_frames.add(inputs, targets, model.predict(scored, batch_size=batch_size, verbose=0))
    if not len(last_frames):
        raise ValueError(f"no usable windows of {window} frames in {replays}")
    return last_frames.result(markov)


def evaluate_preset(
    name_or_path, replays, batch_size: int = 256, split: str = "all", frame_delay=None
) -> dict:
    """`evaluate` at the preset's frame delay (a range's lowest), or at `frame_delay` (any: how a
    policy degrades off its training delay is worth seeing)."""
    model = zoo.load(name_or_path, compile=False)
    metadata, markov = zoo.info(name_or_path), zoo.markov1(name_or_path)
    if frame_delay is None:
        frame_delay = features.delay_range(metadata["frame_delay"])[0]
    metadata = {**metadata, "frame_delay": features.delay_range(frame_delay)[0]}
    result = evaluate(model, replays, metadata, batch_size, split, markov)
    return {"frame_delay": metadata["frame_delay"], **result}


def format_result(result: dict) -> str:
    repeat = result["baselines"]["repeat_previous"]
    lines = [
        f"seed-comparable loss (last position) {result['loss']:.4f}"
        + (f" at frame delay {result['frame_delay']}" if "frame_delay" in result else "")
        + f", {result['frames']} frames",
        f"{'head':<9} {'nll':>7} {'acc':>7} {'repeat-previous acc':>20}",
        *(
            f"{h:<9} {v['nll']:>7.4f} {v['acc']:>7.4f} {repeat[h]['acc']:>20.4f}"
            for h, v in result["heads"].items()
        ),
    ]
    if "markov1" in result["baselines"]:
        lines.append(f"Markov-1 baseline loss: {result['baselines']['markov1']['loss']:.4f}")
    return "\n".join(lines)

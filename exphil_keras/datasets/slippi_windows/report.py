"""The build's report: files read and skipped (with the reason), games, frames and windows (of
the build's view) per split."""

from __future__ import annotations

import dataclasses
import logging

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")


@dataclasses.dataclass
class BuildReport:
    """What a build read and skipped; filled while the examples are generated."""

    files_read: int = 0
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)  # path -> reason
    games: dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    frames: dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    windows: dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    # split -> {sha256: {"file": path under the replay folder, "frames": n, "humans": 0-2}}.
    games_used: dict[str, dict] = dataclasses.field(
        default_factory=lambda: {split: {} for split in SPLITS}
    )
    seconds: float = 0.0  # wall time of the whole build, set by whoever timed it

    def skip(self, path, reason: str) -> None:
        self.skipped[str(path)] = reason
        log.warning("skipped %s: %s", path, reason)

    def add_game(
        self, split: str, sha: str, name: str, frames: int, humans: int, windows: int
    ) -> None:
        self.files_read += 1
        self.games[split] += 1
        self.frames[split] += frames
        self.windows[split] += windows
        self.games_used[split][sha] = {"file": name, "frames": frames, "humans": humans}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def format(self) -> str:
        frames = sum(self.frames.values())
        rate = frames / self.seconds if self.seconds else 0.0
        lines = [
            f"files read: {self.files_read}, skipped: {len(self.skipped)}",
            *(f"  skipped {path}: {reason}" for path, reason in sorted(self.skipped.items())),
            f"{'split':<11} {'games':>6} {'frames':>10} {'windows':>8}",
            *(
                f"{s:<11} {self.games[s]:>6} {self.frames[s]:>10} {self.windows[s]:>8}"
                for s in SPLITS
            ),
            f"{frames} frames in {self.seconds:.1f} s: {rate:,.0f} frames/s",
        ]
        return "\n".join(lines)

"""Finding replays: every `.slp` file under a folder, with clear errors for a missing or empty
one."""

from __future__ import annotations

from pathlib import Path


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

"""Where the tests find the real replays in ../shared, and their MANIFEST."""

import csv
import os
from pathlib import Path

SHARED = Path(
    os.environ.get("EXPHIL_SHARED", Path(__file__).resolve().parents[1] / ".." / "shared")
)
REPLAYS = SHARED / "replays"
BAD_REPLAYS = SHARED / "replays_bad"


def read_manifest(folder: Path) -> dict[str, dict]:
    with open(folder / "MANIFEST.tsv", newline="") as f:
        return {row["file"]: row for row in csv.DictReader(f, delimiter="\t")}

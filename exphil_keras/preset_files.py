"""A preset's files, found and checked before anything in them is parsed (no Keras here).

A preset is a keras-hub preset folder: `config.json` and `model.weights.h5` (what keras-hub's
loader reads), a short `metadata.json`, and optionally `training.json` (the training record) and
`markov1.json` (the Markov-1 baseline's tables). `metadata.json` is the root of trust: its
`sha256` block must name both model files and no file this module does not know, so the set of
files checked is fixed here, never taken from the metadata. A file is read only if it is a
regular file inside the folder (a link may point elsewhere in the folder, never out of it), and
only once its sha256 matched. Every refusal is a ValueError that names the file.

Handles: a shipped preset's name, a folder, or a keras-hub handle (`hf://org/model`,
`kaggle://org/model/keras/variant[/version]`), whose files keras-hub downloads into its cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from pathlib import Path

SHIPPED = Path(__file__).resolve().parent / "presets"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.weights.h5"
METADATA_FILE = "metadata.json"
TRAINING_FILE = "training.json"
MARKOV1_FILE = "markov1.json"
MODEL_FILES = (CONFIG_FILE, WEIGHTS_FILE)
OPTIONAL_FILES = (TRAINING_FILE, MARKOV1_FILE)
# What `zoo.save` writes and every reader relies on; the rest of metadata.json is free-form.
METADATA_KEYS = (
    "name", "description", "backbone", "parameters", "feature_version", "window",
    "action_delay", "frame_delay", "heads", "learning_rate", "validation", "sha256", "versions",
)  # fmt: skip
_SHA256 = re.compile(r"[0-9a-f]{64}")


def names() -> list[str]:
    """Names of the presets shipped in the package."""
    if not SHIPPED.is_dir():
        return []
    return sorted(p.name for p in SHIPPED.iterdir() if (p / METADATA_FILE).is_file())


def _file_kind(mode: int) -> str:
    kinds = {stat.S_ISFIFO: "a FIFO", stat.S_ISCHR: "a character device", stat.S_ISDIR: "a folder",
             stat.S_ISBLK: "a block device", stat.S_ISSOCK: "a socket"}  # fmt: skip
    return next((kind for test, kind in kinds.items() if test(mode)), "not a regular file")


class PresetFiles:
    """One preset: its metadata (checked), and its other files, each read once its hash matched.

    `handle`: a shipped name, a folder, or a keras-hub handle (anything with "://").
    """

    def __init__(self, handle):
        handle = str(handle)
        if "://" in handle:
            self.handle, self.folder = handle, None
        elif Path(handle).expanduser().is_dir():
            self.folder = Path(handle).expanduser().resolve()
            self.handle = str(self.folder)
        elif handle in names():
            self.folder = SHIPPED / handle
            self.handle = str(self.folder)
        else:
            known = ", ".join(names()) or "none yet"
            raise ValueError(
                f"unknown preset {handle!r}: not a preset folder, nor a hf:// or kaggle:// "
                f"handle, nor one of: {known}"
            )
        self.metadata = self._read_metadata()
        self.hashes = self.metadata["sha256"]

    def path(self, name: str) -> Path:
        """The local path of `name`, a regular file whose sha256 matches the metadata's."""
        path = self._local(self._covered(name))
        with self._open(path) as f:
            self._check(name, path, hashlib.file_digest(f, "sha256").hexdigest())
        return path

    def json(self, name: str):
        """The parsed JSON of `name`: its bytes, read once, are hashed and then parsed."""
        path = self._local(self._covered(name))
        with self._open(path) as f:
            data = f.read()
        self._check(name, path, hashlib.sha256(data).hexdigest())
        return _parse_json(path, data)

    def _covered(self, name: str) -> str:
        if name not in self.hashes:
            raise ValueError(f"{self.where(name)}: not covered by {METADATA_FILE}'s sha256")
        return name

    def _check(self, name: str, path: Path, digest: str) -> None:
        if digest != self.hashes[name]:
            raise ValueError(
                f"{path}: sha256 {digest} does not match {METADATA_FILE} ({self.hashes[name]}); "
                "the file was changed or damaged, refusing to load it"
            )

    def where(self, name: str) -> str:
        return str(self.folder / name) if self.folder else f"{self.handle}/{name}"

    def _local(self, name: str) -> Path:
        """`name`'s path, checked with lstat and resolve, without opening it."""
        if self.folder is None:
            path = self._download(name)
        else:
            path = self.folder / name
            try:
                os.lstat(path)
            except FileNotFoundError:
                raise ValueError(f"{path}: missing from the preset folder") from None
            target = path.resolve()
            if not target.is_relative_to(self.folder.resolve()):
                raise ValueError(
                    f"{path}: a link to {target}, outside the preset folder; refusing to open it"
                )
        try:
            mode = os.stat(path).st_mode
        except OSError as e:  # e.g. a link to a file that is gone
            raise ValueError(f"{path}: cannot be read ({e.strerror})") from None
        if not stat.S_ISREG(mode):
            raise ValueError(f"{path}: {_file_kind(mode)}, not a regular file; refusing to open it")
        return path

    def _download(self, name: str) -> Path:
        # keras-hub (and so Keras) only for remote handles: a local preset is checked without it.
        from keras_hub.src.utils.preset_utils import get_file

        try:
            return Path(get_file(self.handle, name))
        except (OSError, ValueError) as e:  # missing, offline, malformed handle: say which file
            raise ValueError(f"{self.where(name)}: cannot fetch it ({one_line(e)})") from None

    @staticmethod
    def _open(path: Path):
        """Opened without blocking (a FIFO swapped in after the check) and re-checked by fstat."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        except OSError as e:  # e.g. no permission to read it
            raise ValueError(f"{path}: cannot be read ({e.strerror})") from None
        f = os.fdopen(fd, "rb")
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            f.close()
            raise ValueError(f"{path}: not a regular file; refusing to read it")
        return f

    def _read_metadata(self) -> dict:
        path = self._local(METADATA_FILE)
        with self._open(path) as f:
            metadata = _parse_json(path, f.read())
        if not isinstance(metadata, dict):
            raise ValueError(f"{path}: not a JSON object")
        missing = [key for key in METADATA_KEYS if key not in metadata]
        if missing:
            raise ValueError(f"{path}: missing key(s) {', '.join(missing)}")
        hashes = metadata["sha256"]
        known = (*MODEL_FILES, *OPTIONAL_FILES)
        if not isinstance(hashes, dict):
            raise ValueError(f"{path}: sha256 must map file names to hashes")
        unknown = sorted(set(hashes) - set(known))
        if unknown:
            raise ValueError(
                f"{path}: sha256 names {unknown}, not preset files ({', '.join(known)})"
            )
        uncovered = [name for name in MODEL_FILES if name not in hashes]
        if self.folder:  # a file that is there must be covered too
            uncovered += [
                n for n in OPTIONAL_FILES if n not in hashes and os.path.lexists(self.folder / n)
            ]
        if uncovered:
            raise ValueError(
                f"{path}: sha256 does not cover {', '.join(uncovered)}; refusing unchecked files"
            )
        malformed = [name for name, value in hashes.items() if not _SHA256.fullmatch(str(value))]
        if malformed:
            raise ValueError(f"{path}: sha256 of {', '.join(malformed)} is not 64 hex digits")
        return metadata


def one_line(error: Exception) -> str:
    """An exception's text on one line: the CLI prints a ValueError as one line."""
    return " ".join(str(error).split())


def _parse_json(path: Path, data: bytes):
    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None

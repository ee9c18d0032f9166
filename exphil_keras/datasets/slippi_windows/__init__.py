"""The `slippi_windows` TFDS dataset; importing this module registers it with TFDS."""

from exphil_keras.datasets.slippi_windows.build import build, check_source, config_for
from exphil_keras.datasets.slippi_windows.report import BuildReport
from exphil_keras.datasets.slippi_windows.slippi_windows_dataset_builder import (
    Builder,
    SlippiWindowsConfig,
)
from exphil_keras.datasets.slippi_windows.windows import View
from exphil_keras.datasets.slippi_windows.windows import read as read_windows

__all__ = [
    "Builder",
    "BuildReport",
    "SlippiWindowsConfig",
    "View",
    "build",
    "check_source",
    "config_for",
    "read_windows",
]

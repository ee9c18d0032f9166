"""The `slippi_windows` TFDS dataset; importing this module registers it with TFDS."""

from exphil_keras.datasets.slippi_windows.build import build, config_for
from exphil_keras.datasets.slippi_windows.report import BuildReport
from exphil_keras.datasets.slippi_windows.slippi_windows_dataset_builder import (
    Builder,
    SlippiWindowsConfig,
)

__all__ = ["Builder", "BuildReport", "SlippiWindowsConfig", "build", "config_for"]

"""The `slippi_windows` TFDS dataset; importing this module registers it with TFDS."""

from exphil_keras.datasets.slippi_windows.slippi_windows_dataset_builder import (
    Builder,
    BuildReport,
    SlippiWindowsConfig,
    build,
    config_for,
    find_replays,
)

__all__ = ["Builder", "BuildReport", "SlippiWindowsConfig", "build", "config_for", "find_replays"]

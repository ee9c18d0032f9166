"""TFDS's own builder test, over the three small real replays in dummy_data/ (one game each)."""

import tensorflow_datasets as tfds

from exphil_keras.datasets.slippi_windows import slippi_windows_dataset_builder

WINDOWS = {"train": 8, "validation": 22, "test": 11}  # w60 windows (stride 30) of each game


class SlippiWindowsTest(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = slippi_windows_dataset_builder.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = ["w60"]
    SPLITS = {"train": 1, "validation": 1, "test": 1}  # stored examples: one per game
    SKIP_CHECKSUMS = True

    def _assertAsDataset(self, builder):
        """`as_dataset` reads windows (not the stored games TFDS's own check expects): their
        count and structure, and the stored games, one per split."""
        for split, count in WINDOWS.items():
            windows = list(tfds.as_numpy(builder.as_dataset(split=split)))
            self.assertLen(windows, count)
            self.assertEqual(windows[0]["inputs"]["ego_state"].shape, (60, 32))
            games = list(tfds.as_numpy(builder.games(split)))
            self.assertEqual([g["sha256"] for g in games], [windows[0]["sha256"]])


if __name__ == "__main__":
    tfds.testing.test_main()

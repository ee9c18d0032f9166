"""TFDS's own builder test, over the three small real replays in dummy_data/."""

import tensorflow_datasets as tfds

from exphil_keras.datasets.slippi_windows import slippi_windows_dataset_builder


class SlippiWindowsTest(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = slippi_windows_dataset_builder.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = ["w60"]
    SPLITS = {"train": 8, "validation": 22, "test": 11}  # windows of 60, stride 30
    SKIP_CHECKSUMS = True


if __name__ == "__main__":
    tfds.testing.test_main()

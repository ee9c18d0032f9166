"""Every shipped preset loads (sha256 checked, safe mode) and fine-tunes, on every backend."""

from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

import exphil_keras
from exphil_keras import features, zoo

DUMMY = Path(exphil_keras.__file__).parent / "datasets" / "slippi_windows" / "dummy_data"


@pytest.fixture(scope="module")
def validation_windows(tmp_path_factory):
    return tfds.load(
        "slippi_windows",
        split="validation",
        as_supervised=True,
        data_dir=tmp_path_factory.mktemp("tfds"),
        download_and_prepare_kwargs={
            "download_config": tfds.download.DownloadConfig(manual_dir=str(DUMMY))
        },
    ).batch(8)


@pytest.mark.parametrize("name", zoo.names())
def test_shipped_preset_loads_compiled_and_fine_tunes(name, validation_windows):
    info = zoo.info(name)
    assert info["feature_version"] == features.FEATURE_VERSION
    assert sum(f.stat().st_size for f in (zoo.SHIPPED / name).iterdir()) < 50 * 2**20
    model = zoo.load(name)
    assert model.optimizer is not None  # compiled
    before = model.evaluate(validation_windows, return_dict=True, verbose=0)["loss"]
    model.fit(validation_windows, epochs=3, verbose=0, shuffle=False)
    after = model.evaluate(validation_windows, return_dict=True, verbose=0)["loss"]
    assert np.isfinite(after) and after < before

"""exphil-keras: ExPhil's Melee policy backbones as a Keras 3 model zoo.

Importing the package registers the `slippi_windows` dataset with TFDS where TFDS is installed;
without it (a machine that only trains on given arrays or plays), the rest imports all the same.
"""

import importlib.util

from exphil_keras import features

if importlib.util.find_spec("tensorflow_datasets"):
    from exphil_keras.datasets import slippi_windows  # noqa: F401  (registers the TFDS builder)

__version__ = "0.1.0"
__all__ = ["features", "__version__"]

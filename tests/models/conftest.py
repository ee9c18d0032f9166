"""Small sizes that keep the model tests fast on any backend (KERAS_BACKEND picks it)."""

import keras
import pytest

from exphil_keras import architectures

# One name per architecture (aliases such as "sliding_window" build the same layer).
ARCHITECTURES = list(architectures.ARCHITECTURES)

# Attention span 8 < the 20-60 frames the tests feed, so the sliding window really slides.
SMALL = {"hidden_size": 16, "num_layers": 2, "state_size": 4, "num_heads": 2, "window": 8}


@pytest.fixture(params=ARCHITECTURES)
def architecture(request):
    return request.param


@pytest.fixture
def architectures():
    return list(ARCHITECTURES)


@pytest.fixture
def small():
    return dict(SMALL)


@pytest.fixture(autouse=True)
def seeded():
    keras.utils.set_random_seed(0)

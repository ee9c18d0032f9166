import pytest
from shared_data import BAD_REPLAYS, REPLAYS, read_manifest


@pytest.fixture(scope="session")
def manifest():
    return read_manifest(REPLAYS)


@pytest.fixture(scope="session")
def bad_manifest():
    return read_manifest(BAD_REPLAYS)

import pytest
from shared_data import BAD_REPLAYS, REPLAYS, read_manifest

# Lines that tests record with record_property("backend_summary", line): printed at the end of
# the session, passed or failed. Under pytest-xdist the controller receives every report (with
# its user_properties), so they print there too.
_SUMMARIES = []


@pytest.fixture(scope="session")
def manifest():
    return read_manifest(REPLAYS)


@pytest.fixture(scope="session")
def bad_manifest():
    return read_manifest(BAD_REPLAYS)


def pytest_runtest_logreport(report):
    if report.when == "call":
        _SUMMARIES.extend(v for k, v in report.user_properties if k == "backend_summary")


def pytest_terminal_summary(terminalreporter):
    if _SUMMARIES:
        terminalreporter.section("tests/models on the other backends")
        for line in _SUMMARIES:
            terminalreporter.write_line(line)

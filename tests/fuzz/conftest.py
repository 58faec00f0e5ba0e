"""The fuzz targets' counts go to FLARE_FUZZ_REPORT at the end of the session (fuzz_support.py)."""

from fuzz_support import save_tallies


def pytest_sessionfinish(session, exitstatus):
    save_tallies()

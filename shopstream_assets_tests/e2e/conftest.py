"""Fixtures for the end-to-end fault and hostile-input tests.

The in-process Spark session is the streaming tests' one (imported, so a whole-suite run
still starts a single JVM per fixture definition).
"""

from shopstream_assets_tests.streaming.conftest import spark  # noqa: F401 -- a fixture, re-exported

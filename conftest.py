"""The top-level conftest: the project's `bus` fixture and the test kit (docs/testing.md), for
tests/ and for the example application's tests (examples/documents/tests)."""

pytest_plugins = ["tests.support.buses", "streaming.testing"]

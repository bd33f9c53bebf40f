"""`streaming.clients` is a client library: importable, and usable, in a process without Django."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.support.server import ROOT

# Run in a fresh interpreter: any import of a server-side package fails loudly.
BLOCKED_IMPORTS = textwrap.dedent(
    """
    import sys

    SERVER_SIDE = ("django", "channels", "daphne", "rest_framework", "django_eventstream", "drf_spectacular",
                   "realtime_project", "notifications")
    SERVER_MODULES = ("streaming.auth", "streaming.protocol", "streaming.consumers", "streaming.sse")


    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in SERVER_SIDE or name in SERVER_MODULES:
                raise ImportError(f"server-side import of {name!r}")
            return None


    sys.meta_path.insert(0, Blocker())
    try:
        import django  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("the blocker does not work")
    """
)


def run_without_django(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", BLOCKED_IMPORTS + textwrap.dedent(code)],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_clients_import_and_build_clients_without_django():
    result = run_without_django(
        """
        import streaming.clients
        import streaming.clients.__main__
        from streaming import create_sse_client, create_ws_client
        from streaming.clients import SSEClient, WebSocketClient

        assert isinstance(create_ws_client(host="localhost", port=8000), WebSocketClient)
        assert isinstance(create_sse_client(host="localhost", port=8000), SSEClient)
        leaked = sorted(name for name in sys.modules if name.split(".")[0] in SERVER_SIDE)
        assert not leaked, leaked
        print("ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_the_import_check_catches_an_indirect_django_import():
    result = run_without_django("import streaming.history")  # a server module that imports Django
    assert result.returncode != 0
    assert "server-side import of 'django" in result.stderr

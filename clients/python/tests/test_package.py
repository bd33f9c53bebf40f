"""`realtime_client` is a client library: importable, and usable, in a process without Django."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1]

# Run in a fresh interpreter where Django cannot be imported, nor any server-side package.
WITHOUT_SERVER = textwrap.dedent(
    """
    import sys

    sys.modules["django"] = None  # `import django` raises ImportError from here on
    SERVER_SIDE = ("django", "channels", "daphne", "rest_framework", "django_eventstream", "drf_spectacular",
                   "realtime_project", "notifications", "streaming")


    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in SERVER_SIDE:
                raise ImportError(f"server-side import of {name!r}")
            return None


    sys.meta_path.insert(0, Blocker())
    """
)


def run_without_server(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_SERVER + textwrap.dedent(code)],
        cwd=PACKAGE_ROOT,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(PACKAGE_ROOT)},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_the_package_imports_and_builds_clients_with_django_absent():
    result = run_without_server(
        """
        import realtime_client
        import realtime_client.__main__
        from realtime_client import SSEClient, WebSocketClient, create_sse_client, create_ws_client

        assert isinstance(create_ws_client(host="localhost", port=8000), WebSocketClient)
        assert isinstance(create_sse_client(host="localhost", port=8000), SSEClient)
        leaked = sorted(name for name in sys.modules if name.split(".")[0] in SERVER_SIDE and sys.modules[name])
        assert not leaked, leaked
        print("ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_the_check_would_catch_a_django_import():
    result = run_without_server("import django")
    assert result.returncode != 0
    assert "import of django halted" in result.stderr


def test_the_distribution_declares_its_dependencies():
    import tomllib

    project = tomllib.loads((PACKAGE_ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == "realtime-client"
    assert {requirement.split(">")[0].split("=")[0] for requirement in project["dependencies"]} == {
        "websockets",
        "httpx",
    }

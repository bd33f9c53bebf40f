"""Debian's nginx running `deploy/nginx.conf`, rendered for the test's own ports."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import ClassVar

from tests.support.server import ROOT, free_port
from tests.support.services import missing, reachable

SITE = ROOT / "deploy" / "nginx.conf"


def render_site(backend_ports: list[int], listen_port: int) -> str:
    """deploy/nginx.conf with its upstream servers and listen address replaced."""
    site = SITE.read_text()
    servers = "\n".join(f"    server 127.0.0.1:{port} max_fails=1 fail_timeout=5s;" for port in backend_ports)
    site, replaced = re.subn(r"(upstream realtime_app \{\n)(?:.*\n)*?(\})", rf"\g<1>{servers}\n\g<2>", site)
    assert replaced == 1, "deploy/nginx.conf has no upstream realtime_app block"
    site, replaced = re.subn(r"listen 80;", f"listen 127.0.0.1:{listen_port};", site)
    assert replaced == 1, "deploy/nginx.conf has no 'listen 80;'"
    return site.replace("/var/log/nginx/access.log", "{directory}/access.log")


class Nginx:
    started: ClassVar[list[Nginx]] = []  # every nginx of this test run (their logs are checked)

    def __init__(self, backend_ports: list[int]) -> None:
        binary = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
        if binary is None:
            missing("nginx is not installed")
        self.binary = binary
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="nginx-test-"))
        site = render_site(backend_ports, self.port).replace("{directory}", str(self.directory))
        (self.directory / "site.conf").write_text(site)
        (self.directory / "nginx.conf").write_text(
            f"""daemon off;
worker_processes 1;
pid {self.directory}/nginx.pid;
error_log {self.directory}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    client_body_temp_path {self.directory}/body;
    proxy_temp_path {self.directory}/proxy;
    fastcgi_temp_path {self.directory}/fastcgi;
    uwsgi_temp_path {self.directory}/uwsgi;
    scgi_temp_path {self.directory}/scgi;
    include {self.directory}/site.conf;
}}
"""
        )
        self.process: subprocess.Popen | None = None
        Nginx.started.append(self)

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> Nginx:
        config = str(self.directory / "nginx.conf")
        subprocess.run([self.binary, "-t", "-c", config, "-p", str(self.directory)], check=True, capture_output=True)
        self.process = subprocess.Popen([self.binary, "-c", config, "-p", str(self.directory)], stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while not reachable(self.http):
            assert time.monotonic() < deadline, "nginx did not start"
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None

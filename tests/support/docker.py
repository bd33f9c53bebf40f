"""Docker for the image tests (tests/image/): the daemon, the base image, the image, containers.

* The daemon is Debian's (`docker.io`). When none answers, one is started the way it runs on
  machines without a bridge or iptables of their own — `--storage-driver=vfs --iptables=false
  --bridge=none` — and stopped again at the end. Without a bridge every container and every build
  step uses the host's network (`--network host`).
* The base image is the Dockerfile's default, `python:3.13-slim`, when it is present or can be
  pulled. Where no image registry is reachable (this project's development machines and CI), a
  stand-in is made instead: Debian's own `python3` (with `python` and `pip` on the PATH, and the
  `venv` module), installed by `debootstrap` from Debian's package mirror and turned into an image
  with `docker import`. It is the same kind of base — a Debian with a Python 3.11+ — so the
  Dockerfile builds unchanged on it with `--build-arg BASE_IMAGE=…`; only the Python version
  differs (Debian's, e.g. 3.11 on bookworm). Its root file system is kept as a tarball in
  `.image-cache/` (gitignored) for the next run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from tests.support.server import ROOT
from tests.support.services import missing

DOCKER = os.environ.get("DOCKER") or ("/usr/bin/docker" if Path("/usr/bin/docker").exists() else "docker")
REAL_BASE = "python:3.13-slim"
CACHE = ROOT / ".image-cache"
IMAGE = "realtime-project:test"
LABEL = "realtime-project.test=image"  # on every container these tests start
DEBIAN_MIRROR = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")
# The stand-in base: Debian's Python with `python` and `pip` commands, the venv module, CA certificates.
STAND_IN_PACKAGES = ("python3", "python3-venv", "python3-pip", "python-is-python3", "ca-certificates")
# The root file system of the stand-in loses what a slim image leaves out too.
STAND_IN_TRIM = (
    "var/cache/apt/archives",
    "var/lib/apt/lists",
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
)
# TLS from the machine to the package indexes may pass a proxy whose CA only the host's store holds
# (as on this project's machines): the stand-in takes the host's CA bundle, and pip in the image
# build reads it, so the build trusts what the host trusts.
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def docker(*args: str, timeout: float = 60, check: bool = True, **options) -> subprocess.CompletedProcess:
    """Run the docker CLI; its output is captured as text."""
    result = subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=timeout, **options)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} exited with {result.returncode}:\n{result.stderr}")
    return result


def daemon_answers() -> bool:
    try:
        return docker("info", "--format", "{{.ServerVersion}}", check=False, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


class Daemon:
    """The Docker daemon these tests use: a running one, or Debian's dockerd started here."""

    def __init__(self) -> None:
        self.process: subprocess.Popen | None = None
        self.log_path = Path(tempfile.mkstemp(prefix="dockerd-", suffix=".log")[1])

    def start(self) -> Daemon:
        if shutil.which(DOCKER) is None:
            missing("the docker CLI is not installed (Debian: apt-get install docker.io)")
        if daemon_answers():
            return self
        dockerd = shutil.which("dockerd") or shutil.which("/usr/sbin/dockerd")
        if dockerd is None:
            missing("no Docker daemon answers and dockerd is not installed (Debian: apt-get install docker.io)")
        if os.geteuid() != 0:
            missing("no Docker daemon answers, and starting dockerd needs root")
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [dockerd, "--storage-driver=vfs", "--iptables=false", "--bridge=none"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while not daemon_answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dockerd did not start:\n{self.log_path.read_text(errors='replace')[-4000:]}")
            time.sleep(0.5)
        return self

    def stop(self) -> None:
        """Stop the daemon if it was started here (a daemon found running is left running)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def image_exists(name: str) -> bool:
    return docker("image", "inspect", name, check=False).returncode == 0


def image_size(name: str) -> int:
    return int(docker("image", "inspect", "--format", "{{.Size}}", name).stdout)


def base_image() -> tuple[str, str]:
    """The base image to build on and why: the real one if present or pullable, else the stand-in."""
    if image_exists(REAL_BASE):
        return REAL_BASE, "present"
    try:
        pulled = docker("pull", "--quiet", REAL_BASE, check=False, timeout=300)
    except subprocess.TimeoutExpired:
        reason = "pulling it timed out"
    else:
        if pulled.returncode == 0:
            return REAL_BASE, "pulled"
        reason = (pulled.stderr.strip().splitlines() or ["pull failed"])[-1]
    return stand_in_base(), f"{REAL_BASE} cannot be pulled ({reason}): Debian's python3 stands in"


def _codename() -> str:
    for line in Path("/etc/os-release").read_text().splitlines():
        if line.startswith("VERSION_CODENAME="):
            return line.split("=", 1)[1].strip().strip('"')
    return "bookworm"


STAND_IN_CONFIG = (
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    f"ENV PIP_CERT={HOST_CA_BUNDLE}",
    'CMD ["python3"]',
)


def stand_in_base() -> str:
    """Debian's python3 as a base image, made with debootstrap (cached as a tarball).

    Its name carries a digest of how it is made (release, packages, trimming, configuration, the
    host's CA bundle): a change to any of them makes a new one rather than reusing a stale one.
    """
    codename = _codename()
    recipe = hashlib.sha256(
        repr((codename, STAND_IN_PACKAGES, STAND_IN_TRIM, STAND_IN_CONFIG)).encode()
        + (HOST_CA_BUNDLE.read_bytes() if HOST_CA_BUNDLE.exists() else b"")
    ).hexdigest()[:12]
    tag = f"realtime-project/stand-in-base:{codename}-{recipe}"
    if image_exists(tag):
        return tag
    tarball = CACHE / f"stand-in-base-{codename}-{recipe}.tar"
    if not tarball.exists():
        for stale in CACHE.glob("stand-in-base-*.tar"):
            stale.unlink()
        _debootstrap(codename, tarball)
    changes = [option for line in STAND_IN_CONFIG for option in ("--change", line)]
    docker("import", *changes, str(tarball), tag, timeout=300)
    return tag


def _debootstrap(codename: str, tarball: Path) -> None:
    debootstrap = shutil.which("debootstrap") or shutil.which("/usr/sbin/debootstrap")
    if debootstrap is None:
        missing(f"{REAL_BASE} cannot be pulled and debootstrap is not installed (Debian: apt-get install debootstrap)")
    if os.geteuid() != 0:
        missing(f"{REAL_BASE} cannot be pulled and debootstrap needs root to make the stand-in base")
    root = Path(tempfile.mkdtemp(prefix="stand-in-base-"))
    root.chmod(0o755)  # the image's `/`: mkdtemp's 0700 would lock every other user out
    try:
        result = subprocess.run(
            [debootstrap, "--variant=minbase", f"--include={','.join(STAND_IN_PACKAGES)}", codename, str(root),
             DEBIAN_MIRROR],
            capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"debootstrap failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        for path in STAND_IN_TRIM:
            for entry in (root / path).glob("*"):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        if HOST_CA_BUNDLE.exists():
            shutil.copyfile(HOST_CA_BUNDLE, root / HOST_CA_BUNDLE.relative_to("/"))
        CACHE.mkdir(exist_ok=True)
        partial = tarball.with_suffix(".partial")
        subprocess.run(["tar", "--numeric-owner", "-C", str(root), "-cf", str(partial), "."], check=True, timeout=300)
        partial.rename(tarball)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def build_image(base: str, tag: str = IMAGE, context: Path = ROOT) -> str:
    """`docker build` of the Dockerfile on `base` (BuildKit, the host's network); returns the log."""
    previous = docker("image", "inspect", "--format", "{{.Id}}", tag, check=False).stdout.strip()
    result = subprocess.run(
        [DOCKER, "build", "--progress=plain", "--network", "host", "--build-arg", f"BASE_IMAGE={base}",
         "--tag", tag, str(context)],
        capture_output=True, text=True, timeout=900, env={**os.environ, "DOCKER_BUILDKIT": "1"},
    )  # fmt: skip
    log = result.stdout + result.stderr
    if result.returncode != 0:
        raise AssertionError(f"docker build failed:\n{log[-6000:]}")
    current = docker("image", "inspect", "--format", "{{.Id}}", tag).stdout.strip()
    if previous and previous != current:  # the last build's image, untagged now: vfs stores it whole
        docker("image", "rm", previous, check=False)
    # Every cached step is a full copy of its file system under vfs: keep the cache bounded.
    docker("builder", "prune", "--force", "--keep-storage", "4GB", check=False, timeout=300)
    return log


class Container:
    """One container of the image on the host's network, removed by `remove()`."""

    def __init__(self, image: str = IMAGE, env: dict[str, str] | None = None, read_only: bool = False) -> None:
        self.image, self.env, self.read_only = image, env or {}, read_only
        self.name = f"realtime-image-test-{uuid.uuid4().hex[:8]}"

    def start(self) -> Container:
        options = ["--read-only"] if self.read_only else []
        for key, value in self.env.items():
            options += ["--env", f"{key}={value}"]
        docker("run", "--detach", "--name", self.name, "--label", LABEL, "--network", "host", *options, self.image)
        return self

    def state(self) -> dict:
        return json.loads(docker("inspect", "--format", "{{json .State}}", self.name).stdout)

    def wait_healthy(self, timeout: float = 90) -> dict:
        """Wait until the image's own HEALTHCHECK calls the container healthy; returns its state."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.state()
            if state["Status"] != "running":
                raise AssertionError(f"container {state['Status']} (exit {state['ExitCode']}):\n{self.logs()}")
            if state.get("Health", {}).get("Status") == "healthy":
                return state
            if time.monotonic() > deadline:
                raise AssertionError(f"container not healthy after {timeout} s: {state.get('Health')}\n{self.logs()}")
            time.sleep(0.5)

    def exec(self, *command: str, check: bool = False) -> subprocess.CompletedProcess:
        return docker("exec", self.name, *command, check=check)

    def stop(self, grace: int = 10) -> float:
        """`docker stop` with `grace` seconds before SIGKILL; returns how long it took."""
        started = time.monotonic()
        docker("stop", "--time", str(grace), self.name, timeout=grace + 30)
        return time.monotonic() - started

    def logs(self) -> str:
        result = docker("logs", self.name, check=False)
        return result.stdout + result.stderr

    def remove(self) -> None:
        with contextlib.suppress(Exception):
            docker("rm", "--force", "--volumes", self.name, check=False)


def remove_test_containers() -> None:
    """Every container these tests started and left (a run that was interrupted)."""
    listed = docker("ps", "--all", "--quiet", "--filter", f"label={LABEL}", check=False).stdout.split()
    if listed:
        docker("rm", "--force", *listed, check=False)

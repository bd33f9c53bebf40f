"""`python -m realtime_project.server`: daphne's command line as the product runs it.

What changes in daphne (the redacting access log, the graceful SIGTERM, the listen queue, the
WebSocket and body limits) is in `streaming.daphne_adapter.launcher`. Here, before daphne starts:

* memory stays flat: glibc's malloc gets at most two arenas (`MALLOC_ARENA_MAX`, unless set);
* daphne's event loop is uvloop's (`SERVER_EVENT_LOOP`, README "Configuration");
* the objects loaded at start-up are kept out of the cyclic GC's sight.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import os
import sys

logger = logging.getLogger("realtime_project.server")


def main(argv: list[str] | None = None) -> None:
    _limit_malloc_arenas()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "realtime_project.settings")
    _install_event_loop(_event_loop_setting())  # before django.setup(): daphne's app config imports daphne.server
    import django

    django.setup()
    from streaming.daphne_adapter import launcher

    for level, line in _started:
        logger.log(level, line)
    _tune_gc()
    launcher.run(sys.argv[1:] if argv is None else argv)


def _event_loop_setting() -> str:
    """SERVER_EVENT_LOOP, read before Django's settings are; a configuration error is reported by
    the settings, as for every other variable."""
    from realtime_project.env import ConfigError, load_config

    try:
        return load_config().server_event_loop
    except ConfigError:
        return "asyncio"


def _install_event_loop(name: str) -> str:
    """Make the loop daphne creates (when `daphne.server` is imported) uvloop's, unless `name` is
    "asyncio"; the name of the loop it will be.

    Twisted's asyncio reactor runs on any asyncio loop. With the frames written straight to the
    sockets (`streaming.daphne_adapter.io`), what a publish still spends in the loop itself — the
    selector, a handle per ready socket, timers — is Python in asyncio's own loop and C in
    uvloop's: `chat` at 2,000 channels used about a tenth less CPU per publish, while fan-out and
    idle cost no more (bench/OPTIMISATIONS.md, step 21). Without uvloop installed the server says so and
    runs on asyncio's loop.
    """
    made = getattr(sys.modules.get("daphne.server"), "twisted_loop", None)
    if made is not None:  # imported already (the server started in a process that had daphne loaded)
        name = "uvloop" if type(made).__module__.startswith("uvloop") else "asyncio"
    elif name == "uvloop":
        try:
            import uvloop
        except ImportError:
            _started.append((logging.WARNING, "SERVER_EVENT_LOOP=uvloop, but uvloop is not installed: asyncio's loop"))
            name = "asyncio"
        else:
            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    _started.append((logging.INFO, f"event loop {name}"))
    return name


_started: list[tuple[int, str]] = []  # logged once django.setup() has configured logging


MALLOC_ARENAS = 2
_M_ARENA_MAX = -8  # glibc's malloc.h


def _limit_malloc_arenas() -> None:
    """Cap glibc's malloc at MALLOC_ARENAS arenas, as `MALLOC_ARENA_MAX=2` would.

    Django runs each HTTP request's sync code on a thread of its own, and glibc gives new threads
    new arenas (up to 8 per core) whose freed memory stays resident: RSS rose in steps of about
    400 KB as load peaks met new arenas, over ten minutes of steady load (tests/reliability/
    test_resources.py, the soak). The threads only run short database calls, so sharing one
    arena costs nothing measurable. An explicit `MALLOC_ARENA_MAX` in the environment wins; on a
    libc without `mallopt` (musl) nothing changes.
    """
    if "MALLOC_ARENA_MAX" in os.environ:
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(_M_ARENA_MAX, MALLOC_ARENAS)


def _tune_gc() -> None:
    """Move everything loaded at start-up out of the cyclic GC's sight (`gc.freeze`), so that full
    collections scan only what connections allocate.

    Raising the collection thresholds as well (50,000 / 20 / 100) removed the GC pauses from the
    10,000-subscriber fan-out, but then the cycles of closed connections were collected so rarely
    that RSS grew by 100+ MB over 16,000 connects (bench/OPTIMISATIONS.md): the thresholds stay at
    Python's defaults.
    """
    gc.collect()
    gc.freeze()


if __name__ == "__main__":
    main()

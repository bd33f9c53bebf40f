"""`python -m realtime_project.server`: daphne's command line as the product runs it.

What changes in daphne (the redacting access log, the graceful SIGTERM, the listen queue, the
WebSocket and body limits) is in `streaming.daphne_adapter.launcher`. Here, before daphne starts:

* memory stays flat: glibc's malloc gets at most two arenas (`MALLOC_ARENA_MAX`, unless set);
* the objects loaded at start-up are kept out of the cyclic GC's sight.
"""

from __future__ import annotations

import ctypes
import gc
import os
import sys


def main(argv: list[str] | None = None) -> None:
    _limit_malloc_arenas()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "realtime_project.settings")
    import django

    django.setup()
    from streaming.daphne_adapter import launcher

    _tune_gc()
    launcher.run(sys.argv[1:] if argv is None else argv)


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

"""`manage.py cleanup_connections`: close the connection rows of dead server processes now."""

from django.conf import settings
from django.core.management.base import BaseCommand

from streaming.registry import reap_dead


class Command(BaseCommand):
    help = "Close the connection rows of server processes whose heartbeat stopped (no ghosts)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--older-than",
            type=float,
            default=None,
            help="Seconds without heartbeat after which a process is dead (default: the liveness window).",
        )

    def handle(self, *args, **options):
        window = options["older_than"] if options["older_than"] is not None else settings.REALTIME.liveness_window
        reaped = reap_dead(window)
        self.stdout.write(f"closed {reaped} connection(s) of dead server processes")

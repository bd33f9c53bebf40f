"""`manage.py migrate_locked`: `migrate`, one process at a time.

Every container of the image migrates as it starts, and several start together on a fresh database
(docker-compose.yml's app1 and app2): two `migrate` runs creating the same tables at once make one
fail (duplicate key in pg_type) and its container exit. On PostgreSQL this takes a session advisory
lock first, so the others wait, then find nothing left to apply. The lock ends with the process.
"""

from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.db import connection

LOCK_KEY = 0x7265616C74696D65  # "realtime": one lock per database, for this project's migrations


class Command(BaseCommand):
    help = "Apply migrations, one process at a time (a PostgreSQL advisory lock)."

    def handle(self, *args, **options):
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_lock(%s)", [LOCK_KEY])
        try:
            call_command("migrate", interactive=False, verbosity=options["verbosity"])
        finally:
            if connection.vendor == "postgresql":
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(%s)", [LOCK_KEY])

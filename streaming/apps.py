import sys

from django.apps import AppConfig


class StreamingConfig(AppConfig):
    name = "streaming"
    verbose_name = "Realtime streaming"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Import the application's hooks now (README, "Hooks"): a wrong path stops start-up with
        one line, and a hook module may connect its signal receivers on import."""
        from streaming import hooks

        try:
            hooks.check_all()
        except (ImportError, TypeError) as error:
            sys.stderr.write(f"configuration error: {error}\n")
            raise SystemExit(2) from None

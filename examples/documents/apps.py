from django.apps import AppConfig


class DocumentsConfig(AppConfig):
    name = "examples.documents"
    label = "documents"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from examples.documents import live  # noqa: F401  (registers the live model)

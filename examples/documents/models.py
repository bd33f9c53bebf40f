from django.conf import settings
from django.db import models


class Document(models.Model):
    """A document in a folder; its owner alone may follow a private one."""

    title = models.CharField(max_length=200)
    body = models.TextField(blank=True, default="")
    folder = models.CharField(max_length=50, default="general")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    private = models.BooleanField(default=False)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return self.title

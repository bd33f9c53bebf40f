"""The registration: every save or delete of a Document is published to `doc:<pk>` and to its
folder's list channel `docs:<folder>`, persisted, after commit."""

from examples.documents.models import Document
from examples.documents.serializers import DocumentSerializer
from streaming import live


def may_follow(user, document: Document) -> bool:
    return not document.private or (user.is_authenticated and document.owner_id == user.pk)


def may_follow_folder(user, folder: str) -> bool:
    return user.is_authenticated


live.register(
    Document,
    serializer=DocumentSerializer,
    channel="doc:{pk}",
    list_channel="docs:{folder}",
    permission=may_follow,
    list_permission=may_follow_folder,
    queryset=lambda: Document.objects.filter(private=False).order_by("pk"),
)

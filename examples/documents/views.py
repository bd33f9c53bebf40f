"""Plain Django views that change documents: the live model publishes what they save."""

import json

from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from examples.documents.models import Document
from examples.documents.serializers import DocumentSerializer
from streaming import live


class Abandoned(Exception):
    """Raised after the save to roll the whole request back."""


@csrf_exempt
@require_http_methods(["POST"])
def create_document(request: HttpRequest) -> JsonResponse:
    fields = json.loads(request.body or b"{}")
    with transaction.atomic():
        document = Document.objects.create(**{k: v for k, v in fields.items() if k in ("title", "body", "folder")})
    return JsonResponse(DocumentSerializer(document).data, status=201)


@csrf_exempt
@require_http_methods(["POST", "DELETE"])
def change_document(request: HttpRequest, pk: int) -> JsonResponse:
    """POST {"title"?, "body"?, "folder"?, "fail"?}: save in a transaction (`fail` rolls it back
    after the save); DELETE: delete."""
    fields = json.loads(request.body or b"{}") if request.method == "POST" else {}
    try:
        with transaction.atomic():
            document = get_object_or_404(Document.objects.select_for_update(), pk=pk)
            if request.method == "DELETE":
                document.delete()
                return JsonResponse({"deleted": pk})
            for name in ("title", "body", "folder"):
                if name in fields:
                    setattr(document, name, fields[name])
            document.save()
            if fields.get("fail"):
                raise Abandoned
    except Abandoned:
        return JsonResponse({"rolled_back": True}, status=409)
    return JsonResponse(DocumentSerializer(document).data)


def document_snapshot(request: HttpRequest, pk: int) -> JsonResponse:
    """The document and the position of its channel, read in one transaction (`live.snapshot`)."""
    snapshot = live.snapshot(f"doc:{pk}", lambda: DocumentSerializer(get_object_or_404(Document, pk=pk)).data)
    return JsonResponse(snapshot.as_dict())

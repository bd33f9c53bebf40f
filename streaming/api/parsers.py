"""A JSON parser that refuses bodies over the publish limit (413) and parses with orjson."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from streaming import protocol
from streaming.errors import InvalidJSON, MessageTooLarge


class BoundedJSONParser(JSONParser):
    """JSON bodies up to SSE_MAX_MESSAGE_SIZE bytes."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        limit = settings.REALTIME.sse_max_message_size
        body = stream.read(limit + 1) if stream is not None else b""
        if len(body) > limit:
            raise MessageTooLarge(f"Request bodies are limited to {limit} bytes.")
        try:
            return protocol.decode(body)
        except InvalidJSON as error:
            raise ParseError(error.detail) from None

"""A JSON parser that refuses bodies over their endpoint's limit (413) and parses with orjson."""

from __future__ import annotations

from typing import Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from streaming import protocol
from streaming.errors import InvalidJSON, MessageTooLarge
from streaming.middleware import http_body_limit


class BoundedJSONParser(JSONParser):
    """JSON bodies up to SSE_MAX_MESSAGE_SIZE bytes (a batch: PUBLISH_BATCH_MAX_BYTES)."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        request = (parser_context or {}).get("request")
        limit = http_body_limit(request.path if request is not None else "")
        body = stream.read(limit + 1) if stream is not None else b""
        if len(body) > limit:
            raise MessageTooLarge(f"Request bodies are limited to {limit} bytes.")
        try:
            return protocol.decode(body)
        except InvalidJSON as error:
            raise ParseError(error.detail) from None

"""Publishing through the HTTP API (README, "HTTP API") with a client's credentials."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from realtime_client.endpoint import Endpoint
from realtime_client.exceptions import ConnectFailed, ReplyError, RequestTimeout, describe


class HTTPPublisher:
    """POSTs to the publishing endpoints (and reads snapshots); each method returns the server's JSON reply.

    An error status raises ReplyError with the body's `type` as `code` and the HTTP `status`.
    """

    def __init__(self, endpoint: Endpoint, *, timeout: float = 10.0, transport: httpx.AsyncBaseTransport | None = None):
        self.endpoint = endpoint
        self.timeout = timeout
        self._transport = transport
        self._http: httpx.AsyncClient | None = None

    async def broadcast(self, content: Any, *, type: str | None = None, id: str | None = None) -> dict[str, Any]:
        """Send to every connection of both transports (`POST /ws/broadcast`)."""
        return await self.post("/ws/broadcast", {"message": _message(content, type, id)})

    async def send_to_channel(
        self, channel: str, content: Any, *, type: str | None = None, persist: bool = False, id: str | None = None
    ) -> dict[str, Any]:
        """Send to a channel (`POST /ws/send-to-channel`); returns `{id, offset?}`."""
        body = {"channel": channel, "message": _message(content, type, id), "persist": persist}
        return await self.post("/ws/send-to-channel", body)

    async def send_event(self, channel: str, event: str, data: Any, *, persist: bool = False) -> dict[str, Any]:
        """Send an SSE-style event: envelope `type` = event, `content` = data (`POST /sse/send-to-channel`)."""
        body = {"channel": channel, "event": event, "data": data, "persist": persist}
        return await self.post("/sse/send-to-channel", body)

    async def send_to_user(self, user_id: str, content: Any, *, type: str | None = None) -> dict[str, Any]:
        """Send to every connection of a user (`POST /ws/send-to-user`)."""
        return await self.post("/ws/send-to-user", {"user_id": user_id, "message": _message(content, type, None)})

    async def publish_batch(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Publish several messages at once (`POST /api/publish/batch/`): each a dict with one of
        `channel`, `user_id` or `broadcast=True`, `content`, and optionally `type`, `id`, `persist`.
        All are validated before any is sent; returns `[{id, offset?}, …]` in the same order."""
        items = []
        for message in messages:
            item: dict[str, Any] = {"message": _message(message["content"], message.get("type"), message.get("id"))}
            for target in ("channel", "user_id", "broadcast", "persist"):
                if message.get(target) is not None:
                    item[target] = message[target]
            items.append(item)
        return (await self.post("/api/publish/batch/", {"messages": items}))["results"]

    async def send_notification(
        self,
        title: str,
        content: str,
        *,
        type: str = "info",
        auto_hide: bool | None = None,
        duration: int | None = None,
        channel: str | None = None,
        user_id: str | None = None,
    ) -> dict[str, Any]:
        """Store and deliver a notification to everyone, a channel or a user (`POST /sse/notification`)."""
        body: dict[str, Any] = {"title": title, "content": content, "type": type}
        optional = {"auto_hide": auto_hide, "duration": duration, "channel": channel, "user_id": user_id}
        body.update({key: value for key, value in optional.items() if value is not None})
        return await self.post("/sse/notification", body)

    async def snapshot(self, channel: str) -> dict[str, Any]:
        """A live channel's snapshot (`GET /api/channels/<name>/snapshot/`): `{channel, offset,
        epoch, data, has_more}`, the application's data and the channel's position read with it.
        ReplyError `forbidden` (403) or `not_found` (404) when it may not be read or does not exist."""
        return await self.get(f"/api/channels/{quote(channel, safe='')}/snapshot/")

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST JSON to `path`; the reply's JSON, or ReplyError for an error status."""
        return await self._request("POST", path, body)

    async def get(self, path: str) -> Any:
        """GET `path`; the reply's JSON, or ReplyError for an error status."""
        return await self._request("GET", path)

    async def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        url = self.endpoint.http_url(path)
        try:
            response = await self._client().request(method, url, json=body, headers=self.endpoint.headers())
        except httpx.TimeoutException as error:
            raise RequestTimeout(f"no reply from {url} within {self.timeout:g} s") from error
        except httpx.TransportError as error:
            raise ConnectFailed(f"cannot reach {url}: {describe(error)}") from error
        try:
            payload = response.json()
        except ValueError:
            payload = response.text
        if response.is_error:
            raise ReplyError.from_body(payload, response.status_code)
        return payload

    async def aclose(self) -> None:
        http, self._http = self._http, None
        if http is not None:
            await http.aclose()

    def _client(self) -> httpx.AsyncClient:
        if self._http is None or self._http.is_closed:
            self._http = httpx.AsyncClient(timeout=self.timeout, transport=self._transport)
        return self._http


def _message(content: Any, type: str | None, id: str | None) -> dict[str, Any]:
    message: dict[str, Any] = {"content": content}
    if type is not None:
        message["type"] = type
    if id is not None:
        message["id"] = id
    return message

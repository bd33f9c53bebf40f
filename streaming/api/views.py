"""The HTTP API (README, "HTTP API"): stats, live connections, channels and their history.

Publishing is in `publish.py`."""

from __future__ import annotations

import uuid
from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.permissions import AllowAny
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from streaming import asyncapi, history, hooks, live, protocol, security, selectors, services
from streaming.api import serializers as s
from streaming.api.authentication import request_identity
from streaming.api.pagination import StrictPageNumberPagination
from streaming.api.permissions import IsAdmin, IsAuthenticatedWhenRequired
from streaming.errors import Forbidden, NotFound
from streaming.namespaces import options
from streaming.runtime import flush_local_registry

COMMON_ERRORS = s.COMMON_ERRORS
CHANNEL_NAME = OpenApiParameter(
    "name", str, OpenApiParameter.PATH, pattern=protocol.CHANNEL_RE.pattern, description="A channel name."
)


class StatsView(APIView):
    """Connection and channel counts across every live process (the design document's keys)."""

    @extend_schema(responses={200: s.StatsSerializer, **COMMON_ERRORS})
    def get(self, request: Request) -> Response:
        flush_local_registry()
        return Response(selectors.connection_stats())


class ConnectionListView(APIView):
    """Live connections of every process, newest first (admins only)."""

    permission_classes = [IsAdmin]
    pagination_class = StrictPageNumberPagination

    @extend_schema(
        parameters=[
            OpenApiParameter("transport", str, enum=["ws", "sse"]),
            OpenApiParameter("user_id", str),
            OpenApiParameter("channel", str),
        ],
        responses={
            200: s.ConnectionSerializer(many=True),
            400: s.ErrorSerializer,
            **COMMON_ERRORS,
            404: s.ErrorSerializer,
        },
    )
    def get(self, request: Request) -> Response:
        flush_local_registry()
        transport = request.query_params.get("transport")
        if transport not in (None, "", "ws", "sse"):
            return Response(
                protocol.error_body("invalid_message", "transport is ws or sse.", {"transport": "invalid"}),
                status=400,
            )
        user_id, channel = request.query_params.get("user_id") or None, request.query_params.get("channel") or None
        connections = selectors.connection_list(
            transport=transport or None,
            user_id=protocol.validate_user_id(user_id) if user_id else None,
            channel=protocol.validate_channel(channel) if channel else None,
        )
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(connections, request, view=self)
        return paginator.get_paginated_response(s.ConnectionSerializer(page, many=True).data)


class ConnectionDetailView(APIView):
    """One live connection; DELETE closes it (WS close 4409, SSE stream ends). Admins only."""

    permission_classes = [IsAdmin]

    @extend_schema(responses={200: s.ConnectionSerializer, **COMMON_ERRORS, 404: s.ErrorSerializer})
    def get(self, request: Request, connection_id: str) -> Response:
        flush_local_registry()
        connection = selectors.connection_list().filter(id=_connection_id(connection_id)).first()
        if connection is None:
            return Response(protocol.error_body("not_found", "No open connection with this id."), status=404)
        return Response(s.ConnectionSerializer(connection).data)

    @extend_schema(responses={204: None, **COMMON_ERRORS, 404: s.ErrorSerializer})
    def delete(self, request: Request, connection_id: str) -> Response:
        services.connection_close(_connection_id(connection_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


def _connection_id(raw: str) -> str:
    """A connection id is a UUID; anything else names no connection (404, after authentication)."""
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise NotFound("No open connection with this id.") from None


class ChannelListView(APIView):
    """Channels with live subscribers or persisted history, by name; protected ones for admins."""

    pagination_class = StrictPageNumberPagination

    @extend_schema(
        responses={
            200: s.ChannelSummarySerializer(many=True),
            400: s.ErrorSerializer,
            **COMMON_ERRORS,
            404: s.ErrorSerializer,
        }
    )
    def get(self, request: Request) -> Response:
        flush_local_registry()
        identity = request_identity(request)
        names = selectors.channel_names(admin=identity.is_admin, user_id=identity.user_id)
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(names, request, view=self)
        return paginator.get_paginated_response(selectors.channel_summaries(page))


class ChannelDetailView(APIView):
    """One channel: subscribers, presence and newest offset."""

    @extend_schema(
        parameters=[
            CHANNEL_NAME,
            OpenApiParameter(
                "counts_only", bool, description="Presence without the user ids (always so where presence is off)."
            ),
        ],
        responses={200: s.ChannelDetailSerializer, 400: s.ErrorSerializer, **COMMON_ERRORS},
    )
    def get(self, request: Request, name: str) -> Response:
        protocol.validate_channel(name)
        _authorize_read(request, name)
        counts_only = request.query_params.get("counts_only", "").lower() in ("1", "true", "yes")
        flush_local_registry()
        presence = selectors.channel_presence(name, counts_only or not options(name).presence)
        return Response(
            {
                "name": name,
                "subscribers": presence["connections"],
                "offset": history.history_head(name),
                "presence": presence,
            }
        )


class ChannelHistoryView(APIView):
    """A page of a channel's retained history, oldest first; page on with `since`."""

    permission_classes = [IsAuthenticatedWhenRequired]

    @extend_schema(
        parameters=[CHANNEL_NAME, s.HistoryQuerySerializer],
        responses={200: s.HistorySerializer, 400: s.ErrorSerializer, **COMMON_ERRORS},
    )
    def get(self, request: Request, name: str) -> Response:
        protocol.validate_channel(name)
        _authorize_read(request, name)
        query = s.HistoryQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        data = query.validated_data
        recovery = history.history_read(name, data.get("since"), data.get("limit"), data.get("epoch") or None)
        return Response(protocol.history_page(recovery))

    @extend_schema(
        parameters=[CHANNEL_NAME],
        responses={200: s.HistoryResetSerializer, 400: s.ErrorSerializer, **COMMON_ERRORS},
    )
    def delete(self, request: Request, name: str) -> Response:
        """Delete the channel's history (admins): offsets start again at 0 under a new epoch."""
        if not request_identity(request).is_admin:
            raise Forbidden("Only admins reset a channel's history.")
        epoch = services.history_reset(protocol.validate_channel(name))
        return Response({"channel": name, "offset": 0, "epoch": epoch})


class ChannelSnapshotView(APIView):
    """A live model channel's snapshot with the channel's position read in the same transaction:
    render `data`, then subscribe with `since=offset` and `epoch` (README, "Live models")."""

    permission_classes = [IsAuthenticatedWhenRequired]

    @extend_schema(
        parameters=[CHANNEL_NAME],
        responses={200: s.SnapshotSerializer, 400: s.ErrorSerializer, 404: s.ErrorSerializer, **COMMON_ERRORS},
    )
    def get(self, request: Request, name: str) -> Response:
        protocol.validate_channel(name)
        _authorize_read(request, name)
        return Response(live.channel_snapshot(name).as_dict())


def _authorize_read(request: Request, name: str) -> None:
    """The built-in channel rules, then the application's subscribe hook for a client's read."""
    hooks.authorize_read(
        request_identity(request),
        name,
        security.client_ip(request.META.get("REMOTE_ADDR"), request.META.get("HTTP_X_FORWARDED_FOR")),
    )


def api_root_links() -> dict[str, Any]:
    return {
        "broadcast": "/ws/broadcast",
        "send_to_channel": "/ws/send-to-channel",
        "send_to_user": "/ws/send-to-user",
        "sse_send_to_channel": "/sse/send-to-channel",
        "publish_batch": "/api/publish/batch/",
        "sse_notification": "/sse/notification",
        "stats": "/ws/stats",
        "connections": "/ws/connections",
        "channels": "/api/channels/",
        "notifications": "/api/notifications/",
        "token": "/api/token/",
        "schema": "/api/schema/",
        "docs": "/api/docs/",
        "asyncapi": "/api/asyncapi/",
    }


class ApiRootView(APIView):
    """Links to every endpoint of the API."""

    permission_classes = [AllowAny]

    @extend_schema(exclude=True)
    def get(self, request: Request) -> Response:
        return Response({name: request.build_absolute_uri(path) for name, path in api_root_links().items()})


class AsyncApiView(APIView):
    """The WebSocket and SSE protocol as an AsyncAPI 3.0 document (README, "AsyncAPI"): public, like
    the OpenAPI schema, whatever credentials come with the request."""

    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]
    renderer_classes = [JSONRenderer]

    @extend_schema(exclude=True)
    def get(self, request: Request) -> Response:
        return Response(asyncapi.build(host=request.get_host(), secure=request.is_secure()))

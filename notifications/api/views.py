"""Views of the notifications API: send one (`/sse/notification`), and the caller's notification centre."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from notifications.api.serializers import (
    NotificationReadSerializer,
    NotificationSendSerializer,
    NotificationSentSerializer,
    NotificationSerializer,
    NotificationsMarkedSerializer,
)
from notifications.messages import NotificationMessage
from notifications.selectors import caller_channels, notification_list
from notifications.services import notification_create, notification_mark_all_read, notification_mark_read
from streaming import protocol
from streaming.api.authentication import request_identity
from streaming.api.pagination import StrictPageNumberPagination
from streaming.api.permissions import IsAuthenticatedCaller
from streaming.api.serializers import (
    BODY_ERRORS,
    COMMON_ERRORS,
    ErrorSerializer,
)
from streaming.errors import Forbidden, NotFound
from streaming.runtime import flush_local_registry


class NotificationSendView(APIView):
    """Store a notification and deliver it to everyone, a channel or a user (both transports)."""

    @extend_schema(
        request=NotificationSendSerializer,
        responses={202: NotificationSentSerializer, **BODY_ERRORS},
    )
    def post(self, request: Request) -> Response:
        body = NotificationSendSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        message = NotificationMessage(
            title=data["title"], content=data["content"], type=data["type"],
            auto_hide=data["auto_hide"], duration=data["duration"],
        )  # fmt: skip
        user = request.user if getattr(request.user, "is_authenticated", False) else None
        notification = notification_create(
            message=message, channel=data.get("channel"), user_id=data.get("user_id"), created_by=user
        )
        return Response(
            {"id": notification.message_id, "notification_id": notification.pk}, status=status.HTTP_202_ACCEPTED
        )


def _caller(request: Request) -> tuple[Any, list[str]]:
    flush_local_registry()  # this process's newest subscriptions count as the caller's channels
    identity = request_identity(request)
    if identity.user_id is None:
        raise Forbidden("The notification centre belongs to a user; use a user's token or session.")
    requested = protocol.channel_names(request.query_params.get("channels", ""))
    return identity, caller_channels(identity, requested)


class NotificationPagination(StrictPageNumberPagination):
    page_size = 50
    max_page_size = 500


class NotificationListView(APIView):
    """The caller's notifications: addressed to them, to their channels, or to everyone."""

    permission_classes = [IsAuthenticatedCaller]
    pagination_class = NotificationPagination

    @extend_schema(
        parameters=[
            OpenApiParameter("unread", bool, description="Only unread ones."),
            OpenApiParameter("channels", str, description="Comma list of extra channels to include."),
        ],
        responses={200: NotificationSerializer(many=True), 400: ErrorSerializer, **COMMON_ERRORS, 404: ErrorSerializer},
    )
    def get(self, request: Request) -> Response:
        identity, channels = _caller(request)
        unread = request.query_params.get("unread", "").lower() in ("1", "true", "yes")
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(notification_list(identity, channels, unread), request, view=self)
        return paginator.get_paginated_response(NotificationSerializer(page, many=True).data)


class NotificationReadView(APIView):
    """Mark one notification read."""

    permission_classes = [IsAuthenticatedCaller]

    @extend_schema(
        request=None,
        parameters=[OpenApiParameter("channels", str, description="Comma list of extra channels to include.")],
        responses={200: NotificationReadSerializer, 400: ErrorSerializer, **COMMON_ERRORS, 404: ErrorSerializer},
    )
    def post(self, request: Request, notification_id: int) -> Response:
        identity, channels = _caller(request)
        if not notification_mark_read(identity=identity, notification_id=notification_id, channels=channels):
            raise NotFound("No such notification for you.")
        return Response({"id": notification_id, "read": True})


class NotificationReadAllView(APIView):
    """Mark every notification of the caller read."""

    permission_classes = [IsAuthenticatedCaller]

    @extend_schema(
        request=None,
        parameters=[OpenApiParameter("channels", str, description="Comma list of extra channels to include.")],
        responses={200: NotificationsMarkedSerializer, 400: ErrorSerializer, **COMMON_ERRORS},
    )
    def post(self, request: Request) -> Response:
        identity, channels = _caller(request)
        return Response({"marked": notification_mark_all_read(identity=identity, channels=channels)})

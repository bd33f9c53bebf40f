"""The publishing endpoints of the HTTP API (README, "HTTP API"): DRF views on the event loop."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from streaming import protocol, services
from streaming.api import plain
from streaming.api import serializers as s
from streaming.api.asyncview import AsyncAPIView

ERRORS = s.BODY_ERRORS


def _accepted(published: services.Published) -> Response:
    return Response(published.as_ack(), status=status.HTTP_202_ACCEPTED)


def _message(message: dict, channel: str, persist: bool = False) -> services.Publish:
    return services.Publish(channel, message["content"], message["type"], message_id=message.get("id"), persist=persist)


class BroadcastView(AsyncAPIView):
    """Send a message to every connection, on both transports, in every process."""

    @extend_schema(request=s.BroadcastSerializer, responses={202: s.PublishedSerializer, **ERRORS})
    async def post(self, request: Request) -> Response:
        body = s.BroadcastSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        message = body.validated_data["message"]
        return _accepted(await services.apublish(_message(message, protocol.BROADCAST)))


class ChannelPublishView(AsyncAPIView):
    """Send a message to a channel's subscribers; with `persist` it is stored first."""

    @extend_schema(request=s.ChannelPublishSerializer, responses={202: s.PublishedSerializer, **ERRORS})
    async def post(self, request: Request) -> Response:
        publish = plain.channel_publish(request.data)
        if publish is None:  # not plainly valid: the serializer judges, and words the errors
            body = s.ChannelPublishSerializer(data=request.data)
            body.is_valid(raise_exception=True)
            data = body.validated_data
            publish = _message(data["message"], data["channel"], data["persist"])
        return _accepted(await services.apublish(publish))


class UserPublishView(AsyncAPIView):
    """Send a message to every connection of one user."""

    @extend_schema(request=s.UserPublishSerializer, responses={202: s.PublishedSerializer, **ERRORS})
    async def post(self, request: Request) -> Response:
        body = s.UserPublishSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        return _accepted(await services.apublish(_message(data["message"], protocol.user_channel(data["user_id"]))))


class EventPublishView(AsyncAPIView):
    """SSE-style publish: `event` is the envelope type, `data` its content (both transports)."""

    @extend_schema(request=s.EventPublishSerializer, responses={202: s.PublishedSerializer, **ERRORS})
    async def post(self, request: Request) -> Response:
        body = s.EventPublishSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        publish = services.Publish(
            data["channel"], data["data"], data["event"], message_id=data.get("id"), persist=data["persist"]
        )
        return _accepted(await services.apublish(publish))


class BatchPublishView(AsyncAPIView):
    """Publish up to PUBLISH_BATCH_MAX_ITEMS messages at once: all validated before any is sent,
    the persisted ones committed in one transaction; the results come back in order."""

    @extend_schema(request=s.BatchPublishSerializer, responses={202: s.BatchPublishedSerializer, **ERRORS})
    async def post(self, request: Request) -> Response:
        publishes = plain.batch(request.data)
        if publishes is None:  # not plainly valid: the serializer judges, and words the errors
            body = s.BatchPublishSerializer(data=request.data)
            body.is_valid(raise_exception=True)
            publishes = [_batch_item(item) for item in body.validated_data["messages"]]
        results = await services.apublish_batch(publishes)
        return Response({"results": [result.as_ack() for result in results]}, status=status.HTTP_202_ACCEPTED)


def _batch_item(item: dict) -> services.Publish:
    if item.get("broadcast"):
        channel = protocol.BROADCAST
    elif item.get("user_id") is not None:
        channel = protocol.user_channel(item["user_id"])
    else:
        channel = item["channel"]
    return _message(item["message"], channel, item["persist"])

"""WebSocket routes; mounted only when WEBSOCKET_ENABLED."""

from django.conf import settings
from django.urls import path

from streaming.consumers import StreamConsumer

websocket_urlpatterns = [path("ws/connect", StreamConsumer.as_asgi())] if settings.REALTIME.websocket_enabled else []

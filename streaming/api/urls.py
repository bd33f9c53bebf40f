"""URLs of the HTTP API (README, "HTTP API")."""

from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from streaming.api import publish, tokens, views

urlpatterns = [
    path("api/", views.ApiRootView.as_view(), name="api-root"),
    path("ws/broadcast", publish.BroadcastView.as_view(), name="ws-broadcast"),
    path("ws/send-to-channel", publish.ChannelPublishView.as_view(), name="ws-send-to-channel"),
    path("ws/send-to-user", publish.UserPublishView.as_view(), name="ws-send-to-user"),
    path("sse/send-to-channel", publish.EventPublishView.as_view(), name="sse-send-to-channel"),
    path("api/publish/batch/", publish.BatchPublishView.as_view(), name="publish-batch"),
    path("ws/stats", views.StatsView.as_view(), name="ws-stats"),
    path("ws/connections", views.ConnectionListView.as_view(), name="ws-connections"),
    path("ws/connections/<str:connection_id>", views.ConnectionDetailView.as_view(), name="ws-connection"),
    path("api/channels/", views.ChannelListView.as_view(), name="channel-list"),
    path("api/channels/<str:name>/", views.ChannelDetailView.as_view(), name="channel-detail"),
    path("api/channels/<str:name>/history/", views.ChannelHistoryView.as_view(), name="channel-history"),
    path("api/channels/<str:name>/snapshot/", views.ChannelSnapshotView.as_view(), name="channel-snapshot"),
    path("api/token/", tokens.TokenObtainView.as_view(), name="token-obtain"),
    path("api/token/refresh/", tokens.TokenRefreshPublicView.as_view(), name="token-refresh"),
    path("api/token/verify/", tokens.TokenVerifyPublicView.as_view(), name="token-verify"),
    path("api/schema/", SpectacularAPIView.as_view(permission_classes=[]), name="schema"),
    path("api/asyncapi/", views.AsyncApiView.as_view(), name="asyncapi"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema", permission_classes=[]), name="api-docs"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="schema", permission_classes=[]), name="api-redoc"),
]

# Cookie-less requests to these go straight to their views (streaming.api.asyncview.LeanRoute).
LEAN_PATHS = frozenset({"/ws/broadcast", "/ws/send-to-channel", "/ws/send-to-user", "/sse/send-to-channel",
                        "/api/publish/batch/"})  # fmt: skip

"""URLs of the HTTP API (README, "HTTP API")."""

from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from streaming.api import tokens, views

urlpatterns = [
    path("api/", views.ApiRootView.as_view(), name="api-root"),
    path("ws/broadcast", views.BroadcastView.as_view(), name="ws-broadcast"),
    path("ws/send-to-channel", views.ChannelPublishView.as_view(), name="ws-send-to-channel"),
    path("ws/send-to-user", views.UserPublishView.as_view(), name="ws-send-to-user"),
    path("sse/send-to-channel", views.EventPublishView.as_view(), name="sse-send-to-channel"),
    path("ws/stats", views.StatsView.as_view(), name="ws-stats"),
    path("ws/connections", views.ConnectionListView.as_view(), name="ws-connections"),
    path("ws/connections/<str:connection_id>", views.ConnectionDetailView.as_view(), name="ws-connection"),
    path("api/channels/", views.ChannelListView.as_view(), name="channel-list"),
    path("api/channels/<str:name>/", views.ChannelDetailView.as_view(), name="channel-detail"),
    path("api/channels/<str:name>/history/", views.ChannelHistoryView.as_view(), name="channel-history"),
    path("api/token/", tokens.TokenObtainView.as_view(), name="token-obtain"),
    path("api/token/refresh/", tokens.TokenRefreshPublicView.as_view(), name="token-refresh"),
    path("api/token/verify/", tokens.TokenVerifyPublicView.as_view(), name="token-verify"),
    path("api/schema/", SpectacularAPIView.as_view(permission_classes=[]), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema", permission_classes=[]), name="api-docs"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="schema", permission_classes=[]), name="api-redoc"),
]

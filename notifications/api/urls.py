"""URLs of the notifications API."""

from django.urls import path

from notifications.api import views

urlpatterns = [
    path("sse/notification", views.NotificationSendView.as_view(), name="sse-notification"),
    path("api/notifications/", views.NotificationListView.as_view(), name="notification-list"),
    path("api/notifications/read-all/", views.NotificationReadAllView.as_view(), name="notification-read-all"),
    path(
        "api/notifications/<int:notification_id>/read/", views.NotificationReadView.as_view(), name="notification-read"
    ),
]

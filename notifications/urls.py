from django.urls import path

from notifications import api

urlpatterns = [
    path("sse/notification", api.NotificationSendView.as_view(), name="sse-notification"),
    path("api/notifications/", api.NotificationListView.as_view(), name="notification-list"),
    path("api/notifications/read-all/", api.NotificationReadAllView.as_view(), name="notification-read-all"),
    path("api/notifications/<int:notification_id>/read/", api.NotificationReadView.as_view(), name="notification-read"),
]

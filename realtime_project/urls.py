"""Top-level URLs: the API, the admin, the test pages and the landing page."""

from django.contrib import admin
from django.urls import include, path

from realtime_project import views

urlpatterns = [
    path("", views.landing, name="landing"),
    path("admin/", admin.site.urls),
    path("", include("streaming.api.urls")),
    path("", include("notifications.urls")),
]

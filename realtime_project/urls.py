"""Top-level URLs: the API, the admin, the test pages and the landing page."""

from django.contrib import admin
from django.urls import include, path, re_path

from realtime_project import views

urlpatterns = [
    path("", views.landing, name="landing"),
    path("admin/", admin.site.urls),
    path("healthz", views.healthz, name="healthz"),
    path("metrics", views.metrics_view, name="metrics"),
    path("", include("streaming.api.urls")),
    path("", include("notifications.api.urls")),
    path("", include("streaming.pages")),
    re_path(r"^(?:api|ws)/", views.api_not_found),  # last: what no route above matched
]

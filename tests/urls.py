"""The project's URLs plus the example application's (tests/settings.py)."""

from django.urls import include, path

from realtime_project.urls import urlpatterns as project_urlpatterns

urlpatterns = [path("", include("examples.documents.urls")), *project_urlpatterns]

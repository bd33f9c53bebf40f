"""Peer: stock django-eventstream (its own view and in-process listener manager) — settings,
URLs and ASGI app in one module.

`GET /events/?channel=news` streams; `POST /publish?channel=news` with the payload as body calls
`send_event` (the documented way to publish), as a plain sync Django view.
Usage: python -m daphne -b 127.0.0.1 -p PORT bench.peers.eventstream_stock:application
(DJANGO_SETTINGS_MODULE=bench.peers.eventstream_stock)
"""

import os

SECRET_KEY = "bench-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["daphne", "django.contrib.contenttypes", "django.contrib.auth", "django_eventstream"]
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "bench.peers.eventstream_stock"
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
USE_TZ = True

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.peers.eventstream_stock")

from django.core.asgi import get_asgi_application  # noqa: E402
from django.http import HttpResponse  # noqa: E402
from django.urls import include, path  # noqa: E402
from django.views.decorators.csrf import csrf_exempt  # noqa: E402


@csrf_exempt
def publish(request):
    from django_eventstream import send_event

    send_event(request.GET.get("channel", "news"), "message", request.body.decode(), json_encode=False)
    return HttpResponse(status=202)


urlpatterns = [
    path("events/", include("django_eventstream.urls")),
    path("publish", publish),
]

application = get_asgi_application()

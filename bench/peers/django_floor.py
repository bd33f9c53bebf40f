"""Floor A of the HTTP publish scenario: the least a Django async view can do for a publish —
parse the JSON body and answer 202 with an id — with settings, URL and ASGI app in one module
(no middleware, no database, no DRF).

Usage: python -m daphne -b 127.0.0.1 -p PORT bench.peers.django_floor:application
(DJANGO_SETTINGS_MODULE=bench.peers.django_floor)
"""

import os

SECRET_KEY = "bench-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS: list[str] = []
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "bench.peers.django_floor"
DATABASES: dict = {}
USE_TZ = True

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.peers.django_floor")

import json  # noqa: E402
import uuid  # noqa: E402

from django.core.asgi import get_asgi_application  # noqa: E402
from django.http import JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402


async def publish(request):
    json.loads(request.body)
    return JsonResponse({"id": str(uuid.uuid4())}, status=202)


urlpatterns = [path("ws/send-to-channel", publish)]

application = get_asgi_application()

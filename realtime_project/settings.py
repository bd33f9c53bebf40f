"""Django settings. Every value that comes from the environment is parsed in `env.py`."""

from __future__ import annotations

import logging
import sys
from datetime import timedelta
from pathlib import Path

import dj_database_url

from realtime_project.env import ConfigError, load_config, production_warnings

BASE_DIR = Path(__file__).resolve().parent.parent

try:
    REALTIME = load_config()
except ConfigError as error:
    # One line naming the variable, the value and what is expected; no traceback.
    sys.stderr.write(f"configuration error: {error}\n")
    raise SystemExit(2) from None

for _warning in production_warnings(REALTIME):
    # Logging is not configured yet: this reaches stderr through logging's last-resort handler.
    logging.getLogger("realtime_project").warning(_warning)

SECRET_KEY = REALTIME.django_secret_key
DEBUG = REALTIME.django_debug
ALLOWED_HOSTS = list(REALTIME.django_allowed_hosts)

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "streaming",
    "notifications",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "realtime_project.urls"
ASGI_APPLICATION = "realtime_project.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]


def _database(url: str) -> dict:
    database = dj_database_url.parse(url, conn_max_age=0, conn_health_checks=True)
    if database["ENGINE"] == "django.db.backends.postgresql":
        # Under ASGI every request and every database_sync_to_async call may run on another
        # thread; a pool per process hands them connections and takes them back at the end,
        # where persistent per-thread connections would pile up to PostgreSQL's max_connections.
        # A request waits at most 5 s for a connection: while PostgreSQL is down, callers get their 503
        # `unavailable` after that rather than after psycopg's default 30 s. The pool retries a lost
        # connection with doubling delays (1, 2, 4 … s); by default for 5 minutes, so after a long
        # outage a process could wait seconds for its next attempt while PostgreSQL is back. Giving
        # up after 1 s lets the next request start a fresh attempt at once: every process is back
        # within about a second (docs/RELIABILITY.md, "Faults"; 5 s here measured 4.9 s).
        database["OPTIONS"] = {
            "connect_timeout": 5,
            "pool": {"min_size": 1, "max_size": 10, "timeout": 5, "reconnect_timeout": 1},
        }
    if database["ENGINE"] == "django.db.backends.sqlite3":
        if not Path(database["NAME"]).is_absolute() and database["NAME"] != ":memory:":
            database["NAME"] = str(BASE_DIR / database["NAME"])
        # WAL lets readers run beside the one writer; IMMEDIATE takes the write lock at BEGIN,
        # so concurrent writers queue on `timeout` instead of failing with "database is locked".
        database["OPTIONS"] = {
            "timeout": 20,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    return database


DATABASES = {"default": _database(REALTIME.database_url)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# channels routes the ASGI application; the product's bus is its own (streaming.bus), so no
# channel layer is configured.
CHANNEL_LAYERS: dict = {}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
# The browser client (clients/js, an npm package too) is served as /static/realtime/client.js.
STATICFILES_DIRS = [BASE_DIR / "static", ("realtime", BASE_DIR / "clients" / "js" / "src")]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Files are served from where the finders find them, except in production with collectstatic's
# output present (the container image): then from STATIC_ROOT, with its compressed copies.
WHITENOISE_USE_FINDERS = DEBUG or not STATIC_ROOT.is_dir()

# The HTTP API refuses bodies over the publish limit itself (413); Django's own cap sits above it.
DATA_UPLOAD_MAX_MEMORY_SIZE = max(REALTIME.sse_max_message_size, REALTIME.publish_batch_max_bytes) * 2 + 65536

REST_FRAMEWORK = {
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_PARSER_CLASSES": ["streaming.api.parsers.BoundedJSONParser"],
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "streaming.api.authentication.CredentialAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["streaming.api.permissions.IsAdminWhenRequired"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "streaming.api.errors.exception_handler",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "realtime_project API",
    "DESCRIPTION": "Publish to WebSocket and SSE subscribers, inspect live connections and stats.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
}

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=REALTIME.ws_jwt_expire_minutes),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=1),
    "ALGORITHM": REALTIME.ws_jwt_algorithm,
    "SIGNING_KEY": REALTIME.ws_jwt_secret_key,
    "USER_ID_FIELD": "id",
    "USER_ID_CLAIM": "sub",
    "AUTH_HEADER_TYPES": ("Bearer",),
    "UPDATE_LAST_LOGIN": False,
}

# django-eventstream's storage and channel manager are ours: `send_event` persists into the
# channel history and delivers on the bus to WebSocket and SSE subscribers alike.
EVENTSTREAM_STORAGE_CLASS = "streaming.eventstream.HistoryStorage"
EVENTSTREAM_CHANNELMANAGER_CLASS = "streaming.eventstream.ChannelPermissions"

# The debug page (DJANGO_DEBUG=true) shows settings: never the passwords inside URLs.
DEFAULT_EXCEPTION_REPORTER_FILTER = "streaming.logs.RedactingExceptionReporterFilter"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"redact": {"()": "streaming.logs.RedactSecretsFilter"}},
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["redact"],
        }
    },
    "root": {"handlers": ["console"], "level": REALTIME.log_level},
    "loggers": {
        "django": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "daphne": {"handlers": ["console"], "level": "WARNING", "propagate": False},
    },
}

# realtime_project: one server process per container (scale with more containers behind nginx).
FROM python:3.13-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    DJANGO_SETTINGS_MODULE=realtime_project.settings

WORKDIR /app
RUN useradd --create-home --uid 1000 app
COPY requirements.txt .
RUN pip install -r requirements.txt
COPY --chown=app:app . .
# collectstatic needs settings but no secrets of the deployment
RUN DJANGO_DEBUG=true python manage.py collectstatic --noinput -v 0

USER app
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status == 200 else 1)"

# migrate (idempotent; run it from one container in larger deployments), then daphne through the
# wrapper that keeps credentials out of the access log. No --proxy-headers: daphne would believe
# the left-most X-Forwarded-For, which the client writes; TRUSTED_PROXIES reads it safely instead.
CMD ["sh", "-c", "python manage.py migrate --noinput && exec python -m realtime_project.server -b 0.0.0.0 -p 8000 realtime_project.asgi:application"]

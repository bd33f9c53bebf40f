# realtime_project: one server process per container (scale with more containers behind nginx).
#   docker build -t realtime_project .     (--build-arg BASE_IMAGE=… for another Debian-based image
#                                            with Python 3.11+ as `python`, its venv module included)
ARG BASE_IMAGE=python:3.13-slim
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    DJANGO_SETTINGS_MODULE=realtime_project.settings \
    PORT=8000

# The server runs as `app` (uid 1000), which owns nothing: it can read the code, not change it.
RUN groupadd --system --gid 1000 app \
 && useradd --system --uid 1000 --gid 1000 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin app

# The dependencies in a virtual environment owned by root. The runtime needs no installer (pip, and
# setuptools where the venv has it) nor translators' .po sources (Django reads the compiled .mo).
COPY requirements.txt /tmp/requirements.txt
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --quiet --no-cache-dir --disable-pip-version-check -r /tmp/requirements.txt \
 && /opt/venv/bin/pip uninstall -qq --yes pip setuptools \
 && find /opt/venv -name '*.po' -delete \
 && rm /tmp/requirements.txt

# The code (.dockerignore says what stays out) and collectstatic's output, which needs settings but
# no secrets of the deployment. The code is compiled now because the app user cannot write
# __pycache__ at run time. Everything ends up readable by all and writable by root alone, whatever
# the umask of the tree it came from.
WORKDIR /app
COPY . .
RUN DJANGO_DEBUG=true python manage.py collectstatic --noinput -v 0 \
 && python -m compileall -q -j 0 -x '^/app/staticfiles/' /app \
 && chmod -R u=rwX,go=rX /app

# Nothing needs writing at run time (the database is PostgreSQL, logs go to stdout): the container
# runs with a read-only root file system as well (`docker run --read-only`).
USER 1000:1000
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["python", "-m", "realtime_project.healthcheck"]

# migrate (idempotent, and one container at a time: containers starting together wait for each
# other), then daphne through the wrapper that keeps credentials out of the access log and closes
# connections gracefully on SIGTERM (`docker stop`). No --proxy-headers: daphne would believe the
# left-most X-Forwarded-For, which the client writes; TRUSTED_PROXIES reads it safely instead.
CMD ["sh", "-c", "python manage.py migrate_locked && exec python -m realtime_project.server -b 0.0.0.0 -p \"$PORT\" realtime_project.asgi:application"]

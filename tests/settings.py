"""The project's settings plus the example application (examples/documents) the tests use."""

from realtime_project.settings import *  # noqa: F403
from realtime_project.settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "examples.documents"]
ROOT_URLCONF = "tests.urls"

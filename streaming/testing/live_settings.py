"""The settings of a live server's process (`streaming.testing.server`): the test run's settings
module, named by STREAMING_TESTING_SETTINGS, with its DATABASES replaced by the JSON in
STREAMING_TESTING_DATABASES (the test databases of the process that started the server)."""

import json as _json
import os as _os
from importlib import import_module as _import_module

_original = _import_module(_os.environ["STREAMING_TESTING_SETTINGS"])
globals().update({name: value for name, value in vars(_original).items() if name.isupper()})

DATABASES = _json.loads(_os.environ["STREAMING_TESTING_DATABASES"])

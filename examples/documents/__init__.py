"""An example application on the realtime layer: documents whose changes reach their subscribers
live (README, "Live models"). Installed by the test settings (`tests/settings.py`)."""

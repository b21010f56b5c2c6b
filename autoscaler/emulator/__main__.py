"""``python -m autoscaler.emulator``: see :mod:`autoscaler.emulator.cli`."""

from autoscaler.emulator.cli import app

app(prog_name="python -m autoscaler.emulator")

"""One reading of the TINYGRAPH_* switches: which values of an environment variable mean off."""

from __future__ import annotations

import os

OFF = ("0", "false", "no", "off")


def switched_off(name: str) -> bool:
    """Whether the environment variable `name` says off (0, false, no or off, in any case)."""
    return os.environ.get(name, "").lower() in OFF

"""winback: find an online shop's dormant customers and win them back.

The Python API is the object returned by :func:`open`; the CLI, the HTTP service and the
dashboard are thin layers over it.
"""

from __future__ import annotations

from winback._version import __version__
from winback.workspace import Workspace, init, open

__all__ = ["Workspace", "__version__", "init", "open"]

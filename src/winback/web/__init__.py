"""The HTTP service (FastAPI): tracking, unsubscribe, feedback, event API. The dashboard and
the management API join as more modules under :mod:`winback.web.routes`."""

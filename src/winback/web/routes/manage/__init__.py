"""The management API under ``/api/v1/``: segments, flows, contacts and tags, one module per
resource, each with its ``router``. Reads need the ``read`` scope, changes ``manage``
(:mod:`winback.web.auth`); the figures come from the same core calls as the CLI's ``--json``."""

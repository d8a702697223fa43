"""Read models of the dashboard's pages: what each page shows, computed from the store and
the daily snapshots (:mod:`winback.snapshots`) with the same core functions as the CLI, so
that a page's figures equal the CLI's ``--json``. One module per page concept; nothing here
knows HTTP."""

"""Provider reports: feedback-loop complaints (ARF) and bounces (DSN), read from files or the
HTTP API, and what they change (suppressions, events)."""

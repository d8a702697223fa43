"""What flows achieved: attribution of messages, orders and revenue, lift over holdouts and
the workspace-wide control group, A/B winners (docs/results.md)."""

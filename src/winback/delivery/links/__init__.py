"""Links in sent messages: signed tokens, and what following them records (opens, clicks,
unsubscribes, feedback)."""

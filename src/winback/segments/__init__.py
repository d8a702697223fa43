"""Dynamic segments: the condition language (:mod:`winback.segments.conditions`), segment
files and shipped defaults, and materialised membership with history."""

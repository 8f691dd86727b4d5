"""Change delivery: Watch feeds over the event log (streams) and its retention (compaction).
Imports domain, storage and the root; nothing here is imported by the layers below."""

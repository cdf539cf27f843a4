"""Segmented collections: building segments, reading them for search, the writer's map
of ids to rows, the merge policy, compaction and retention (docs/ARCHITECTURE.md section 5)."""

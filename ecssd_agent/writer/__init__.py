"""The queued mode: agents publish whole host states (:mod:`.publish`), one zone writer
(:mod:`.zone_writer`, run by ``ecssd-writer`` or the writer Lambda) turns the fleet's
publications into a few large Route 53 batches.
"""

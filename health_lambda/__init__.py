"""The three Lambda entry points (the sweep, the task events, the zone writer) and their
shared lazy runtime; thin wiring of the layers in ``ecssd_agent``."""

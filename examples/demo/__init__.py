"""The one-command local demo: ``python3 -m examples.demo`` (``make demo``). See run.py."""

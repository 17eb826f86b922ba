"""The calc example service: ``GET /calc/<formula>`` -> ``{"value": ...}``."""

"""The time example service: ``GET /time/<Go layout>`` -> the current time in that layout."""

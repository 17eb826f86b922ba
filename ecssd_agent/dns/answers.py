"""Pre-rendered answers and the per-query routing choice among them.

A :class:`Variant` is everything of a positive response after the question, rendered once
per zone load: answer records, then additional records, with the section counts for a
response with and without an OPT record, plus a shorter body without the additional
section for when the full one does not fit the client's UDP size. Per query, an answer
object only *picks* a variant, which is where Route 53's routing rules live:

- :class:`Fixed`: a simple record set (all its values), or any name with one choice.
- :class:`Weighted`: a weighted group, one record set chosen with probability
  proportional to its weight (a bisect over cumulative weights).
- :class:`Uniform`: several equally likely variants (a multivalue group of up to eight
  record sets, answered in each of its rotations so that clients taking the first record
  spread over all of them).
- a multivalue group of 9 to 12 record sets: every choice of eight is pre-rendered (at
  most 495) and picked uniformly, each in its own random order;
- :class:`Sampled`: a larger multivalue group: eight record sets chosen at random per
  query, too many combinations to pre-render, so pre-rendered records are joined per
  query instead.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass

from ecssd_agent.dns import wire

MULTIVALUE_MAX = 8  # Route 53 answers up to eight multivalue record sets


class Variant:
    __slots__ = ("answers", "body", "counts", "short_body", "short_counts")

    def __init__(self, answer: Sequence[bytes], additional: Sequence[bytes]) -> None:
        an, ar = len(answer), len(additional)
        self.answers = an
        self.body = b"".join(answer) + b"".join(additional)
        self.counts = (wire.counts(an, 0, ar), wire.counts(an, 0, ar + 1))
        self.short_body = b"".join(answer)
        self.short_counts = (wire.counts(an, 0, 0), wire.counts(an, 0, 1))


class Answer(ABC):
    """Base of the routing choices; ``variants`` lists every pre-rendered outcome."""

    variants: tuple[Variant, ...] = ()

    @abstractmethod
    def pick(self) -> Variant:
        """The variant to send for this query (the per-query routing choice)."""


class Fixed(Answer):
    __slots__ = ("variant", "variants")

    def __init__(self, variant: Variant) -> None:
        self.variant = variant
        self.variants = (variant,)

    def pick(self) -> Variant:
        return self.variant


class Weighted(Answer):
    __slots__ = ("cumulative", "total", "variants")

    def __init__(self, variants: Sequence[Variant], weights: Sequence[float]) -> None:
        if len(variants) != len(weights) or not variants:
            raise ValueError("one positive weight per variant, at least one variant")
        self.variants = tuple(variants)
        running = 0.0
        cumulative = []
        for weight in weights:
            running += weight
            cumulative.append(running)
        if running <= 0:
            raise ValueError("weights sum to zero")
        self.cumulative = cumulative
        self.total = running

    def pick(self) -> Variant:
        return self.variants[bisect_right(self.cumulative, random.random() * self.total)]


class Uniform(Answer):
    __slots__ = ("variants",)

    def __init__(self, variants: Sequence[Variant]) -> None:
        self.variants = tuple(variants)

    def pick(self) -> Variant:
        return self.variants[random.randrange(len(self.variants))]


@dataclass(frozen=True)
class Item:
    """One record set of a sampled group: its answer records and its additional records."""

    answer: tuple[bytes, ...]
    additional: tuple[bytes, ...]


class Sampled(Answer):
    __slots__ = ("items", "k")

    def __init__(self, items: Sequence[Item], k: int = MULTIVALUE_MAX) -> None:
        self.items = tuple(items)
        self.k = min(k, len(self.items))

    def pick(self) -> Variant:
        answer: list[bytes] = []
        additional: dict[bytes, None] = {}  # ordered and deduplicated: targets repeat
        for item in random.sample(self.items, self.k):
            answer.extend(item.answer)
            additional.update(dict.fromkeys(item.additional))
        return Variant(answer, list(additional))

"""botocore's ``standard`` retry mode, as the agent's Clients configure it, in virtual time.

Modelled from botocore/retries/standard.py (botocore 1.43, the version in use):

- retryable: what :func:`ecssd_agent.aws.route53.error_meaning` calls retryable (throttling,
  ``PriorRequestNotComplete``, server errors); an ``InvalidChangeBatch`` is not retried (the
  agent re-reads instead);
- at most ``max_attempts`` attempts per call (the agent's ``--aws-max-attempts``, default 8);
- before retry ``i`` (1-based): sleep ``random() * min(2 ** (i - 1), 20)`` seconds
  (truncated binary exponential backoff with full jitter);
- a per-client retry quota: 500 tokens, a retry costs 5, a call that succeeds without
  retry gives 1 back, one that succeeds after retries gives back its last cost; with the
  quota empty, a retryable error is returned to the caller at once.
"""

from __future__ import annotations

import random
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

from benchmarks.fleet.engine import Call, Instruction, Sleep
from benchmarks.fleet.route53 import Response
from ecssd_agent.agent.settings import Settings
from ecssd_agent.aws.route53 import Meaning, code_meaning


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = Settings().aws_max_attempts  # 8, with retry mode "standard"
    max_backoff: float = 20.0
    quota: int = 500
    retry_cost: int = 5
    no_retry_increment: int = 1


class BotocoreClient:
    """One boto3 client's retry state (each agent and the sweep Lambda has its own)."""

    def __init__(self, policy: RetryPolicy, rng: random.Random, name: str = "") -> None:
        self.policy = policy
        self.rng = rng
        self.name = name
        self.quota = policy.quota
        self.gave_up = 0  # calls that returned a retryable error to the caller
        self.last_attempts = 0  # attempts the last call took
        self.last_throttled = False  # whether one of them was answered Throttling

    def call(self, op: str, params: dict[str, Any]) -> Generator[Instruction, Any, Response]:
        """Make one API call as botocore would, retries included; returns the last response."""
        policy = self.policy
        attempt = 1
        acquired: int | None = None
        self.last_throttled = False
        while True:
            response: Response = yield Call(op, params, self.name)
            self.last_attempts = attempt
            if response.ok:
                released = policy.no_retry_increment if acquired is None else acquired
                self.quota = min(policy.quota, self.quota + released)
                return response
            meaning = code_meaning(response.error or "")
            self.last_throttled = self.last_throttled or meaning.kind is Meaning.THROTTLED
            if not meaning.retryable:
                return response
            if attempt >= policy.max_attempts or self.quota < policy.retry_cost:
                self.gave_up += 1
                return response
            self.quota -= policy.retry_cost
            acquired = policy.retry_cost
            yield Sleep(self.rng.random() * min(2.0 ** (attempt - 1), policy.max_backoff))
            attempt += 1

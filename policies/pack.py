"""The pack's identity and its policies, importable without starting the analyzer server."""

from __future__ import annotations

from policies import aws, kubernetes, redis, server_line, state_tier

PACK_NAME = "dict-redis-policies"
DESCRIPTION = (
    "Blocks unsafe DICT Redis cache stacks: Kubernetes hardening, Redis/Sentinel topology, backup bucket and IAM."
)

POLICIES = [*kubernetes.POLICIES, *redis.POLICIES, *state_tier.POLICIES, *server_line.POLICIES, *aws.POLICIES]

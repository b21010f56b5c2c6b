"""Declarative scaling policy: schema (pydantic), loader and a hot-reloading store that keeps the last good one.

Owns the policy file's schema and its loading. May import: core, errors, perf, scaling_settings.
"""

from autoscaler.policy.loader import load_policy, parse_policy
from autoscaler.policy.schema import PolicyFile, to_policy_set
from autoscaler.policy.store import PolicyStore

__all__ = ["PolicyFile", "PolicyStore", "load_policy", "parse_policy", "to_policy_set"]

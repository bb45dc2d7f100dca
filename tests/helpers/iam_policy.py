"""Test helper: a small IAM identity-policy evaluator (Allow/Deny, Action/NotAction and
Resource/NotResource wildcards, the condition operators our policies use), as IAM decides.

Evaluate IAM identity policies against requests, the way IAM's policy logic does.

No maintained Python evaluator fits (moto's ignores most conditions and returns Deny for an
Allow whose condition does not match; iamspy is a single 0.0.1 release), so this one is small
and strict: anything it does not implement (policy variables, an unknown condition operator,
a multi-valued context key without ForAnyValue/ForAllValues) raises instead of guessing.

Decision order (https://docs.aws.amazon.com/IAM/latest/UserGuide/
reference_policies_evaluation-logic.html): an explicit Deny wins, else any Allow, else the
implicit deny.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

ALLOW, EXPLICIT_DENY, IMPLICIT_DENY = "Allow", "ExplicitDeny", "ImplicitDeny"


@dataclass(frozen=True)
class Request:
    """One authorization request: e.g. Request("s3:GetObject", "arn:aws:s3:::b/k")."""

    action: str
    resource: str
    context: Mapping[str, str | Sequence[str]] = field(default_factory=dict)

    def __str__(self) -> str:
        extra = f" {dict(self.context)}" if self.context else ""
        return f"{self.action} on {self.resource}{extra}"


@lru_cache(maxsize=4096)
def _glob(pattern: str, ignore_case: bool) -> re.Pattern:
    if "${" in pattern:
        raise NotImplementedError(f"policy variables are not supported: {pattern}")
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(regex, re.IGNORECASE | re.DOTALL if ignore_case else re.DOTALL)


def matches(pattern: str, value: str, ignore_case: bool = False) -> bool:
    """IAM wildcard match: `*` any run of characters (including none and ':'), `?` one."""
    return _glob(pattern, ignore_case).fullmatch(value) is not None


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def _string_equals(policy: str, actual: str) -> bool:
    return policy == actual


# operator -> (test of one policy value against one request value, negated?)
OPERATORS = {
    "StringEquals": (_string_equals, False),
    "StringNotEquals": (_string_equals, True),
    "StringEqualsIgnoreCase": (lambda p, a: p.lower() == a.lower(), False),
    "StringNotEqualsIgnoreCase": (lambda p, a: p.lower() == a.lower(), True),
    "StringLike": (lambda p, a: matches(p, a), False),
    "StringNotLike": (lambda p, a: matches(p, a), True),
    "ArnEquals": (_string_equals, False),
    "ArnNotEquals": (_string_equals, True),
    "ArnLike": (lambda p, a: matches(p, a), False),
    "ArnNotLike": (lambda p, a: matches(p, a), True),
    "Bool": (lambda p, a: str(p).lower() == str(a).lower(), False),
}


def _condition_holds(operator: str, key: str, wanted, context: Mapping) -> bool:
    qualifier, _, name = operator.rpartition(":")
    if_exists = name.endswith("IfExists")
    name = name.removesuffix("IfExists")
    if name not in OPERATORS or qualifier not in ("", "ForAnyValue", "ForAllValues"):
        raise NotImplementedError(f"condition operator {operator} is not supported")
    test, negated = OPERATORS[name]
    values = [str(v) for v in _as_list(wanted)]
    lowered = {k.lower(): v for k, v in context.items()}  # condition keys ignore case
    if key.lower() not in lowered:
        # A missing key: only negated operators (and ...IfExists, ForAllValues) hold.
        return negated or if_exists or qualifier == "ForAllValues"
    actual = lowered[key.lower()]
    if qualifier == "":
        if isinstance(actual, list | tuple):
            raise NotImplementedError(f"{key} has several values; use ForAnyValue/ForAllValues")
        hit = any(test(v, actual) for v in values)
        return not hit if negated else hit
    hits = [any(test(v, a) for v in values) for a in actual]
    if negated:
        hits = [not h for h in hits]
    return any(hits) if qualifier == "ForAnyValue" else all(hits)


def _statement_applies(statement: Mapping, request: Request) -> bool:
    if "Principal" in statement or "NotPrincipal" in statement:
        raise ValueError("a resource or trust policy statement in an identity policy")
    if "Action" in statement:
        action_hit = any(matches(p, request.action, True) for p in _as_list(statement["Action"]))
    else:
        action_hit = not any(matches(p, request.action, True)
                             for p in _as_list(statement["NotAction"]))
    if not action_hit:
        return False
    if "Resource" in statement:
        resource_hit = any(matches(p, request.resource) for p in _as_list(statement["Resource"]))
    elif "NotResource" in statement:
        resource_hit = not any(matches(p, request.resource)
                               for p in _as_list(statement["NotResource"]))
    else:
        raise ValueError(f"statement {statement.get('Sid', '?')} has no Resource")
    if not resource_hit:
        return False
    return all(_condition_holds(op, key, wanted, request.context)
               for op, block in statement.get("Condition", {}).items()
               for key, wanted in block.items())


def statements(policy: Mapping) -> list[Mapping]:
    return _as_list(policy["Statement"])


def evaluate(policies: Iterable[Mapping], request: Request) -> str:
    """ALLOW, EXPLICIT_DENY or IMPLICIT_DENY for `request` under these identity policies."""
    allowed = False
    for policy in policies:
        if policy.get("Version") != "2012-10-17":
            raise ValueError("policies must say Version 2012-10-17")
        for statement in statements(policy):
            if _statement_applies(statement, request):
                if statement["Effect"] == "Deny":
                    return EXPLICIT_DENY
                allowed = allowed or statement["Effect"] == "Allow"
    return ALLOW if allowed else IMPLICIT_DENY


def denied(policies: Sequence[Mapping], requests: Iterable[Request]) -> list[str]:
    """The requests these policies do not allow, as readable lines (empty: all allowed)."""
    return [f"{evaluate(policies, r)}: {r}" for r in requests if evaluate(policies, r) != ALLOW]

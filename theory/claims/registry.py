"""The claims registry: each theoretical claim has an id, a one-line statement, the check that verifies it, and
the evidence that check produced. ``python -m theory check`` runs them all (see ``theory.cli.main``).

A check is a function ``check(full: bool) -> Evidence``; ``full=True`` runs the long sweeps. A check returns
``Evidence`` with verdict ``"certified"`` (exact: matched lower and upper bounds, or symbolic identity),
``"verified"`` (numerical evidence within a stated tolerance) or ``"failed"``; it never raises for a false claim.
"""
from __future__ import annotations

import importlib
import time
from dataclasses import dataclass, field
from typing import Any, Callable

PASSING_VERDICTS = ("certified", "verified")
# What a claim's check establishes (its status in the README claims table):
KINDS = {
    "proved": "proved for all sizes (docs/proofs.md); the check verifies its steps or instances exactly",
    "certified": "certified exactly for the shapes its check covers (not a statement about other shapes)",
    "conjecture": "conjecture: certified shape by shape on the covered range, no proof for all sizes",
    "verified": "numerical evidence within a stated tolerance",
    "verified-empirically": "an experiment's measurement within a stated band",
}

# Modules whose import registers claims, in the order ``check`` runs them.
CLAIM_MODULES: list[str] = ["theory.claims.dimension", "theory.claims.proofs", "theory.claims.geometry",
                             "theory.claims.diversity"]


@dataclass(frozen=True)
class Evidence:
    verdict: str
    sizes: str
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.verdict not in PASSING_VERDICTS + ("failed",):
            raise ValueError(f"verdict={self.verdict!r}: expected certified, verified or failed")


@dataclass(frozen=True)
class Claim:
    id: str
    statement: str
    method: str
    check: Callable[[bool], Evidence]
    kind: str = "certified"


REGISTRY: dict[str, Claim] = {}


def claim(claim_id: str, statement: str, method: str,
          kind: str = "certified") -> Callable[[Callable[[bool], Evidence]], Callable[[bool], Evidence]]:
    """Register ``check`` as the one check of claim ``claim_id``; ``kind`` is one of ``KINDS``."""
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}: expected one of {', '.join(KINDS)}")

    def register(check: Callable[[bool], Evidence]) -> Callable[[bool], Evidence]:
        if claim_id in REGISTRY:
            raise ValueError(f"claim {claim_id!r} registered twice")
        REGISTRY[claim_id] = Claim(claim_id, statement, method, check, kind)
        return check

    return register


def load_all() -> dict[str, Claim]:
    """Every registered claim, in CLAIM_MODULES order (then registration order), whatever was imported first."""
    for module in CLAIM_MODULES:
        importlib.import_module(module)
    rank = {module: index for index, module in enumerate(CLAIM_MODULES)}
    ordered = sorted(REGISTRY.values(), key=lambda c: rank.get(c.check.__module__, len(rank)))
    return {c.id: c for c in ordered}


@dataclass(frozen=True)
class ClaimResult:
    claim: Claim
    evidence: Evidence
    seconds: float

    @property
    def passed(self) -> bool:
        return self.evidence.verdict in PASSING_VERDICTS

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.claim.id, "kind": self.claim.kind, "statement": self.claim.statement,
                "method": self.claim.method,
                "verdict": self.evidence.verdict, "sizes": self.evidence.sizes, "seconds": round(self.seconds, 3),
                "details": self.evidence.details}


def run_claim(item: Claim, full: bool) -> ClaimResult:
    start = time.perf_counter()
    evidence = item.check(full)
    return ClaimResult(item, evidence, time.perf_counter() - start)

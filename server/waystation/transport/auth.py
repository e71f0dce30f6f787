"""Authentication and authorization of calls.

Off unless the server is given a policy file (`--auth-config`). A credential is a bearer
token (`authorization: Bearer <token>` metadata; the file stores only its SHA-256) or the
identity of a mutual-TLS client certificate (its common name or a subject alternative name).
Each credential is allowed a set of tenants (prefixes of `resource_id`; "" is every
resource) and of actions:

    start   CreateRun, StartRun              read    GetRun, ListRuns, WatchRun, workflows
    resume  ResumeRun                        admin   RestartRun, TimeTravelRun, DeleteRun
    cancel  CancelRun                        *       all of them

A call without a valid credential is UNAUTHENTICATED; a call outside its credential's scope
is PERMISSION_DENIED, except that reads of another tenant's run answer NOT_FOUND, so runs
of other tenants cannot be discovered. Tokens are never logged: only the credential's name
is used (in errors, and as `resumed_by` on the steps it resumes).

Policy file (JSON):

    {"credentials": [
      {"name": "billing", "token_sha256": "<hex>", "tenants": ["billing/"],
       "actions": ["start", "resume", "read"]},
      {"name": "orders", "mtls_identity": "orders.internal", "tenants": ["orders/"],
       "actions": ["*"]}]}
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from waystation.engine.errors import PermissionDenied, RunNotFound, Unauthenticated

ACTIONS = frozenset({"start", "resume", "cancel", "read", "admin"})


@dataclass(frozen=True)
class Principal:
    """Who calls, and what they may do."""

    name: str
    tenants: tuple[str, ...] = ("",)
    actions: frozenset[str] = frozenset({"*"})

    def may(self, action: str) -> bool:
        return "*" in self.actions or action in self.actions

    def owns(self, resource_id: str) -> bool:
        return any(resource_id.startswith(prefix) for prefix in self.tenants)

    @property
    def prefixes(self) -> tuple[str, ...]:
        """The resource prefixes a listing is limited to; () when it sees everything."""
        return () if "" in self.tenants else self.tenants


ANONYMOUS = Principal("anonymous")


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class AuthPolicy:
    tokens: dict[str, Principal] = field(default_factory=dict)
    identities: dict[str, Principal] = field(default_factory=dict)
    enabled: bool = False

    @classmethod
    def from_file(cls, path: str) -> AuthPolicy:
        document = json.loads(Path(path).read_text())
        policy = cls(enabled=True)
        for entry in document.get("credentials", []):
            principal = _principal(entry)
            if "token_sha256" in entry:
                policy.tokens[str(entry["token_sha256"]).lower()] = principal
            if "mtls_identity" in entry:
                policy.identities[str(entry["mtls_identity"])] = principal
            if "token_sha256" not in entry and "mtls_identity" not in entry:
                raise ValueError(f"credential {principal.name!r}: no token_sha256 or mtls_identity")
        return policy

    def authenticate(
        self,
        metadata: Iterable[tuple[str, Any]] | None,
        peer_identities: Callable[[], Sequence[str]],
    ) -> Principal:
        """The caller's principal: its bearer token, else its client certificate (the
        identities are asked for only then: reading them costs a call into grpc)."""
        if not self.enabled:
            return ANONYMOUS
        for key, value in metadata or ():
            if key == "authorization" and isinstance(value, str):
                return self._by_token(value)
        for identity in peer_identities():
            if identity in self.identities:
                return self.identities[identity]
        raise Unauthenticated("a bearer token or a client certificate is required")

    def _by_token(self, header: str) -> Principal:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("the authorization metadata must be 'Bearer <token>'")
        digest = token_digest(token.strip())
        for known, principal in self.tokens.items():
            if hmac.compare_digest(known, digest):
                return principal
        raise Unauthenticated("unknown bearer token")


def _principal(entry: dict[str, Any]) -> Principal:
    name = str(entry.get("name") or "")
    if not name:
        raise ValueError("every credential needs a name")
    actions = frozenset(entry.get("actions", ["*"]))
    unknown = actions - ACTIONS - {"*"}
    if unknown:
        raise ValueError(f"credential {name!r}: unknown actions {sorted(unknown)}")
    return Principal(name, tuple(entry.get("tenants", [""])), actions)


def authorize(
    principal: Principal, action: str, *, resource_id: str | None = None, run: Any = None
) -> None:
    """Raise unless `principal` may do `action` (on a new run of `resource_id`, or on `run`,
    a RunRecord). Another tenant's run is NOT_FOUND for reads, PERMISSION_DENIED otherwise."""
    if not principal.may(action):
        raise PermissionDenied(principal.name, action)
    if resource_id is not None and not principal.owns(resource_id):
        raise PermissionDenied(principal.name, action, f"resource {resource_id!r}")
    if run is not None and not principal.owns(run.resource_id):
        if action == "read":
            raise RunNotFound(run.run_id)
        raise PermissionDenied(principal.name, action, f"run {run.run_id!r}")

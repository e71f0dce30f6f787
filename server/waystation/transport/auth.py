"""Authentication and authorization of calls.

Off unless the server is given a policy file (`--auth-config`). A credential is a bearer
token (`authorization: Bearer <token>` metadata; the file stores only its SHA-256) or the
identity of a mutual-TLS client certificate (its common name or a subject alternative name).
Each credential is allowed a set of tenants (prefixes of `resource_id`; "" is every
resource) and of actions:

    start   CreateRun, StartRun              read    GetRun, ListRuns, WatchRun, workflows
    resume  ResumeRun                        admin   RestartRun, TimeTravelRun, DeleteRun
    cancel  CancelRun                        *       all of them

A call without a valid credential is UNAUTHENTICATED; an action the credential is not
allowed, or a new run outside its tenants, is PERMISSION_DENIED. Another tenant's run is
NOT_FOUND to every call, as a missing run is, so runs of other tenants cannot be
discovered (a create naming its id is PERMISSION_DENIED: ids are global, and that one is
taken, but nothing else is told). Tokens are never logged: only the
credential's name is (refused calls at INFO, every call at DEBUG), set on the call's span
as `enduser.id`, and stored as `resumed_by` on the steps it resumes.

Policy file (JSON):

    {"credentials": [
      {"name": "billing", "token_sha256": "<hex>", "tenants": ["billing/"],
       "actions": ["start", "resume", "read"]},
      {"name": "orders", "mtls_identity": "orders.internal", "tenants": ["orders/"],
       "actions": ["*"]}]}

`tenants` defaults to `[""]` and `actions` to `["*"]`. Anything else in the file (an unknown
field, a misspelt one, a value of the wrong type, an empty list of tenants or actions, a
`token_sha256` that is not 64 hex digits, a key given twice, two credentials with one name,
token or identity) stops the server at start-up: a typo must not widen a credential.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from waystation.engine.errors import PermissionDenied, RunNotFound, Unauthenticated

ACTIONS = frozenset({"start", "resume", "cancel", "read", "admin"})
FIELDS = frozenset({"name", "token_sha256", "mtls_identity", "tenants", "actions"})
SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")


@dataclass(frozen=True)
class Principal:
    """Who calls, and what they may do."""

    name: str
    tenants: tuple[str, ...] = ("",)
    actions: frozenset[str] = frozenset({"*"})

    def __post_init__(self) -> None:
        if not self.tenants:  # `prefixes` would take it for every tenant
            raise ValueError(f"credential {self.name!r} has no tenant")

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
        """The policy in the JSON file at `path`; ValueError, naming the file and the
        problem, for anything that is not a valid policy."""
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ValueError(f"--auth-config {path}: {exc.strerror or exc}") from None
        try:
            return cls._from_json(json.loads(text, object_pairs_hook=_unique_keys))
        except json.JSONDecodeError as exc:
            raise ValueError(f"--auth-config {path}: not JSON: {exc}") from None
        except ValueError as exc:
            raise ValueError(f"--auth-config {path}: {exc}") from None

    @classmethod
    def _from_json(cls, document: Any) -> AuthPolicy:
        if not isinstance(document, dict) or set(document) != {"credentials"}:
            raise ValueError('the policy is an object with one field, "credentials"')
        entries = document["credentials"]
        if not isinstance(entries, list):
            raise ValueError('"credentials" is a list of objects')
        policy = cls(enabled=True)
        names: set[str] = set()
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict):
                raise ValueError(f"credentials[{i}] is not an object")
            principal = _principal(entry, f"credentials[{i}]")
            name = principal.name
            if name in names:  # it names the caller in logs, spans and `resumed_by`
                raise ValueError(f"two credentials are named {name!r}")
            names.add(name)
            if "token_sha256" in entry:
                _add(policy.tokens, "token_sha256", _digest(entry, name), principal)
            if "mtls_identity" in entry:
                _add(
                    policy.identities,
                    "mtls_identity",
                    _text(entry, "mtls_identity", name),
                    principal,
                )
            if "token_sha256" not in entry and "mtls_identity" not in entry:
                raise ValueError(f"credential {name!r}: no token_sha256 or mtls_identity")
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


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are unique (json's default keeps the last of a repeat)."""
    keys = [key for key, _ in pairs]
    for key in keys:
        if keys.count(key) > 1:
            raise ValueError(f"the key {key!r} is given twice in one object")
    return dict(pairs)


def _add(known: dict[str, Principal], field: str, key: str, principal: Principal) -> None:
    """One credential per token and per identity: a repeat took the last entry's rights."""
    if key in known:
        raise ValueError(
            f"credentials {known[key].name!r} and {principal.name!r} have the same {field}"
        )
    known[key] = principal


def _digest(entry: dict[str, Any], name: str) -> str:
    """The entry's token hash, lower-case; never echoed (it may be a pasted token)."""
    value = entry["token_sha256"]
    if not isinstance(value, str) or not SHA256_HEX.fullmatch(value):
        raise ValueError(
            f"credential {name!r}: token_sha256 is the SHA-256 of the token in 64 hex"
            ' digits (printf %s "$TOKEN" | sha256sum), not the token itself'
        )
    return value.lower()


def _principal(entry: dict[str, Any], where: str) -> Principal:
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}: every credential needs a name (text)")
    unknown_fields = sorted(set(entry) - FIELDS)
    if unknown_fields:
        raise ValueError(
            f"credential {name!r}: unknown field {unknown_fields[0]!r} (fields: "
            f"{', '.join(sorted(FIELDS))})"
        )
    tenants = _texts(entry, "tenants", name, [""])
    actions = frozenset(_texts(entry, "actions", name, ["*"]))
    for listed, given in (("tenants", tenants), ("actions", actions)):
        if not given:  # an empty list of tenants listed every tenant's runs
            every = '"" is every resource' if listed == "tenants" else '"*" is every action'
            raise ValueError(f"credential {name!r}: {listed} is empty; list at least one ({every})")
    unknown = actions - ACTIONS - {"*"}
    if unknown:
        raise ValueError(f"credential {name!r}: unknown actions {sorted(unknown)}")
    return Principal(name, tuple(tenants), actions)


def _texts(entry: dict[str, Any], field: str, name: str, default: list[str]) -> list[str]:
    value = entry.get(field, default)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"credential {name!r}: {field} is a list of text, not {value!r}")
    return value


def _text(entry: dict[str, Any], field: str, name: str) -> str:
    value = entry[field]
    if not isinstance(value, str) or not value:
        raise ValueError(f"credential {name!r}: {field} is non-empty text, not {value!r}")
    return value


def authorize(
    principal: Principal, action: str, *, resource_id: str | None = None, run: Any = None
) -> None:
    """Raise unless `principal` may do `action` (on a new run of `resource_id`, or on `run`,
    a RunRecord). Another tenant's run is NOT_FOUND, as a missing one is; a create that
    names its id is PERMISSION_DENIED (the id is taken, but nothing else is told)."""
    if not principal.may(action):
        raise PermissionDenied(principal.name, action)
    if resource_id is not None and not principal.owns(resource_id):
        raise PermissionDenied(principal.name, action, f"resource {resource_id!r}")
    if run is not None and not principal.owns(run.resource_id):
        if action == "start":  # its id is taken: that much a create cannot hide
            raise PermissionDenied(principal.name, action, f"run {run.run_id!r}")
        raise RunNotFound(run.run_id)

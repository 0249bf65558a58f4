"""Who may do what: accounts, sign-in sessions and roles, in the project's database (defect_model.database).

Roles, each with everything the one before may do:
- inspector: inspect photos, read their own inspection log;
- engineer: + train (start, cancel, resume), review and relabel, compare, export, read every log;
- admin: + make a model active, delete runs, manage accounts.
Every operation that changes what the line trusts calls `require(actor, action)` here, in the engine, so a
hidden button is never the only guard.

Passwords are hashed with Argon2id (argon2-cffi). Sessions and one-time sign-in links are random tokens of
which only a hash is stored; sessions expire. Repeated failed sign-ins for one account are refused for a
while: each attempt is counted as a failure, in one database transaction, before its password is checked, so
a burst sent at once gets MAX_FAILURES checks, not one per request; the checks (64 MiB of memory each) run at
most PASSWORD_CHECKS at a time. Failures for names without an account reach the audit trail once per window
(the first, then a count of the rest), so a flood of made-up names cannot grow it without bound. A plant's identity provider (OpenID Connect through Streamlit's st.login) signs people in by their
e-mail; their role is the account of that name, else `inspector`.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from defect_model.access.audit import AuditLog
from defect_model.database import accounts as rows, open_database

ROLES = ("inspector", "engineer", "admin")
# action -> the least role allowed to do it
PERMISSIONS = {
    "inspect": "inspector",
    "read_own_log": "inspector",
    "read_all_logs": "engineer",
    "train": "engineer",
    "review": "engineer",
    "relabel": "engineer",
    "confirm": "engineer",
    "compare": "engineer",
    "export": "engineer",
    "activate": "admin",
    "delete": "admin",
    "manage_accounts": "admin",
}
SESSION_HOURS = 12
LINK_HOURS = 24
MAX_FAILURES = 5
FAILURE_WINDOW_S = 15 * 60
MIN_PASSWORD = 10
PASSWORD_CHECKS = 2  # Argon2id checks at once in this process (each takes 64 MiB); the rest wait their turn
UNKNOWN_NAMES_KEPT = 20  # names kept with a window's count of failures for unknown accounts
_password_checks = threading.BoundedSemaphore(PASSWORD_CHECKS)
ADMIN = "admin"

class PermissionDenied(PermissionError):
    """The signed-in account's role may not do this; the message says which role may."""


class SignInError(ValueError):
    """A sign-in that did not succeed; the message says what to do."""


@dataclass(frozen=True)
class Actor:
    """Who is acting: an account's name and role (never a name typed into a form)."""

    name: str
    role: str

    def may(self, action: str) -> bool:
        return allowed(self.role, action)


def allowed(role: str, action: str) -> bool:
    needed = PERMISSIONS[action]
    return role in ROLES and ROLES.index(role) >= ROLES.index(needed)


def require(actor: Actor | None, action: str) -> Actor:
    """`actor`, when its role may do `action`; else PermissionDenied naming the role needed."""
    if actor is None:
        raise PermissionDenied(f"Sign in first: to {action.replace('_', ' ')} you need an account.")
    if not actor.may(action):
        raise PermissionDenied(f"{actor.name} ({actor.role}) may not {action.replace('_', ' ')}: that needs the "
                               f"{PERMISSIONS[action]} role. Ask an admin.")
    return actor


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Accounts:
    """Accounts and sessions in the database at `path` (the inspection database: a SQLite file or a PostgreSQL
    URL; default: the project's)."""

    def __init__(self, path: str | Path | None = None):
        self.db = open_database(path)
        self.path = self.db.where
        self.audit = AuditLog(self.path)
        self.hasher = PasswordHasher()

    # -- accounts ----------------------------------------------------------------
    def list(self) -> list[dict]:
        return rows.listing(self.db)

    def has_password(self, name: str) -> bool:
        row = rows.account(self.db, name)
        return bool(row and row["password_hash"])

    def role_of(self, name: str) -> str | None:
        row = rows.account(self.db, name)
        return None if row is None or row["disabled"] else row["role"]

    def save(self, by: Actor, name: str, role: str, password: str | None = None) -> None:
        """Create an account or change its role (and password, when given). Admins only."""
        require(by, "manage_accounts")
        name = name.strip()
        if not name or len(name) > 100:
            raise ValueError("An account name needs 1 to 100 characters.")
        if role not in ROLES:
            raise ValueError(f"Role {role!r} is not one of {', '.join(ROLES)}.")
        if name == by.name and role != "admin":
            raise ValueError("You cannot take the admin role from yourself; another admin can.")
        hashed = self._password_hash(password) if password else None
        exists = rows.save(self.db, name, role, hashed, _now().isoformat(timespec="seconds"))
        self.audit.record(by, "account_saved", name, role=role, password_changed=bool(hashed), new=not exists)

    def disable(self, by: Actor, name: str) -> None:
        require(by, "manage_accounts")
        if name == by.name:
            raise ValueError("You cannot disable your own account.")
        rows.disable(self.db, name)
        self.audit.record(by, "account_disabled", name)

    def set_own_password(self, actor: Actor, password: str) -> None:
        rows.set_password(self.db, actor.name, self._password_hash(password))
        self.audit.record(actor, "password_changed", actor.name)

    def _password_hash(self, password: str) -> str:
        if len(password) < MIN_PASSWORD:
            raise ValueError(f"A password needs at least {MIN_PASSWORD} characters.")
        return self.hasher.hash(password)

    # -- sign-in -----------------------------------------------------------------
    def sign_in(self, name: str, password: str) -> tuple[Actor, str]:
        """(actor, session token) for a right password; SignInError otherwise, and after too many failures."""
        name = name.strip()
        attempt = self._count_attempt(name)  # refuses once MAX_FAILURES are counted, before any check
        row = rows.account(self.db, name)
        known = row is not None and bool(row["password_hash"]) and not row["disabled"]
        ok = False
        with _password_checks:
            if known:
                try:
                    ok = self.hasher.verify(row["password_hash"], password)
                except (VerificationError, InvalidHashError):
                    ok = False
            else:
                self.hasher.hash(password or "x")  # as slow as a real check: no hint that the name is unknown
        if not ok:
            self._audit_failure(name, known=row is not None)
            raise SignInError("Wrong account name or password.")
        rows.clear_failures(self.db, name)
        actor = Actor(name, row["role"])
        self.audit.record(actor, "sign_in", name, method="password", attempt=attempt)
        return actor, self._new_token(name, "session", SESSION_HOURS)

    def sign_in_external(self, email: str) -> tuple[Actor, str]:
        """A person the plant's identity provider signed in: their account's role, else inspector."""
        actor = Actor(email, self.role_of(email) or "inspector")
        self.audit.record(actor, "sign_in", email, method="oidc")
        return actor, self._new_token(email, "session", SESSION_HOURS)

    def session_actor(self, token: str | None) -> Actor | None:
        """The actor of a live session token, or None (unknown, expired, or the account disabled)."""
        if not token:
            return None
        row = rows.session(self.db, _hash_token(token), "session")
        if row is None or datetime.fromisoformat(row["expires"]) < _now():
            return None
        role = self.role_of(row["name"])
        if role is None and "@" in row["name"]:
            role = "inspector"  # an identity-provider user without an account of their own
        return Actor(row["name"], role) if role else None

    def sign_out(self, token: str) -> None:
        actor = self.session_actor(token)
        rows.end_session(self.db, _hash_token(token))
        if actor:
            self.audit.record(actor, "sign_out", actor.name)

    # -- the first start ---------------------------------------------------------
    def first_admin_link(self) -> str | None:
        """A one-time sign-in token for `admin` while no admin can sign in with a password: on a database without
        accounts it creates `admin`; while `admin` has still not set a password (its first link was spent, e.g. by
        a reload before the password was set) it replaces the earlier links. Else None."""
        done = rows.first_admin(self.db, ADMIN, _now().isoformat(timespec="seconds"))
        if done is None:
            return None
        if done == "created":
            self.audit.record(Actor("system", "admin"), "account_saved", ADMIN, role="admin", new=True)
        return self._new_token(ADMIN, "link", LINK_HOURS)

    def use_link(self, token: str) -> tuple[Actor, str]:
        """Trade a one-time sign-in link's token for a session; the link is spent."""
        row = rows.take_link(self.db, _hash_token(token))
        if row is None or datetime.fromisoformat(row["expires"]) < _now():
            raise SignInError("This sign-in link was used already or has expired. While the admin has set no "
                              "password, `python -m defect_model accounts first-link` on the server (or restarting "
                              "the dashboard with `make run`) prints a new one; otherwise ask an admin.")
        role = self.role_of(row["name"])
        if role is None:
            raise SignInError(f"The account {row['name']!r} is disabled.")
        actor = Actor(row["name"], role)
        self.audit.record(actor, "sign_in", actor.name, method="one-time link")
        return actor, self._new_token(actor.name, "session", SESSION_HOURS)

    # -- internals ---------------------------------------------------------------
    def _new_token(self, name: str, kind: str, hours: float) -> str:
        token = secrets.token_urlsafe(32)
        expires = (_now() + timedelta(hours=hours)).isoformat(timespec="seconds")
        rows.new_session(self.db, _hash_token(token), name, kind, expires, _now().isoformat(timespec="seconds"))
        return token

    def _count_attempt(self, name: str) -> int:
        """Count this attempt as a failure before its password is checked (a right password clears the count), in
        one write transaction: of any number of attempts sent at once, MAX_FAILURES get a check. Returns the
        attempt's number in the window; SignInError once the account is locked."""
        now = _now()
        since = (now - timedelta(seconds=FAILURE_WINDOW_S)).isoformat(timespec="seconds")
        times = rows.count_failure(self.db, name, since, now.isoformat(timespec="seconds"), MAX_FAILURES)
        if len(times) >= MAX_FAILURES:
            oldest = datetime.fromisoformat(times[-MAX_FAILURES])
            wait = max(1, int(FAILURE_WINDOW_S - (now - oldest).total_seconds()))
            raise SignInError(f"Too many failed sign-ins for {name!r}. Wait {wait // 60 + 1} minute(s), or ask an "
                              "admin to set a new password.")
        return len(times) + 1

    def _audit_failure(self, name: str, known: bool) -> None:
        """A failure for an account is recorded each time (the lockout bounds them); failures for names without an
        account once per FAILURE_WINDOW_S window: the window's first, which also reports the earlier windows'
        counts and names; the rest are counted in `unknown_sign_ins`."""
        if known:
            self.audit.record(Actor(name or "?", ""), "sign_in_failed", name)
            return
        window = datetime.fromtimestamp(int(_now().timestamp()) // FAILURE_WINDOW_S * FAILURE_WINDOW_S,
                                        timezone.utc).isoformat(timespec="seconds")
        earlier = rows.unknown_failure(self.db, window, name[:100], UNKNOWN_NAMES_KEPT)
        if earlier is not None:  # the earlier windows' first failures were recorded already: count the rest
            self.audit.record(Actor(name[:100] or "?", ""), "sign_in_failed", name[:100], unknown_account=True,
                              window=window, earlier_windows=[dict(e, attempts=e["attempts"] - 1) for e in earlier])


def open_accounts(path: str | Path | None = None) -> Accounts:
    """The accounts in the inspection database ($DEFECT_DATABASE_URL, else $DEFECT_DB, else
    <data folder>/inspections.sqlite)."""
    return Accounts(path)


def audit_log(path: str | Path | None = None) -> AuditLog:
    return AuditLog(path)


def terminal_actor() -> Actor:
    """Whoever runs a command in a terminal on the server: they can read and write every file already."""
    import getpass

    return Actor(f"{getpass.getuser()} (terminal)", "admin")

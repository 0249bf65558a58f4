"""Who may do what: accounts, sign-in sessions and roles, in the project's SQLite database.

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
import json
import secrets
import sqlite3
import threading
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from defect_model.access.audit import AuditLog, connect

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

SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    password_hash TEXT NOT NULL DEFAULT '',
    created TEXT NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS sessions (
    token_hash TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    kind TEXT NOT NULL DEFAULT 'session',
    expires TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sign_in_failures (
    name TEXT NOT NULL,
    time TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sign_in_failures_name ON sign_in_failures(name, time);
CREATE TABLE IF NOT EXISTS unknown_sign_ins (
    window TEXT PRIMARY KEY,
    attempts INTEGER NOT NULL,
    names TEXT NOT NULL DEFAULT '[]'
);
"""


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
    """Accounts and sessions in the SQLite database at `path` (the inspection database)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.audit = AuditLog(self.path)
        self.hasher = PasswordHasher()
        with closing(self._connect()) as db, db:
            db.executescript(SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30)  # transactions per `with db:` block
        db.row_factory = sqlite3.Row
        return db

    # -- accounts ----------------------------------------------------------------
    def list(self) -> list[dict]:
        with closing(self._connect()) as db:
            return [dict(r) for r in db.execute("SELECT name, role, created, disabled FROM accounts ORDER BY name")]

    def has_password(self, name: str) -> bool:
        with closing(self._connect()) as db:
            row = db.execute("SELECT password_hash FROM accounts WHERE name = ?", (name,)).fetchone()
        return bool(row and row["password_hash"])

    def role_of(self, name: str) -> str | None:
        with closing(self._connect()) as db:
            row = db.execute("SELECT role, disabled FROM accounts WHERE name = ?", (name,)).fetchone()
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
        with closing(self._connect()) as db, db:
            exists = db.execute("SELECT 1 FROM accounts WHERE name = ?", (name,)).fetchone()
            if exists:
                db.execute("UPDATE accounts SET role = ?, disabled = 0 WHERE name = ?", (role, name))
                if hashed:
                    db.execute("UPDATE accounts SET password_hash = ? WHERE name = ?", (hashed, name))
            else:
                db.execute("INSERT INTO accounts (name, role, password_hash, created) VALUES (?,?,?,?)",
                           (name, role, hashed or "", _now().isoformat(timespec="seconds")))
        self.audit.record(by, "account_saved", name, role=role, password_changed=bool(hashed), new=not exists)

    def disable(self, by: Actor, name: str) -> None:
        require(by, "manage_accounts")
        if name == by.name:
            raise ValueError("You cannot disable your own account.")
        with closing(self._connect()) as db, db:
            db.execute("UPDATE accounts SET disabled = 1 WHERE name = ?", (name,))
            db.execute("DELETE FROM sessions WHERE name = ?", (name,))
        self.audit.record(by, "account_disabled", name)

    def set_own_password(self, actor: Actor, password: str) -> None:
        hashed = self._password_hash(password)
        with closing(self._connect()) as db, db:
            db.execute("UPDATE accounts SET password_hash = ? WHERE name = ?", (hashed, actor.name))
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
        with closing(self._connect()) as db:
            row = db.execute("SELECT role, password_hash, disabled FROM accounts WHERE name = ?", (name,)).fetchone()
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
        self._clear_failures(name)
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
        with closing(self._connect()) as db:
            row = db.execute("SELECT name, expires FROM sessions WHERE token_hash = ? AND kind = 'session'",
                             (_hash_token(token),)).fetchone()
        if row is None or datetime.fromisoformat(row["expires"]) < _now():
            return None
        role = self.role_of(row["name"])
        if role is None and "@" in row["name"]:
            role = "inspector"  # an identity-provider user without an account of their own
        return Actor(row["name"], role) if role else None

    def sign_out(self, token: str) -> None:
        actor = self.session_actor(token)
        with closing(self._connect()) as db, db:
            db.execute("DELETE FROM sessions WHERE token_hash = ?", (_hash_token(token),))
        if actor:
            self.audit.record(actor, "sign_out", actor.name)

    # -- the first start ---------------------------------------------------------
    def first_admin_link(self) -> str | None:
        """A one-time sign-in token for `admin` while no admin can sign in with a password: on a database without
        accounts it creates `admin`; while `admin` has still not set a password (its first link was spent, e.g. by
        a reload before the password was set) it replaces the earlier links. Else None."""
        with closing(self._connect()) as db, db:
            if not db.execute("SELECT 1 FROM accounts LIMIT 1").fetchone():
                db.execute("INSERT INTO accounts (name, role, password_hash, created) VALUES (?,?,?,?)",
                           (ADMIN, "admin", "", _now().isoformat(timespec="seconds")))
                created = True
            elif db.execute("SELECT 1 FROM accounts WHERE role = 'admin' AND password_hash != '' AND disabled = 0 "
                            "LIMIT 1").fetchone():
                return None  # an admin signs in with a password: accounts are theirs to manage
            elif db.execute("SELECT 1 FROM accounts WHERE name = ? AND role = 'admin' AND disabled = 0",
                            (ADMIN,)).fetchone():
                db.execute("DELETE FROM sessions WHERE name = ? AND kind = 'link'", (ADMIN,))
                created = False
            else:
                return None
        if created:
            self.audit.record(Actor("system", "admin"), "account_saved", ADMIN, role="admin", new=True)
        return self._new_token(ADMIN, "link", LINK_HOURS)

    def use_link(self, token: str) -> tuple[Actor, str]:
        """Trade a one-time sign-in link's token for a session; the link is spent."""
        with closing(self._connect()) as db, db:
            row = db.execute("SELECT name, expires FROM sessions WHERE token_hash = ? AND kind = 'link'",
                             (_hash_token(token),)).fetchone()
            db.execute("DELETE FROM sessions WHERE token_hash = ? AND kind = 'link'", (_hash_token(token),))
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
        with closing(self._connect()) as db, db:
            db.execute("DELETE FROM sessions WHERE expires < ?", (_now().isoformat(timespec="seconds"),))
            db.execute("INSERT INTO sessions (token_hash, name, kind, expires) VALUES (?,?,?,?)",
                       (_hash_token(token), name, kind, expires))
        return token

    def _count_attempt(self, name: str) -> int:
        """Count this attempt as a failure before its password is checked (a right password clears the count), in
        one write transaction: of any number of attempts sent at once, MAX_FAILURES get a check. Returns the
        attempt's number in the window; SignInError once the account is locked."""
        now = _now()
        since = (now - timedelta(seconds=FAILURE_WINDOW_S)).isoformat(timespec="seconds")
        with closing(connect(self.path)) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("DELETE FROM sign_in_failures WHERE time < ?", (since,))  # the table stays one window long
                times = [r[0] for r in db.execute("SELECT time FROM sign_in_failures WHERE name = ? ORDER BY time",
                                                  (name,))]
                if len(times) < MAX_FAILURES:
                    db.execute("INSERT INTO sign_in_failures (name, time) VALUES (?, ?)",
                               (name, now.isoformat(timespec="seconds")))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
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
        with closing(connect(self.path)) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute("SELECT attempts, names FROM unknown_sign_ins WHERE window = ?", (window,)).fetchone()
                earlier = []
                if row is None:
                    earlier = [{"window": r["window"], "attempts": r["attempts"], "names": json.loads(r["names"])}
                               for r in db.execute("SELECT * FROM unknown_sign_ins WHERE window < ? ORDER BY window",
                                                   (window,))]
                    db.execute("DELETE FROM unknown_sign_ins WHERE window < ?", (window,))
                    db.execute("INSERT INTO unknown_sign_ins (window, attempts, names) VALUES (?, 1, ?)",
                               (window, json.dumps([name[:100]])))
                else:
                    names = json.loads(row["names"])
                    if name[:100] not in names and len(names) < UNKNOWN_NAMES_KEPT:
                        names.append(name[:100])
                    db.execute("UPDATE unknown_sign_ins SET attempts = attempts + 1, names = ? WHERE window = ?",
                               (json.dumps(names), window))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        if row is None:  # the earlier windows' first failures were recorded already: count the rest
            self.audit.record(Actor(name[:100] or "?", ""), "sign_in_failed", name[:100], unknown_account=True,
                              window=window, earlier_windows=[dict(e, attempts=e["attempts"] - 1) for e in earlier])

    def _clear_failures(self, name: str) -> None:
        with closing(self._connect()) as db, db:
            db.execute("DELETE FROM sign_in_failures WHERE name = ?", (name,))


def open_accounts(path: str | Path | None = None) -> Accounts:
    """The accounts in the inspection database ($DEFECT_DB, else <data folder>/inspections.sqlite)."""
    from defect_model.common.places import default_db_path

    return Accounts(path if path is not None else default_db_path())


def audit_log(path: str | Path | None = None) -> AuditLog:
    from defect_model.common.places import default_db_path

    return AuditLog(path if path is not None else default_db_path())


def terminal_actor() -> Actor:
    """Whoever runs a command in a terminal on the server: they can read and write every file already."""
    import getpass

    return Actor(f"{getpass.getuser()} (terminal)", "admin")

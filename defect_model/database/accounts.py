"""The statements of accounts, sign-in sessions and sign-in failures (access/accounts.py holds the policy:
roles, hashing, lockout)."""

from __future__ import annotations

import json

from sqlalchemy import delete, insert, select, update

from defect_model.database.engine import Database
from defect_model.database.schema import accounts, sessions, sign_in_failures, unknown_sign_ins

A, S, F, U = accounts.c, sessions.c, sign_in_failures.c, unknown_sign_ins.c


def listing(db: Database) -> list[dict]:
    with db.read() as conn:
        return [dict(r) for r in conn.execute(select(A.name, A.role, A.created, A.disabled).order_by(A.name))
                .mappings()]


def account(db: Database, name: str) -> dict | None:
    """name, role, password_hash, disabled of one account, or None."""
    with db.read() as conn:
        row = conn.execute(select(A.name, A.role, A.password_hash, A.disabled).where(A.name == name)).mappings()
        found = row.first()
    return dict(found) if found else None


def save(db: Database, name: str, role: str, password_hash: str | None, created: str) -> bool:
    """Create the account or change its role (and password hash when given), enabling it. True when it existed."""
    with db.write("accounts") as conn:
        exists = conn.execute(select(A.name).where(A.name == name)).first() is not None
        if exists:
            values = {"role": role, "disabled": 0, **({"password_hash": password_hash} if password_hash else {})}
            conn.execute(update(accounts).where(A.name == name).values(values))
        else:
            conn.execute(insert(accounts).values(name=name, role=role, password_hash=password_hash or "",
                                                 created=created))
    return exists


def disable(db: Database, name: str) -> None:
    with db.write() as conn:
        conn.execute(update(accounts).where(A.name == name).values(disabled=1))
        conn.execute(delete(sessions).where(S.name == name))


def set_password(db: Database, name: str, password_hash: str) -> None:
    with db.write() as conn:
        conn.execute(update(accounts).where(A.name == name).values(password_hash=password_hash))


def session(db: Database, token_hash: str, kind: str) -> dict | None:
    with db.read() as conn:
        found = conn.execute(select(S.name, S.expires).where(S.token_hash == token_hash, S.kind == kind)
                             ).mappings().first()
    return dict(found) if found else None


def end_session(db: Database, token_hash: str) -> None:
    with db.write() as conn:
        conn.execute(delete(sessions).where(S.token_hash == token_hash))


def take_link(db: Database, token_hash: str) -> dict | None:
    """The one-time link's name and expiry, deleted in the same transaction (spent), or None."""
    with db.write("sessions") as conn:
        found = conn.execute(select(S.name, S.expires).where(S.token_hash == token_hash, S.kind == "link")
                             ).mappings().first()
        conn.execute(delete(sessions).where(S.token_hash == token_hash, S.kind == "link"))
    return dict(found) if found else None


def new_session(db: Database, token_hash: str, name: str, kind: str, expires: str, now: str) -> None:
    """Store a token's hash; expired ones go at the same time."""
    with db.write() as conn:
        conn.execute(delete(sessions).where(S.expires < now))
        conn.execute(insert(sessions).values(token_hash=token_hash, name=name, kind=kind, expires=expires))


def first_admin(db: Database, admin: str, created: str) -> str | None:
    """The first start's admin account: "created" (the database had no account), "reset" (`admin` has set no
    password yet: its earlier links are deleted), or None (an admin signs in with a password, or `admin` is no
    longer an enabled admin)."""
    with db.write("accounts", "sessions") as conn:
        if conn.execute(select(A.name).limit(1)).first() is None:
            conn.execute(insert(accounts).values(name=admin, role="admin", password_hash="", created=created))
            return "created"
        if conn.execute(select(A.name).where(A.role == "admin", A.password_hash != "", A.disabled == 0).limit(1)
                        ).first():
            return None
        if conn.execute(select(A.name).where(A.name == admin, A.role == "admin", A.disabled == 0)).first():
            conn.execute(delete(sessions).where(S.name == admin, S.kind == "link"))
            return "reset"
        return None


def count_failure(db: Database, name: str, since: str, now: str, most: int) -> list[str]:
    """In one transaction: forget failures older than `since`, read `name`'s failures in the window (oldest
    first), and count this attempt unless `most` are counted already. Returns the times read."""
    with db.write("sign_in_failures") as conn:
        conn.execute(delete(sign_in_failures).where(F.time < since))  # the table stays one window long
        times = [r[0] for r in conn.execute(select(F.time).where(F.name == name).order_by(F.time))]
        if len(times) < most:
            conn.execute(insert(sign_in_failures).values(name=name, time=now))
    return times


def clear_failures(db: Database, name: str) -> None:
    with db.write() as conn:
        conn.execute(delete(sign_in_failures).where(F.name == name))


def unknown_failure(db: Database, window: str, name: str, kept: int) -> list[dict] | None:
    """Count a failure for a name without an account in `window` (keeping up to `kept` names). For the window's
    first failure: the earlier windows' records (then deleted), oldest first; for a later one: None."""
    with db.write("unknown_sign_ins") as conn:
        row = conn.execute(select(U.attempts, U.names).where(U.window == window)).mappings().first()
        if row is None:
            earlier = [{"window": r["window"], "attempts": r["attempts"], "names": json.loads(r["names"])}
                       for r in conn.execute(select(unknown_sign_ins).where(U.window < window)
                                             .order_by(U.window)).mappings()]
            conn.execute(delete(unknown_sign_ins).where(U.window < window))
            conn.execute(insert(unknown_sign_ins).values(window=window, attempts=1, names=json.dumps([name])))
            return earlier
        names = json.loads(row["names"])
        if name not in names and len(names) < kept:
            names.append(name)
        conn.execute(update(unknown_sign_ins).where(U.window == window)
                     .values(attempts=U.attempts + 1, names=json.dumps(names)))
        return None

"""Accounts, sign-in and roles (defect_model.access.accounts)."""

import pytest

from database_support import raw_sql

from defect_model.access import accounts as accounts_module
from defect_model.access.accounts import (Accounts, Actor, PermissionDenied, SignInError, allowed, require, terminal_actor)
from defect_model.access.audit import verify

ROOT_ADMIN = Actor("root", "admin")


@pytest.fixture()
def accounts(database) -> Accounts:
    """Accounts on each backend (conftest's `database`)."""
    return Accounts(database)


def test_roles_include_what_the_role_below_may_do():
    assert allowed("inspector", "inspect") and not allowed("inspector", "train")
    assert allowed("engineer", "train") and allowed("engineer", "relabel") and not allowed("engineer", "activate")
    assert all(allowed("admin", action) for action in accounts_module.PERMISSIONS)
    assert not allowed("visitor", "inspect")
    with pytest.raises(PermissionDenied, match="Sign in first"):
        require(None, "inspect")
    with pytest.raises(PermissionDenied, match="eng \\(engineer\\) may not activate: that needs the admin role"):
        require(Actor("eng", "engineer"), "activate")


def test_a_password_signs_in_and_the_session_ends_with_sign_out(accounts):
    accounts.save(ROOT_ADMIN, "eng", "engineer", "a long password")
    actor, token = accounts.sign_in(" eng ", "a long password")
    assert actor == Actor("eng", "engineer") and accounts.session_actor(token) == actor
    # only a hash of the token and an Argon2 hash are stored
    assert raw_sql(accounts.path, "SELECT COUNT(*) FROM sessions WHERE token_hash = ?", (token,))[0][0] == 0
    assert raw_sql(accounts.path, "SELECT password_hash FROM accounts WHERE name='eng'")[0][0].startswith("$argon2id$")
    accounts.sign_out(token)
    assert accounts.session_actor(token) is None


def test_wrong_passwords_are_refused_and_repeated_failures_lock_the_account_for_a_while(accounts):
    accounts.save(ROOT_ADMIN, "eng", "engineer", "a long password")
    for _ in range(accounts_module.MAX_FAILURES):
        with pytest.raises(SignInError, match="Wrong account name or password"):
            accounts.sign_in("eng", "guess")
    with pytest.raises(SignInError, match="Too many failed sign-ins for 'eng'. Wait"):
        accounts.sign_in("eng", "a long password")  # even the right one, until the window has passed
    with pytest.raises(SignInError, match="Wrong account name or password"):
        accounts.sign_in("nobody", "x")  # an unknown name reads the same as a wrong password
    failed = [e for e in accounts.audit.events("sign_in_failed")]
    assert len(failed) == accounts_module.MAX_FAILURES + 1


def test_sessions_expire(accounts, monkeypatch):
    accounts.save(ROOT_ADMIN, "eng", "engineer", "a long password")
    monkeypatch.setattr(accounts_module, "SESSION_HOURS", -1)
    _, token = accounts.sign_in("eng", "a long password")
    assert accounts.session_actor(token) is None


def test_a_disabled_account_loses_its_sessions(accounts):
    accounts.save(ROOT_ADMIN, "eng", "engineer", "a long password")
    _, token = accounts.sign_in("eng", "a long password")
    accounts.disable(ROOT_ADMIN, "eng")
    assert accounts.session_actor(token) is None
    with pytest.raises(SignInError):
        accounts.sign_in("eng", "a long password")


def test_only_an_admin_manages_accounts_and_short_passwords_are_refused(accounts):
    with pytest.raises(PermissionDenied, match="may not manage accounts"):
        accounts.save(Actor("eng", "engineer"), "mallory", "admin", "a long password")
    with pytest.raises(ValueError, match="at least 10 characters"):
        accounts.save(ROOT_ADMIN, "eng", "engineer", "short")
    with pytest.raises(ValueError, match="not one of inspector, engineer, admin"):
        accounts.save(ROOT_ADMIN, "eng", "owner", "a long password")
    assert accounts.list() == []


def test_the_first_start_makes_an_admin_with_a_one_time_link(accounts):
    spent_unused = accounts.first_admin_link()
    token = accounts.first_admin_link()  # no admin can sign in with a password yet: a new link replaces the first
    assert spent_unused and token and token != spent_unused
    with pytest.raises(SignInError, match="used already or has expired"):
        accounts.use_link(spent_unused)
    actor, session = accounts.use_link(token)
    assert actor == Actor("admin", "admin") and accounts.session_actor(session) == actor
    with pytest.raises(SignInError, match="used already or has expired.*accounts first-link"):
        accounts.use_link(token)
    assert not accounts.has_password("admin")
    # a reload before the password was set spent the link: the server's first-link gives the admin a way back in
    again, _ = accounts.use_link(accounts.first_admin_link())
    accounts.set_own_password(again, "the admin's own password")
    assert accounts.first_admin_link() is None  # an admin signs in with a password now: no more links
    assert accounts.sign_in("admin", "the admin's own password")[0] == actor
    assert [row["name"] for row in accounts.list()] == ["admin"]  # one account however many links


def test_identity_provider_users_get_their_accounts_role_else_inspector(accounts):
    accounts.save(ROOT_ADMIN, "lee@plant.example", "engineer")
    assert accounts.sign_in_external("lee@plant.example")[0].role == "engineer"
    actor, token = accounts.sign_in_external("new@plant.example")
    assert actor.role == "inspector" and accounts.session_actor(token) == actor


def test_every_account_change_and_sign_in_is_in_a_verified_audit_trail(accounts):
    accounts.save(ROOT_ADMIN, "eng", "engineer", "a long password")
    accounts.sign_in("eng", "a long password")
    assert [e["action"] for e in accounts.audit.events()][::-1] == ["account_saved", "sign_in"]
    assert verify(accounts.path) == []
    assert terminal_actor().role == "admin" and terminal_actor().name.endswith("(terminal)")


class CountingHasher:
    """The account's PasswordHasher, counting the checks it runs and how many run at once (each a little slower, so
    that parallel sign-ins overlap as they do on a loaded server)."""

    def __init__(self, inner):
        import threading

        self.inner, self.lock = inner, threading.Lock()
        self.checks = self.running = self.most_at_once = 0

    def _count(self, work):
        import time

        with self.lock:
            self.checks += 1
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        try:
            time.sleep(0.2)
            return work()
        finally:
            with self.lock:
                self.running -= 1

    def verify(self, stored, password):
        return self._count(lambda: self.inner.verify(stored, password))

    def hash(self, password):
        return self._count(lambda: self.inner.hash(password))


def _at_once(count, sign_in):
    from concurrent.futures import ThreadPoolExecutor

    def attempt(i):
        try:
            sign_in(i)
        except SignInError as exc:
            return str(exc)
        return "signed in"

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(attempt, range(count)))


def test_a_burst_of_parallel_wrong_passwords_gets_no_more_checks_than_the_lockout_allows(accounts):
    accounts.save(ROOT_ADMIN, "eng", "engineer", "a long password")
    accounts.hasher = CountingHasher(accounts.hasher)
    outcomes = _at_once(20, lambda i: accounts.sign_in("eng", f"guess {i}"))
    assert accounts.hasher.checks == accounts_module.MAX_FAILURES
    assert outcomes.count("Wrong account name or password.") == accounts_module.MAX_FAILURES
    assert sum("Too many failed sign-ins" in o for o in outcomes) == 20 - accounts_module.MAX_FAILURES
    assert len(accounts.audit.events("sign_in_failed")) == accounts_module.MAX_FAILURES


def test_password_checks_run_a_few_at_a_time(accounts):
    """Argon2id takes 64 MiB per check: a burst over many names must not run them all at once."""
    accounts.hasher = CountingHasher(accounts.hasher)
    _at_once(10, lambda i: accounts.sign_in(f"name-{i}", "guess"))
    assert accounts.hasher.checks == 10 and accounts.hasher.most_at_once <= accounts_module.PASSWORD_CHECKS


def test_failures_for_unknown_names_reach_the_audit_trail_once_per_window(accounts, monkeypatch):
    from datetime import datetime, timedelta, timezone

    start = datetime(2026, 12, 7, 1, 0, 10, tzinfo=timezone.utc)
    monkeypatch.setattr(accounts_module, "_now", lambda: start)
    for i in range(60):
        with pytest.raises(SignInError, match="Wrong account name or password"):
            accounts.sign_in(f"made-up-{i}", "guess")
    (first,) = accounts.audit.events("sign_in_failed")
    assert first["target"] == "made-up-0" and first["detail"]["unknown_account"] is True
    monkeypatch.setattr(accounts_module, "_now", lambda: start + timedelta(minutes=16))
    with pytest.raises(SignInError):
        accounts.sign_in("one-more", "guess")
    latest, _ = accounts.audit.events("sign_in_failed")
    (earlier,) = latest["detail"]["earlier_windows"]
    assert earlier["attempts"] == 59 and earlier["names"][:2] == ["made-up-0", "made-up-1"]
    assert len(earlier["names"]) == accounts_module.UNKNOWN_NAMES_KEPT
    # what is kept to count stays one window long
    assert raw_sql(accounts.path, "SELECT COUNT(*) FROM sign_in_failures")[0][0] == 1
    assert verify(accounts.path) == []

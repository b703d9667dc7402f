"""pytest fixtures for the Gatehouse compatibility suite.

The real firebase-admin SDK runs in emulator mode (FIREBASE_AUTH_EMULATOR_HOST):
it then sends `Authorization: Bearer owner` to
http://$FIREBASE_AUTH_EMULATOR_HOST/identitytoolkit.googleapis.com/v1/projects/<p>/...
and never needs real credentials (the app is initialised with only a projectId;
Application Default Credentials are created lazily and never loaded).
"""

import os
import sys
import uuid

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import firebase_admin  # noqa: E402
from firebase_admin import auth  # noqa: E402

import gatehouse_compat as gc  # noqa: E402

_CFG = None


def pytest_configure(config):
    global _CFG
    try:
        _CFG = gc.load_config()
    except RuntimeError as exc:
        raise pytest.UsageError(str(exc)) from exc


def pytest_report_header(config):
    if _CFG is None:
        return None
    return (
        f"gatehouse: {_CFG.url} project={_CFG.project} other={_CFG.other_project} "
        f"firebase-admin={firebase_admin.__version__}"
    )


@pytest.fixture(scope="session")
def cfg():
    return _CFG


def _init_app(project):
    app = firebase_admin.initialize_app(
        options={"projectId": project, "httpTimeout": gc.HTTP_TIMEOUT},
        name=f"gatehouse-compat-{project}-{uuid.uuid4().hex}",
    )
    return app


@pytest.fixture(scope="session")
def app(cfg):
    a = _init_app(cfg.project)
    yield a
    firebase_admin.delete_app(a)


@pytest.fixture(scope="session")
def other_app(cfg):
    a = _init_app(cfg.other_project)
    yield a
    firebase_admin.delete_app(a)


@pytest.fixture(scope="session")
def rest(cfg):
    return gc.Rest(cfg)


class Cleanup:
    """Deletes the accounts a test created (and only those) when it ends."""

    def __init__(self):
        self._items = []  # (uid, app)

    def add(self, uid, app):
        self._items.append((uid, app))
        return uid

    def run(self):
        for uid, a in reversed(self._items):
            try:
                auth.delete_user(uid, app=a)
            except auth.UserNotFoundError:
                pass
            except Exception as exc:  # pragma: no cover - best effort
                print(f"cleanup: could not delete {uid}: {exc!r}", file=sys.stderr)


@pytest.fixture
def cleanup():
    c = Cleanup()
    yield c
    c.run()


@pytest.fixture
def make_user(app, cleanup):
    """Creates a password user through the Admin SDK; returns (UserRecord, password)."""

    def _make(password=None, **kwargs):
        password = password or "pw-" + gc.rand_suffix(12)
        kwargs.setdefault("email", gc.unique_email())
        user = auth.create_user(password=password, app=app, **kwargs)
        cleanup.add(user.uid, app)
        return user, password

    return _make

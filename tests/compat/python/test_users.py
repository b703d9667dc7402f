"""Admin user management: create/get/update/disable/list/delete (cases 1, 2, 4, 5)."""

import pytest
from firebase_admin import auth

import gatehouse_compat as gc


# ------------------------------------------------------------------ case 1

def test_create_get_update_roundtrip(app, make_user, rest):
    email = gc.unique_email("rt")
    user, password = make_user(email=email, display_name="Compat Alice")

    assert user.uid and isinstance(user.uid, str)
    assert user.email == email
    assert user.display_name == "Compat Alice"
    assert user.email_verified is False
    assert user.disabled is False
    assert user.user_metadata.creation_timestamp and user.user_metadata.creation_timestamp > 0
    assert "password" in [p.provider_id for p in user.provider_data]

    got = auth.get_user(user.uid, app=app)
    assert (got.uid, got.email, got.display_name) == (user.uid, email, "Compat Alice")

    # Email lookup is case-insensitive.
    by_email = auth.get_user_by_email(email.upper(), app=app)
    assert by_email.uid == user.uid
    assert auth.get_user_by_email(email, app=app).uid == user.uid

    phone = gc.unique_phone()
    updated = auth.update_user(
        user.uid, display_name="Compat Bob", email_verified=True, phone_number=phone, app=app
    )
    assert updated.uid == user.uid
    assert updated.display_name == "Compat Bob"
    assert updated.email_verified is True
    assert updated.phone_number == phone

    again = auth.get_user(user.uid, app=app)
    assert again.display_name == "Compat Bob"
    assert again.email_verified is True
    assert again.phone_number == phone
    assert again.email == email
    providers = {p.provider_id for p in again.provider_data}
    assert {"password", "phone"} <= providers, providers
    assert auth.get_user_by_phone_number(phone, app=app).uid == user.uid

    # The password set at creation works for a client sign-in, and the ID token reflects
    # the profile.
    body = rest.sign_in_ok(email, password)
    assert body["localId"] == user.uid
    claims = gc.jwt_payload(body["idToken"])
    assert claims["sub"] == user.uid
    assert claims["email"] == email
    assert claims["email_verified"] is True
    assert claims["name"] == "Compat Bob"
    assert claims["firebase"]["sign_in_provider"] == "password"

    # Sign-in metadata is visible to the Admin SDK (lastLoginAt ms string, lastRefreshAt RFC 3339).
    meta = auth.get_user(user.uid, app=app).user_metadata
    assert meta.last_sign_in_timestamp and meta.last_sign_in_timestamp >= meta.creation_timestamp
    assert meta.last_refresh_timestamp and meta.last_refresh_timestamp > 0


def test_duplicate_email_is_rejected(app, make_user):
    user, _ = make_user()
    with pytest.raises(auth.EmailAlreadyExistsError):
        auth.create_user(email=user.email, password="another-pass", app=app)


def test_get_unknown_user_raises(app):
    with pytest.raises(auth.UserNotFoundError):
        auth.get_user(gc.unique_uid("missing"), app=app)
    with pytest.raises(auth.UserNotFoundError):
        auth.get_user_by_email(gc.unique_email("missing"), app=app)


def test_create_user_with_explicit_uid(app, cleanup):
    uid = gc.unique_uid("explicit")
    user = auth.create_user(uid=uid, email=gc.unique_email(), password="secret123", app=app)
    cleanup.add(uid, app)
    assert user.uid == uid
    with pytest.raises(auth.UidAlreadyExistsError):
        auth.create_user(uid=uid, app=app)


# ------------------------------------------------------------------ case 2

def test_disabled_user_cannot_sign_in(app, make_user, rest):
    user, password = make_user()
    first = rest.sign_in_ok(user.email, password)

    disabled = auth.update_user(user.uid, disabled=True, app=app)
    assert disabled.disabled is True
    assert auth.get_user(user.uid, app=app).disabled is True

    gc.assert_error(rest.sign_in_password(user.email, password), "USER_DISABLED")
    # A refresh token issued before the account was disabled stops working too.
    gc.assert_error(rest.refresh(first["refreshToken"]), "USER_DISABLED")

    enabled = auth.update_user(user.uid, disabled=False, app=app)
    assert enabled.disabled is False
    body = rest.sign_in_ok(user.email, password)
    assert body["localId"] == user.uid


# ------------------------------------------------------------------ case 4

def _sortable_uids(n):
    # A shared low prefix: servers that page in uid order put these on the first pages,
    # so the walk below stays short even when the server holds many other accounts.
    base = "000compat" + gc.rand_suffix(12)
    return [f"{base}{i:02d}" for i in range(n)]


MAX_PAGES = 20000  # bound: at 2 users/page, scans up to 40k accounts


def test_list_users_paging(app, cleanup):
    uids = _sortable_uids(5)
    for uid in uids:
        auth.create_user(uid=uid, email=f"{uid}@gatehouse-compat.test", app=app)
        cleanup.add(uid, app)
    wanted = set(uids)

    # Walk pages of two with get_next_page().
    seen = []
    page = auth.list_users(max_results=2, app=app)
    pages = 0
    while page is not None:
        pages += 1
        assert pages <= MAX_PAGES, "list_users paging did not terminate"
        assert len(page.users) <= 2, f"page has {len(page.users)} users, max_results=2"
        seen.extend(u.uid for u in page.users)
        if wanted <= set(seen):
            break
        if page.has_next_page:
            assert page.next_page_token
        else:
            assert page.next_page_token == ""
        page = page.get_next_page()
    assert wanted <= set(seen), f"missing from list_users: {wanted - set(seen)}"
    assert len(seen) == len(set(seen)), "a uid appeared on two pages"
    assert pages >= 3, "five users at two per page need at least three pages"

    # iterate_all() over pages of two yields every created uid exactly once.
    found = []
    count = 0
    for u in auth.list_users(max_results=2, app=app).iterate_all():
        count += 1
        assert count <= 2 * MAX_PAGES
        if u.uid in wanted:
            found.append(u.uid)
            if len(found) == len(wanted):
                break
    assert sorted(found) == sorted(uids)

    # Listed records carry the stored profile.
    page = auth.list_users(max_results=1000, app=app)
    by_uid = {}
    while page is not None:
        for u in page.users:
            assert u.uid not in by_uid, f"duplicate uid {u.uid} across pages"
            by_uid[u.uid] = u
        if wanted <= set(by_uid):
            break
        page = page.get_next_page()
    for uid in uids:
        assert by_uid[uid].email == f"{uid}@gatehouse-compat.test"


def test_list_users_rejects_bad_page_size(app):
    with pytest.raises(ValueError):
        auth.list_users(max_results=1001, app=app)


# ------------------------------------------------------------------ case 5

def test_delete_user(app, make_user, rest):
    user, password = make_user()
    auth.delete_user(user.uid, app=app)
    with pytest.raises(auth.UserNotFoundError):
        auth.get_user(user.uid, app=app)
    with pytest.raises(auth.UserNotFoundError):
        auth.delete_user(user.uid, app=app)
    code = gc.assert_error(
        rest.sign_in_password(user.email, password), "EMAIL_NOT_FOUND", "INVALID_LOGIN_CREDENTIALS"
    )
    assert code


def test_delete_users_batch(app, make_user):
    users = [make_user()[0] for _ in range(3)]
    uids = [u.uid for u in users]
    result = auth.delete_users(uids, app=app)
    assert result.success_count == 3
    assert result.failure_count == 0
    assert result.errors == []
    for uid in uids:
        with pytest.raises(auth.UserNotFoundError):
            auth.get_user(uid, app=app)
    lookup = auth.get_users([auth.UidIdentifier(uid) for uid in uids], app=app)
    assert lookup.users == []
    assert {i.uid for i in lookup.not_found} == set(uids)


def test_delete_users_skips_unknown_uids(app, make_user):
    user, _ = make_user()
    result = auth.delete_users([user.uid, gc.unique_uid("never")], app=app)
    assert result.failure_count == 0
    with pytest.raises(auth.UserNotFoundError):
        auth.get_user(user.uid, app=app)


# ------------------------------------------------------------------ projects

def test_projects_are_isolated_admin(app, other_app, cleanup):
    email = gc.unique_email("iso")
    user = auth.create_user(email=email, password="secret123", app=app)
    cleanup.add(user.uid, app)
    with pytest.raises(auth.UserNotFoundError):
        auth.get_user(user.uid, app=other_app)
    with pytest.raises(auth.UserNotFoundError):
        auth.get_user_by_email(email, app=other_app)
    # The same email can exist independently in the other project.
    twin = auth.create_user(email=email, password="other-pass", app=other_app)
    cleanup.add(twin.uid, other_app)
    assert twin.uid != user.uid
    assert auth.get_user_by_email(email, app=app).uid == user.uid
    assert auth.get_user_by_email(email, app=other_app).uid == twin.uid


def test_api_key_selects_project(app, cleanup, rest, cfg):
    """GATEHOUSE_OTHER_API_KEY acts on the other project (the emulator maps every key to
    its default project, so this fails there)."""
    email = gc.unique_email("isokey")
    user = auth.create_user(email=email, password="secret123", app=app)
    cleanup.add(user.uid, app)
    gc.assert_error(
        rest.sign_in_password(email, "secret123", key=cfg.other_api_key),
        "EMAIL_NOT_FOUND", "INVALID_LOGIN_CREDENTIALS",
    )
    assert rest.sign_in_ok(email, "secret123")["localId"] == user.uid

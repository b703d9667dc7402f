"""ID tokens, refresh tokens, custom claims, revocation, custom tokens (cases 3, 7, 9)."""

import time

import pytest
from firebase_admin import auth

import gatehouse_compat as gc


def _check_refresh_response(body, uid):
    # Secure Token API answers in snake_case.
    assert body["id_token"] and body["refresh_token"], body
    assert body["access_token"] == body["id_token"]
    assert body["token_type"] == "Bearer"
    assert body["user_id"] == uid
    assert str(body["expires_in"]) == "3600"
    assert isinstance(body["expires_in"], str)


# ------------------------------------------------------------------ basics

def test_password_sign_in_and_refresh(app, make_user, rest, cfg):
    user, password = make_user()
    body = rest.sign_in_ok(user.email, password)
    assert body["localId"] == user.uid
    assert body["email"] == user.email
    assert body["registered"] is True
    assert body["expiresIn"] == "3600"

    claims = gc.jwt_payload(body["idToken"])
    assert claims["aud"] == cfg.project
    assert claims["iss"] == f"https://securetoken.google.com/{cfg.project}"
    assert claims["sub"] == claims["user_id"] == user.uid
    assert claims["exp"] - claims["iat"] == 3600
    assert claims["auth_time"] <= claims["iat"]
    assert claims["firebase"]["identities"]["email"] == [user.email]

    # The Admin SDK accepts the token (emulator mode: payload checks only).
    decoded = auth.verify_id_token(body["idToken"], app=app)
    assert decoded["uid"] == user.uid

    refreshed = rest.refresh(body["refreshToken"])
    assert refreshed.status_code == 200, refreshed.text
    rbody = refreshed.json()
    _check_refresh_response(rbody, user.uid)
    rclaims = gc.jwt_payload(rbody["id_token"])
    assert rclaims["sub"] == user.uid
    assert rclaims["auth_time"] == claims["auth_time"]  # refresh keeps the sign-in time
    assert auth.verify_id_token(rbody["id_token"], app=app, check_revoked=True)["uid"] == user.uid

    # The server accepts its own token.
    look = rest.lookup(body["idToken"])
    assert look.status_code == 200, look.text
    users = look.json()["users"]
    assert len(users) == 1 and users[0]["localId"] == user.uid
    assert users[0]["email"] == user.email


def test_wrong_password_and_unknown_email(make_user, rest):
    user, _ = make_user()
    gc.assert_error(
        rest.sign_in_password(user.email, "definitely-wrong"),
        "INVALID_PASSWORD", "INVALID_LOGIN_CREDENTIALS",
    )
    gc.assert_error(
        rest.sign_in_password(gc.unique_email("nobody"), "whatever1"),
        "EMAIL_NOT_FOUND", "INVALID_LOGIN_CREDENTIALS",
    )


# ------------------------------------------------------------------ case 3

def test_custom_claims_reach_id_token(app, make_user, rest):
    user, password = make_user()
    before = rest.sign_in_ok(user.email, password)
    assert "role" not in gc.jwt_payload(before["idToken"])

    auth.set_custom_user_claims(user.uid, {"role": "editor", "level": 3}, app=app)
    assert auth.get_user(user.uid, app=app).custom_claims == {"role": "editor", "level": 3}

    body = rest.sign_in_ok(user.email, password)
    claims = gc.jwt_payload(body["idToken"])
    assert claims["role"] == "editor"
    assert claims["level"] == 3
    decoded = auth.verify_id_token(body["idToken"], app=app)
    assert decoded["role"] == "editor"

    # A refresh also picks up the current claims.
    refreshed = rest.refresh(before["refreshToken"])
    assert refreshed.status_code == 200, refreshed.text
    assert gc.jwt_payload(refreshed.json()["id_token"])["role"] == "editor"

    # Clearing the claims removes them from later tokens.
    auth.set_custom_user_claims(user.uid, None, app=app)
    assert not auth.get_user(user.uid, app=app).custom_claims
    cleared = gc.jwt_payload(rest.sign_in_ok(user.email, password)["idToken"])
    assert "role" not in cleared


def test_reserved_custom_claims_rejected_by_sdk(app, make_user):
    user, _ = make_user()
    with pytest.raises(ValueError):
        auth.set_custom_user_claims(user.uid, {"sub": "x"}, app=app)


# ------------------------------------------------------------------ case 7

def _revoke_after_sign_in(app, make_user, rest):
    user, password = make_user()
    old = rest.sign_in_ok(user.email, password)
    gc.wait_for_next_second()
    auth.revoke_refresh_tokens(user.uid, app=app)
    return user, password, old


def test_revoke_refresh_tokens_revokes_id_tokens(app, make_user, rest):
    user, password, old = _revoke_after_sign_in(app, make_user, rest)
    old_iat = gc.jwt_payload(old["idToken"])["iat"]

    record = auth.get_user(user.uid, app=app)
    assert record.tokens_valid_after_timestamp > old_iat * 1000
    assert record.tokens_valid_after_timestamp % 1000 == 0  # validSince is in seconds
    assert record.tokens_valid_after_timestamp <= (time.time() + 5) * 1000

    # Without the revocation check the SDK only looks at the payload.
    assert auth.verify_id_token(old["idToken"], app=app)["uid"] == user.uid
    with pytest.raises(auth.RevokedIdTokenError):
        auth.verify_id_token(old["idToken"], app=app, check_revoked=True)

    # The server itself refuses the revoked ID token.
    gc.assert_error(rest.lookup(old["idToken"]), "TOKEN_EXPIRED")

    fresh = rest.sign_in_ok(user.email, password)
    decoded = auth.verify_id_token(fresh["idToken"], app=app, check_revoked=True)
    assert decoded["uid"] == user.uid
    assert rest.lookup(fresh["idToken"]).status_code == 200

    refreshed = rest.refresh(fresh["refreshToken"])
    assert refreshed.status_code == 200, refreshed.text
    auth.verify_id_token(refreshed.json()["id_token"], app=app, check_revoked=True)


def test_revoke_refresh_tokens_invalidates_refresh_token(app, make_user, rest):
    """Production behaviour; the Auth emulator keeps old refresh tokens working."""
    _, _, old = _revoke_after_sign_in(app, make_user, rest)
    gc.assert_error(rest.refresh(old["refreshToken"]), "TOKEN_EXPIRED", "INVALID_REFRESH_TOKEN")


def test_disabled_user_fails_check_revoked(app, make_user, rest):
    user, password = make_user()
    token = rest.sign_in_ok(user.email, password)["idToken"]
    auth.update_user(user.uid, disabled=True, app=app)
    with pytest.raises(auth.UserDisabledError):
        auth.verify_id_token(token, app=app, check_revoked=True)


# ------------------------------------------------------------------ case 9

def test_custom_token_sign_in(app, cleanup, rest, cfg):
    uid = gc.unique_uid("custom")
    cleanup.add(uid, app)
    custom = auth.create_custom_token(uid, {"plan": "pro"}, app=app)
    assert isinstance(custom, bytes)

    # What the SDK sends in emulator mode: an unsigned JWT.
    header = gc.jwt_header(custom)
    assert header["alg"] == "none"
    payload = gc.jwt_payload(custom)
    assert payload["uid"] == uid
    assert payload["claims"] == {"plan": "pro"}
    assert payload["aud"] == (
        "https://identitytoolkit.googleapis.com/google.identity.identitytoolkit.v1.IdentityToolkit"
    )
    assert custom.decode().endswith(".")

    resp = rest.post(
        "signInWithCustomToken", {"token": custom.decode(), "returnSecureToken": True}
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["isNewUser"] is True
    assert body["idToken"] and body["refreshToken"]
    claims = gc.jwt_payload(body["idToken"])
    assert claims["plan"] == "pro"
    assert claims["sub"] == uid
    assert claims["firebase"]["sign_in_provider"] == "custom"
    assert claims["aud"] == cfg.project

    assert auth.get_user(uid, app=app).uid == uid
    assert auth.verify_id_token(body["idToken"], app=app, check_revoked=True)["plan"] == "pro"

    # Developer claims survive a refresh.
    refreshed = rest.refresh(body["refreshToken"])
    assert refreshed.status_code == 200, refreshed.text
    assert gc.jwt_payload(refreshed.json()["id_token"])["plan"] == "pro"

    # Second sign-in: existing user.
    again = rest.post("signInWithCustomToken", {"token": custom.decode(), "returnSecureToken": True})
    assert again.status_code == 200, again.text
    assert again.json()["isNewUser"] is False


def test_custom_token_with_wrong_audience_is_rejected(rest):
    token = ".".join([
        gc.json_segment({"alg": "none", "typ": "JWT"}),
        gc.json_segment({
            "aud": "https://example.com/not-identitytoolkit",
            "uid": gc.unique_uid("badaud"),
            "iat": int(time.time()),
            "exp": int(time.time()) + 3600,
        }),
        "",
    ])
    gc.assert_error(
        rest.post("signInWithCustomToken", {"token": token, "returnSecureToken": True}),
        "INVALID_CUSTOM_TOKEN",
    )

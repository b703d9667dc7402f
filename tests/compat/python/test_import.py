"""import_users with production password hashes (case 6).

Hash constructions follow Firebase's own import conventions (the ones the Admin SDK
integration tests check against production):
  SCRYPT (Firebase variant)  test vector from github.com/firebase/scrypt
  BCRYPT                     passwordHash = the full "$2b$..." string, no salt
  HMAC_SHA256                HMAC(key, password + salt)   (Admin SDKs send no passwordHashOrder)
  PBKDF2_SHA256              PBKDF2-HMAC-SHA256(password, salt, rounds, dkLen 64)
  STANDARD_SCRYPT            scrypt(password, salt, N=memory_cost, r=block_size,
                                    p=parallelization, dkLen=derived_key_length)

The Auth emulator stores imported hashes verbatim and only understands its own
"fakeHash:" format, so every test here except the plain-profile one fails against it.
"""

import base64
import hashlib
import hmac

import bcrypt
import pytest
from firebase_admin import auth

import gatehouse_compat as gc

# github.com/firebase/scrypt README test vector (standard base64).
SCRYPT_SIGNER_KEY = base64.b64decode(
    "jxspr8Ki0RYycVU8zykbdLGjFQ3McFUH0uiiTvC8pVMXAn210wjLNmdZJzxUECKbm0QsEmYUSDzZvpjeJ9WmXA=="
)
SCRYPT_SALT_SEPARATOR = base64.b64decode("Bw==")
SCRYPT_ROUNDS = 8
SCRYPT_MEM_COST = 14
SCRYPT_USER_SALT = base64.b64decode("42xEC+ixf3L2lw==")
SCRYPT_PASSWORD_HASH = base64.b64decode(
    "lSrfV15cpx95/sZS2W9c9Kp6i/LVgQNDNC/qzrCnh1SAyZvqmZqAjTdn3aoItz+VHjoZilo78198JAdRuid5lQ=="
)
SCRYPT_PASSWORD = "user1password"


def _import_one(app, cleanup, hash_alg, password_hash, salt=None):
    uid = gc.unique_uid("imp")
    email = f"{uid}@gatehouse-compat.test"
    record = auth.ImportUserRecord(
        uid=uid, email=email, password_hash=password_hash, password_salt=salt
    )
    cleanup.add(uid, app)
    result = auth.import_users([record], hash_alg=hash_alg, app=app)
    assert result.failure_count == 0, [(e.index, e.reason) for e in result.errors]
    assert result.success_count == 1
    assert result.errors == []
    got = auth.get_user(uid, app=app)
    assert got.email == email
    assert "password" in [p.provider_id for p in got.provider_data]
    return uid, email


def _assert_password_login(rest, uid, email, password):
    body = rest.sign_in_ok(email, password)
    assert body["localId"] == uid
    assert gc.jwt_payload(body["idToken"])["sub"] == uid
    gc.assert_error(
        rest.sign_in_password(email, password + "x"), "INVALID_PASSWORD", "INVALID_LOGIN_CREDENTIALS"
    )
    # The server may rehash to its own scheme at the first sign-in; the password keeps working.
    again = rest.sign_in_ok(email, password)
    assert again["localId"] == uid


def test_firebase_scrypt_vector_is_self_consistent():
    """Guards the constants above (and documents the algorithm): no server involved."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    dk = hashlib.scrypt(
        SCRYPT_PASSWORD.encode(),
        salt=SCRYPT_USER_SALT + SCRYPT_SALT_SEPARATOR,
        n=2 ** SCRYPT_MEM_COST,
        r=SCRYPT_ROUNDS,
        p=1,
        dklen=64,
        maxmem=64 * 1024 * 1024,
    )
    enc = Cipher(algorithms.AES(dk[:32]), modes.CTR(b"\0" * 16)).encryptor()
    assert enc.update(SCRYPT_SIGNER_KEY) + enc.finalize() == SCRYPT_PASSWORD_HASH


def test_import_firebase_scrypt(app, cleanup, rest):
    hash_alg = auth.UserImportHash.scrypt(
        key=SCRYPT_SIGNER_KEY,
        salt_separator=SCRYPT_SALT_SEPARATOR,
        rounds=SCRYPT_ROUNDS,
        memory_cost=SCRYPT_MEM_COST,
    )
    uid, email = _import_one(app, cleanup, hash_alg, SCRYPT_PASSWORD_HASH, SCRYPT_USER_SALT)
    _assert_password_login(rest, uid, email, SCRYPT_PASSWORD)


def test_import_bcrypt(app, cleanup, rest):
    password = "bcrypt-" + gc.rand_suffix(8)
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=8))
    assert hashed.startswith(b"$2")
    uid, email = _import_one(app, cleanup, auth.UserImportHash.bcrypt(), hashed)
    _assert_password_login(rest, uid, email, password)


def test_import_hmac_sha256(app, cleanup, rest):
    password = "hmac-" + gc.rand_suffix(8)
    key = b"compat-secret-" + gc.rand_suffix(8).encode()
    salt = b"salt-" + gc.rand_suffix(8).encode()
    digest = hmac.new(key, password.encode() + salt, hashlib.sha256).digest()
    uid, email = _import_one(app, cleanup, auth.UserImportHash.hmac_sha256(key=key), digest, salt)
    _assert_password_login(rest, uid, email, password)


def test_import_pbkdf2_sha256(app, cleanup, rest):
    password = "pbkdf2-" + gc.rand_suffix(8)
    salt = b"salt-" + gc.rand_suffix(8).encode()
    rounds = 1000
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, rounds, dklen=64)
    uid, email = _import_one(
        app, cleanup, auth.UserImportHash.pbkdf2_sha256(rounds=rounds), digest, salt
    )
    _assert_password_login(rest, uid, email, password)


def test_import_standard_scrypt(app, cleanup, rest):
    password = "stdscrypt-" + gc.rand_suffix(8)
    salt = b"salt-" + gc.rand_suffix(8).encode()
    n, r, p, dklen = 1024, 8, 16, 64
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=dklen)
    hash_alg = auth.UserImportHash.standard_scrypt(
        memory_cost=n, parallelization=p, block_size=r, derived_key_length=dklen
    )
    uid, email = _import_one(app, cleanup, hash_alg, digest, salt)
    _assert_password_login(rest, uid, email, password)


def test_import_users_without_passwords(app, cleanup):
    """Profile-only import (no hash_alg needed); works on the emulator too."""
    uids = [gc.unique_uid("impplain") for _ in range(2)]
    records = [
        auth.ImportUserRecord(
            uid=uid,
            email=f"{uid}@gatehouse-compat.test",
            display_name=f"Imported {i}",
            email_verified=True,
            custom_claims={"imported": True},
        )
        for i, uid in enumerate(uids)
    ]
    for uid in uids:
        cleanup.add(uid, app)
    result = auth.import_users(records, app=app)
    assert (result.success_count, result.failure_count) == (2, 0)
    for i, uid in enumerate(uids):
        got = auth.get_user(uid, app=app)
        assert got.email == f"{uid}@gatehouse-compat.test"
        assert got.display_name == f"Imported {i}"
        assert got.email_verified is True
        assert got.custom_claims == {"imported": True}


def test_import_requires_hash_algorithm_in_sdk(app):
    record = auth.ImportUserRecord(uid=gc.unique_uid("nohash"), password_hash=b"abc")
    with pytest.raises(ValueError):
        auth.import_users([record], app=app)

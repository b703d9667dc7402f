//! The answer of `accounts:signInWithIdp`: Identity Toolkit's `VerifyAssertionResponse`.

use gatehouse_identity::IdpSignedIn;
use serde_json::{Value, json};

/// The `VerifyAssertionResponse` for a federated sign-in. With `need_confirmation` the e-mail
/// belongs to another account: its e-mail is shown, not its id, and the upstream tokens only
/// with `return_credential` (which also names the error, as Firebase does).
pub(crate) fn verify_assertion_response(out: &IdpSignedIn, return_credential: bool) -> Value {
    let p = &out.profile;
    let mut v = json!({
        "kind": "identitytoolkit#VerifyAssertionResponse",
        "providerId": p.provider_id,
        "federatedId": p.federated_id(),
        "localId": out.user.local_id,
        "emailVerified": p.email_verified,
        "rawUserInfo": Value::Object(p.claims.clone()).to_string(),
        "isNewUser": out.is_new_user,
    });
    let set = |v: &mut Value, k: &str, x: &Option<String>| {
        if let Some(x) = x {
            v[k] = json!(x);
        }
    };
    set(&mut v, "email", &p.email);
    set(&mut v, "displayName", &p.display_name);
    set(&mut v, "fullName", &p.display_name);
    set(&mut v, "photoUrl", &p.photo_url);
    if let Some(first) = p.claims.get("given_name").and_then(Value::as_str) {
        v["firstName"] = json!(first);
    }
    if let Some(last) = p.claims.get("family_name").and_then(Value::as_str) {
        v["lastName"] = json!(last);
    }
    if out.need_confirmation {
        v["needConfirmation"] = json!(true);
        v.as_object_mut().map(|o| o.remove("localId"));
        if let Some(email) = &out.user.email {
            v["email"] = json!(email);
        }
        if return_credential {
            v["errorMessage"] = json!("FEDERATED_USER_ID_ALREADY_LINKED");
        }
    }
    if return_credential || !out.need_confirmation {
        set(&mut v, "oauthIdToken", &out.oauth_id_token);
        set(&mut v, "oauthAccessToken", &out.oauth_access_token);
    }
    if let Some(t) = &out.tokens {
        v["idToken"] = json!(t.id_token);
        v["refreshToken"] = json!(t.refresh_token);
        v["expiresIn"] = json!(t.expires_in.to_string());
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_identity::{IdpProfile, IssuedTokens};
    use gatehouse_store::UserRecord;

    fn signed_in(need_confirmation: bool) -> IdpSignedIn {
        let claims = json!({"sub": "42", "given_name": "Ada", "family_name": "L"});
        IdpSignedIn {
            profile: IdpProfile {
                provider_id: "google.com".into(),
                raw_id: "42".into(),
                email: Some("ada@idp.example".into()),
                email_verified: true,
                display_name: Some("Ada L".into()),
                photo_url: None,
                claims: claims.as_object().cloned().unwrap_or_default(),
            },
            user: UserRecord {
                local_id: "u1".into(),
                email: Some("ada@example.com".into()),
                ..Default::default()
            },
            tokens: (!need_confirmation).then(|| IssuedTokens {
                id_token: "id".into(),
                refresh_token: "rt".into(),
                expires_in: 3600,
            }),
            is_new_user: true,
            need_confirmation,
            oauth_id_token: Some("upstream".into()),
            oauth_access_token: None,
        }
    }

    #[test]
    fn a_sign_in_answers_with_profile_and_tokens() {
        let v = verify_assertion_response(&signed_in(false), false);
        assert_eq!(
            v,
            json!({
                "kind": "identitytoolkit#VerifyAssertionResponse",
                "providerId": "google.com",
                "federatedId": "https://accounts.google.com/42",
                "localId": "u1",
                "emailVerified": true,
                "rawUserInfo": r#"{"family_name":"L","given_name":"Ada","sub":"42"}"#,
                "isNewUser": true,
                "email": "ada@idp.example",
                "displayName": "Ada L",
                "fullName": "Ada L",
                "firstName": "Ada",
                "lastName": "L",
                "oauthIdToken": "upstream",
                "idToken": "id",
                "refreshToken": "rt",
                "expiresIn": "3600",
            })
        );
    }

    #[test]
    fn a_needed_confirmation_hides_the_account_and_the_credential() {
        let v = verify_assertion_response(&signed_in(true), false);
        assert_eq!(v["needConfirmation"], true);
        assert_eq!(v["email"], "ada@example.com");
        assert!(v.get("localId").is_none());
        assert!(v.get("oauthIdToken").is_none());
        assert!(v.get("errorMessage").is_none());
        assert!(v.get("idToken").is_none());
        let v = verify_assertion_response(&signed_in(true), true);
        assert_eq!(v["errorMessage"], "FEDERATED_USER_ID_ALREADY_LINKED");
        assert_eq!(v["oauthIdToken"], "upstream");
    }
}

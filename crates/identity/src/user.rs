//! Accounts: their providers, and the small rules about e-mails, ids, phone numbers and claims.
//! (The Firebase `UserInfo` JSON of an account is `gatehouse-identity-http`'s.)

use gatehouse_store::UserRecord;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::{Error, Result};

/// A linked provider, as stored in the account's `providers` list (JSON text) and shown in
/// `providerUserInfo`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProviderInfo {
    pub provider_id: String,
    pub raw_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub federated_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub photo_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone_number: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub screen_name: Option<String>,
}

/// The federated providers stored on an account.
pub(crate) fn stored_providers(user: &UserRecord) -> Vec<ProviderInfo> {
    serde_json::from_str(&user.providers).unwrap_or_default()
}

/// An account's providers as Firebase lists them (`providerUserInfo`): the password and phone
/// entries are synthesized from the account, the federated ones are stored.
pub fn provider_infos(user: &UserRecord) -> Vec<ProviderInfo> {
    let mut out = Vec::new();
    if let (Some(email), Some(_)) = (&user.email, &user.password_hash) {
        out.push(ProviderInfo {
            provider_id: "password".into(),
            raw_id: email.clone(),
            federated_id: Some(email.clone()),
            email: Some(email.clone()),
            display_name: user.display_name.clone(),
            photo_url: user.photo_url.clone(),
            ..ProviderInfo::default()
        });
    }
    if let Some(phone) = &user.phone_number {
        out.push(ProviderInfo {
            provider_id: "phone".into(),
            raw_id: phone.clone(),
            phone_number: Some(phone.clone()),
            ..ProviderInfo::default()
        });
    }
    out.extend(stored_providers(user));
    out
}

/// The `firebase.identities` claim.
pub(crate) fn identities(user: &UserRecord) -> Value {
    let mut map = Map::new();
    if let Some(email) = &user.email {
        map.insert("email".into(), json!([email]));
    }
    if let Some(phone) = &user.phone_number {
        map.insert("phone".into(), json!([phone]));
    }
    for p in stored_providers(user) {
        let entry = map
            .entry(p.provider_id.clone())
            .or_insert_with(|| json!([]));
        if let Value::Array(list) = entry {
            list.push(json!(p.raw_id));
        }
    }
    Value::Object(map)
}

/// Lower-cases and checks an e-mail address.
pub(crate) fn normalize_email(email: &str) -> Result<String> {
    let email = email.trim().to_lowercase();
    let valid = email.len() <= 254
        && !email.chars().any(char::is_whitespace)
        && match email.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty() && !domain.is_empty() && !domain.contains('@')
            }
            None => false,
        };
    if valid {
        Ok(email)
    } else {
        Err(Error::code("INVALID_EMAIL"))
    }
}

/// A required e-mail field, lower-cased and checked; `missing` is the code when it is absent.
pub(crate) fn required_email(email: Option<&str>, missing: &'static str) -> Result<String> {
    normalize_email(
        email
            .filter(|e| !e.is_empty())
            .ok_or_else(|| Error::code(missing))?,
    )
}

/// Checks a password against the policy (Firebase's: at least 6 characters).
pub(crate) fn check_password_policy(password: &str) -> Result<()> {
    if password.chars().count() < 6 {
        return Err(Error::detail(
            "WEAK_PASSWORD",
            "Password should be at least 6 characters",
        ));
    }
    if password.len() > 4096 {
        return Err(Error::detail(
            "WEAK_PASSWORD",
            "Password should be at most 4096 bytes",
        ));
    }
    Ok(())
}

/// Checks an E.164 phone number.
pub(crate) fn check_phone(phone: &str) -> Result<()> {
    let digits = phone.strip_prefix('+').unwrap_or("");
    if (7..=15).contains(&digits.len()) && digits.chars().all(|c| c.is_ascii_digit()) {
        Ok(())
    } else {
        Err(Error::detail("INVALID_PHONE_NUMBER", "Invalid format."))
    }
}

/// A new, empty account created at `now` (ms); `signed_in` marks it as signed in right away.
pub(crate) fn new_account(
    project: &str,
    tenant: &str,
    local_id: String,
    now: i64,
    signed_in: bool,
) -> UserRecord {
    UserRecord {
        project_id: project.to_owned(),
        tenant_id: tenant.to_owned(),
        local_id,
        valid_since_secs: now / 1000,
        created_at: now,
        last_login_at: signed_in.then_some(now),
        last_refresh_at: signed_in.then_some(now),
        providers: "[]".into(),
        mfa: "[]".into(),
        ..UserRecord::default()
    }
}

/// A new user id: 28 random alphanumerics, as Firebase makes them.
pub(crate) fn new_local_id() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..28)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

/// Validates custom claims (JSON object text): no reserved names, at most 1000 characters.
pub(crate) fn check_custom_claims(text: &str) -> Result<Map<String, Value>> {
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(text) else {
        return Err(Error::code("INVALID_CLAIMS"));
    };
    check_claim_names(&map)?;
    if text.len() > 1000 {
        return Err(Error::code("CLAIMS_TOO_LARGE"));
    }
    Ok(map)
}

/// Rejects reserved claim names.
pub(crate) fn check_claim_names(map: &Map<String, Value>) -> Result<()> {
    const RESERVED: [&str; 16] = [
        "acr",
        "amr",
        "at_hash",
        "aud",
        "auth_time",
        "azp",
        "cnf",
        "c_hash",
        "exp",
        "iat",
        "iss",
        "jti",
        "nbf",
        "nonce",
        "sub",
        "firebase",
    ];
    if let Some(bad) = map.keys().find(|k| RESERVED.contains(&k.as_str())) {
        return Err(Error::detail("FORBIDDEN_CLAIM", bad.clone()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert_eq!(normalize_email(" A@Example.COM ").unwrap(), "a@example.com");
        for bad in ["", "a", "@b", "a@", "a b@c", "a@b@c"] {
            assert!(normalize_email(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn claims_rules() {
        assert!(check_custom_claims(r#"{"role":"admin"}"#).is_ok());
        assert!(check_custom_claims("42").unwrap_err().is("INVALID_CLAIMS"));
        assert!(check_custom_claims("[1]").unwrap_err().is("INVALID_CLAIMS"));
        assert!(check_custom_claims("{").unwrap_err().is("INVALID_CLAIMS"));
        assert_eq!(
            check_custom_claims(r#"{"sub":"x"}"#).unwrap_err().message(),
            "FORBIDDEN_CLAIM : sub"
        );
        let big = format!(r#"{{"a":"{}"}}"#, "x".repeat(1000));
        assert!(
            check_custom_claims(&big)
                .unwrap_err()
                .is("CLAIMS_TOO_LARGE")
        );
    }

    #[test]
    fn ids() {
        let id = new_local_id();
        assert_eq!(id.len(), 28);
        assert!(id.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(id, new_local_id());
    }
}

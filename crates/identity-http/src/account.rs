//! An account as Identity Toolkit answers with it: Firebase's `UserInfo` (lookup, batchGet,
//! query, update).

use gatehouse_identity::{ProviderInfo, provider_infos};
use gatehouse_store::UserRecord;
use serde::Serialize;

/// What is shown instead of a password hash ("REDACTED", base64).
pub(crate) const REDACTED_HASH: &str = "UkVEQUNURUQ=";

/// The Firebase `UserInfo` shape returned by lookup, batchGet, query and update.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountView {
    pub local_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    pub email_verified: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub photo_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone_number: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
    pub provider_user_info: Vec<ProviderInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_updated_at: Option<i64>,
    pub valid_since: String,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_login_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_refresh_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom_attributes: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub custom_auth: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub email_link_signin: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial_email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
}

impl AccountView {
    /// The view of a stored account.
    pub(crate) fn of(user: &UserRecord) -> Self {
        Self {
            local_id: user.local_id.clone(),
            email: user.email.clone(),
            email_verified: user.email_verified,
            display_name: user.display_name.clone(),
            photo_url: user.photo_url.clone(),
            phone_number: user.phone_number.clone(),
            disabled: user.disabled,
            provider_user_info: provider_infos(user),
            password_hash: user
                .password_hash
                .as_ref()
                .map(|_| REDACTED_HASH.to_owned()),
            password_updated_at: user.password_updated_at,
            valid_since: user.valid_since_secs.to_string(),
            created_at: user.created_at.to_string(),
            last_login_at: user.last_login_at.map(|t| t.to_string()),
            last_refresh_at: user
                .last_refresh_at
                .map(|ms| gatehouse_tokens::rfc3339(ms, false)),
            custom_attributes: user.custom_attributes.clone(),
            custom_auth: user.custom_auth,
            email_link_signin: user.email_link_signin,
            initial_email: user.initial_email.clone(),
            tenant_id: (!user.tenant_id.is_empty()).then(|| user.tenant_id.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_account_in_firebases_shape() {
        let user = UserRecord {
            local_id: "u1".into(),
            email: Some("a@example.com".into()),
            password_hash: Some("argon2".into()),
            valid_since_secs: 1_700_000_000,
            created_at: 1_700_000_000_123,
            last_refresh_at: Some(1_700_000_000_123),
            ..Default::default()
        };
        let v = serde_json::to_value(AccountView::of(&user)).unwrap_or_default();
        assert_eq!(v["passwordHash"], REDACTED_HASH);
        assert_eq!(v["validSince"], "1700000000");
        assert_eq!(v["createdAt"], "1700000000123");
        assert_eq!(v["lastRefreshAt"], "2023-11-14T22:13:20.123Z");
        assert_eq!(v["providerUserInfo"][0]["providerId"], "password");
        assert_eq!(v["emailVerified"], false);
        for absent in [
            "disabled",
            "customAuth",
            "emailLinkSignin",
            "tenantId",
            "phoneNumber",
        ] {
            assert!(v.get(absent).is_none(), "{absent}");
        }
        let epoch = UserRecord {
            last_refresh_at: Some(0),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(AccountView::of(&epoch)).unwrap_or_default()["lastRefreshAt"],
            json!("1970-01-01T00:00:00.000Z")
        );
    }
}

//! Request bodies of the Identity Toolkit and Secure Token APIs, named after the wire.
//!
//! They are plain serde types (no HTTP). Like the emulator, they are lenient where real
//! clients differ: numbers are accepted for string fields and strings for number fields
//! (Node Admin sends `validSince` as a number, the wire documents it as a string), and the
//! OOB `requestType` may be the enum name or its number.

use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// A string field that also accepts a number.
fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(Value::Bool(b)) => Ok(Some(b.to_string())),
        Some(other) => Err(serde::de::Error::custom(format!(
            "expected a string, got {other}"
        ))),
    }
}

/// An integer field that also accepts a numeric string.
fn lenient_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f as i64))
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom("expected an integer")),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => s
            .trim()
            .parse::<i64>()
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("invalid integer value {s:?}"))),
        Some(other) => Err(serde::de::Error::custom(format!(
            "expected an integer, got {other}"
        ))),
    }
}

/// A boolean that also accepts `"true"`/`"false"`.
fn lenient_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(b)),
        Some(Value::String(s)) if s == "true" => Ok(Some(true)),
        Some(Value::String(s)) if s == "false" => Ok(Some(false)),
        Some(other) => Err(serde::de::Error::custom(format!(
            "expected a boolean, got {other}"
        ))),
    }
}

/// A list of strings that also accepts a single string.
fn string_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s]),
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                Value::Number(n) => Ok(n.to_string()),
                other => Err(serde::de::Error::custom(format!(
                    "expected a string, got {other}"
                ))),
            })
            .collect(),
        Some(other) => Err(serde::de::Error::custom(format!(
            "expected a list of strings, got {other}"
        ))),
    }
}

/// OOB request types; the wire sends the name or its proto number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OobKind {
    PasswordReset,
    VerifyEmail,
    EmailSignin,
    VerifyAndChangeEmail,
    RecoverEmail,
}

impl OobKind {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PasswordReset => "PASSWORD_RESET",
            Self::VerifyEmail => "VERIFY_EMAIL",
            Self::EmailSignin => "EMAIL_SIGNIN",
            Self::VerifyAndChangeEmail => "VERIFY_AND_CHANGE_EMAIL",
            Self::RecoverEmail => "RECOVER_EMAIL",
        }
    }

    /// Parses a wire name.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "PASSWORD_RESET" => Self::PasswordReset,
            "VERIFY_EMAIL" => Self::VerifyEmail,
            "EMAIL_SIGNIN" => Self::EmailSignin,
            "VERIFY_AND_CHANGE_EMAIL" => Self::VerifyAndChangeEmail,
            "RECOVER_EMAIL" => Self::RecoverEmail,
            _ => return None,
        })
    }

    /// The `mode` of the action link.
    pub fn mode(self) -> &'static str {
        match self {
            Self::PasswordReset => "resetPassword",
            Self::VerifyEmail => "verifyEmail",
            Self::EmailSignin => "signIn",
            Self::VerifyAndChangeEmail => "verifyAndChangeEmail",
            Self::RecoverEmail => "recoverEmail",
        }
    }
}

fn oob_kind<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    // Proto numbers of GetOobCodeRequest.RequestType.
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(Value::Number(n)) => Ok(Some(
            match n.as_i64() {
                Some(1) => "PASSWORD_RESET",
                Some(2) => "OLD_EMAIL_AGREE",
                Some(3) => "NEW_EMAIL_ACCEPT",
                Some(4) => "VERIFY_EMAIL",
                Some(5) => "RECOVER_EMAIL",
                Some(6) => "EMAIL_SIGNIN",
                Some(7) => "VERIFY_AND_CHANGE_EMAIL",
                Some(8) => "REVERT_SECOND_FACTOR_ADDITION",
                _ => "OOB_REQ_TYPE_UNSPECIFIED",
            }
            .to_owned(),
        )),
        Some(other) => Err(serde::de::Error::custom(format!(
            "invalid requestType {other}"
        ))),
    }
}

/// `accounts:signUp` (and the admin `projects/{p}/accounts`).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SignUpRequest {
    #[serde(deserialize_with = "lenient_string")]
    pub email: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub password: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub display_name: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub photo_url: Option<String>,
    #[serde(deserialize_with = "lenient_bool")]
    pub email_verified: Option<bool>,
    #[serde(deserialize_with = "lenient_string")]
    pub phone_number: Option<String>,
    #[serde(deserialize_with = "lenient_bool")]
    pub disabled: Option<bool>,
    #[serde(deserialize_with = "lenient_string")]
    pub local_id: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub id_token: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub tenant_id: Option<String>,
}

/// `accounts:signInWithPassword`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SignInWithPasswordRequest {
    #[serde(deserialize_with = "lenient_string")]
    pub email: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub password: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub tenant_id: Option<String>,
}

/// `accounts:signInWithCustomToken`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SignInWithCustomTokenRequest {
    #[serde(deserialize_with = "lenient_string")]
    pub token: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub tenant_id: Option<String>,
}

/// A `{providerId, rawId}` pair naming a federated identity.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct FederatedUserId {
    #[serde(deserialize_with = "lenient_string")]
    pub provider_id: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub raw_id: Option<String>,
}

/// `accounts:lookup`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LookupRequest {
    #[serde(deserialize_with = "lenient_string")]
    pub id_token: Option<String>,
    #[serde(deserialize_with = "string_list")]
    pub local_id: Vec<String>,
    #[serde(deserialize_with = "string_list")]
    pub email: Vec<String>,
    #[serde(deserialize_with = "string_list")]
    pub phone_number: Vec<String>,
    pub federated_user_id: Vec<FederatedUserId>,
    #[serde(deserialize_with = "string_list")]
    pub initial_email: Vec<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub tenant_id: Option<String>,
}

/// A provider entry to link (`linkProviderUserInfo`) or import (`providerUserInfo`).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProviderUserInfoInput {
    #[serde(deserialize_with = "lenient_string")]
    pub provider_id: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub raw_id: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub email: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub display_name: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub photo_url: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub screen_name: Option<String>,
}

/// `accounts:update` (setAccountInfo).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct UpdateRequest {
    #[serde(deserialize_with = "lenient_string")]
    pub id_token: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub local_id: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub oob_code: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub email: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub password: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub display_name: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub photo_url: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub phone_number: Option<String>,
    #[serde(deserialize_with = "lenient_bool")]
    pub email_verified: Option<bool>,
    #[serde(deserialize_with = "lenient_bool")]
    pub disable_user: Option<bool>,
    #[serde(deserialize_with = "lenient_string")]
    pub custom_attributes: Option<String>,
    #[serde(deserialize_with = "lenient_i64")]
    pub valid_since: Option<i64>,
    #[serde(deserialize_with = "lenient_i64")]
    pub created_at: Option<i64>,
    #[serde(deserialize_with = "lenient_i64")]
    pub last_login_at: Option<i64>,
    #[serde(deserialize_with = "string_list")]
    pub delete_attribute: Vec<String>,
    #[serde(deserialize_with = "string_list")]
    pub delete_provider: Vec<String>,
    pub link_provider_user_info: Option<ProviderUserInfoInput>,
    #[serde(deserialize_with = "lenient_string")]
    pub tenant_id: Option<String>,
}

/// `accounts:delete`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DeleteRequest {
    #[serde(deserialize_with = "lenient_string")]
    pub id_token: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub local_id: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub tenant_id: Option<String>,
}

/// `accounts:sendOobCode`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SendOobCodeRequest {
    #[serde(deserialize_with = "oob_kind")]
    pub request_type: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub email: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub new_email: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub id_token: Option<String>,
    #[serde(deserialize_with = "lenient_bool")]
    pub return_oob_link: Option<bool>,
    #[serde(deserialize_with = "lenient_string")]
    pub continue_url: Option<String>,
    #[serde(deserialize_with = "lenient_bool")]
    pub can_handle_code_in_app: Option<bool>,
    #[serde(deserialize_with = "lenient_string")]
    pub tenant_id: Option<String>,
}

/// `accounts:resetPassword`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ResetPasswordRequest {
    #[serde(deserialize_with = "lenient_string")]
    pub oob_code: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub new_password: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub old_password: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub email: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub tenant_id: Option<String>,
}

/// `accounts:createAuthUri`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CreateAuthUriRequest {
    #[serde(deserialize_with = "lenient_string")]
    pub identifier: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub continue_uri: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub provider_id: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub session_id: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub tenant_id: Option<String>,
}

/// `accounts:signInWithEmailLink`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SignInWithEmailLinkRequest {
    #[serde(deserialize_with = "lenient_string")]
    pub email: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub oob_code: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub id_token: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub tenant_id: Option<String>,
}

/// Secure Token `token` (form or JSON; snake_case on the wire).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct TokenRequest {
    #[serde(alias = "grantType", deserialize_with = "lenient_string")]
    pub grant_type: Option<String>,
    #[serde(alias = "refreshToken", deserialize_with = "lenient_string")]
    pub refresh_token: Option<String>,
}

/// One account of `accounts:batchCreate`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ImportUser {
    #[serde(deserialize_with = "lenient_string")]
    pub local_id: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub email: Option<String>,
    #[serde(deserialize_with = "lenient_bool")]
    pub email_verified: Option<bool>,
    #[serde(deserialize_with = "lenient_string")]
    pub display_name: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub photo_url: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub phone_number: Option<String>,
    #[serde(deserialize_with = "lenient_bool")]
    pub disabled: Option<bool>,
    #[serde(deserialize_with = "lenient_string")]
    pub password_hash: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub salt: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub raw_password: Option<String>,
    #[serde(deserialize_with = "lenient_i64")]
    pub created_at: Option<i64>,
    #[serde(deserialize_with = "lenient_i64")]
    pub last_login_at: Option<i64>,
    #[serde(deserialize_with = "lenient_string")]
    pub custom_attributes: Option<String>,
    pub provider_user_info: Vec<ProviderUserInfoInput>,
    #[serde(deserialize_with = "lenient_string")]
    pub tenant_id: Option<String>,
}

/// `accounts:batchCreate`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BatchCreateRequest {
    pub users: Vec<ImportUser>,
    #[serde(deserialize_with = "lenient_bool")]
    pub allow_overwrite: Option<bool>,
    #[serde(deserialize_with = "lenient_string")]
    pub hash_algorithm: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub signer_key: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub salt_separator: Option<String>,
    #[serde(deserialize_with = "lenient_i64")]
    pub rounds: Option<i64>,
    #[serde(deserialize_with = "lenient_i64")]
    pub memory_cost: Option<i64>,
    #[serde(deserialize_with = "lenient_i64")]
    pub cpu_mem_cost: Option<i64>,
    #[serde(deserialize_with = "lenient_i64")]
    pub parallelization: Option<i64>,
    #[serde(deserialize_with = "lenient_i64")]
    pub block_size: Option<i64>,
    #[serde(deserialize_with = "lenient_i64")]
    pub dk_len: Option<i64>,
    #[serde(deserialize_with = "lenient_string")]
    pub password_hash_order: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub tenant_id: Option<String>,
}

/// `accounts:batchDelete`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BatchDeleteRequest {
    #[serde(deserialize_with = "string_list")]
    pub local_ids: Vec<String>,
    #[serde(deserialize_with = "lenient_bool")]
    pub force: Option<bool>,
    #[serde(deserialize_with = "lenient_string")]
    pub tenant_id: Option<String>,
}

/// `accounts:query`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct QueryRequest {
    #[serde(deserialize_with = "lenient_bool")]
    pub return_user_info: Option<bool>,
    #[serde(deserialize_with = "lenient_i64")]
    pub limit: Option<i64>,
    #[serde(deserialize_with = "lenient_i64")]
    pub offset: Option<i64>,
    pub expression: Vec<Value>,
    #[serde(deserialize_with = "lenient_string")]
    pub order: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub sort_by: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub tenant_id: Option<String>,
}

/// `:createSessionCookie`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CreateSessionCookieRequest {
    #[serde(deserialize_with = "lenient_string")]
    pub id_token: Option<String>,
    #[serde(deserialize_with = "lenient_i64")]
    pub valid_duration: Option<i64>,
    #[serde(deserialize_with = "lenient_string")]
    pub tenant_id: Option<String>,
}

//! Re-encoders of the Identity Toolkit request types (which only deserialize), for the
//! `identity_request` target's round trip: decode, write the decoded fields back as canonical
//! JSON, decode again, and the two must be equal. Each type also checks that a field sent in
//! its own JSON type arrives unchanged (the lenient decoders only widen what is accepted).

use std::fmt::Debug;

use gatehouse_identity as id;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// A request type that can be written back to its wire form.
pub trait Wire: DeserializeOwned + Debug {
    /// The decoded request as canonical wire JSON.
    fn to_wire(&self) -> Value;
    /// Panics if a field given in its canonical JSON type did not arrive as sent.
    fn check_exact(&self, input: &Map<String, Value>);
}

/// A field's wire kind: how it is written back and what must survive decoding unchanged.
pub trait Kind {
    fn wire(&self) -> Value;
    fn check(&self, key: &str, sent: Option<&Value>);
}

impl Kind for Option<String> {
    fn wire(&self) -> Value {
        self.clone().map_or(Value::Null, Value::String)
    }
    fn check(&self, key: &str, sent: Option<&Value>) {
        match sent {
            Some(Value::String(s)) => assert_eq!(self.as_ref(), Some(s), "{key}"),
            Some(Value::Number(n)) => assert_eq!(self.as_deref(), Some(&*n.to_string()), "{key}"),
            None | Some(Value::Null) => assert_eq!(*self, None, "{key}"),
            _ => {}
        }
    }
}

impl Kind for Option<bool> {
    fn wire(&self) -> Value {
        self.map_or(Value::Null, Value::Bool)
    }
    fn check(&self, key: &str, sent: Option<&Value>) {
        match sent {
            Some(Value::Bool(b)) => assert_eq!(*self, Some(*b), "{key}"),
            None | Some(Value::Null) => assert_eq!(*self, None, "{key}"),
            _ => {}
        }
    }
}

impl Kind for Option<i64> {
    fn wire(&self) -> Value {
        self.map_or(Value::Null, Value::from)
    }
    fn check(&self, key: &str, sent: Option<&Value>) {
        match sent {
            Some(Value::Number(n)) if n.is_i64() => assert_eq!(*self, n.as_i64(), "{key}"),
            None | Some(Value::Null) => assert_eq!(*self, None, "{key}"),
            _ => {}
        }
    }
}

impl Kind for Vec<String> {
    fn wire(&self) -> Value {
        Value::Array(self.iter().cloned().map(Value::String).collect())
    }
    fn check(&self, key: &str, sent: Option<&Value>) {
        match sent {
            Some(Value::String(s)) => assert_eq!(*self, [s.clone()], "{key}"),
            Some(Value::Array(items)) if items.iter().all(Value::is_string) => {
                let sent: Vec<&str> = items.iter().filter_map(Value::as_str).collect();
                assert_eq!(*self, sent, "{key}");
            }
            None | Some(Value::Null) => assert!(self.is_empty(), "{key}"),
            _ => {}
        }
    }
}

impl Kind for Vec<Value> {
    fn wire(&self) -> Value {
        Value::Array(self.clone())
    }
    fn check(&self, key: &str, sent: Option<&Value>) {
        if let Some(Value::Array(items)) = sent {
            assert_eq!(self, items, "{key}");
        }
    }
}

/// A nested request object.
pub struct Nested<'a, T>(pub &'a T);

impl<T: Wire> Kind for Nested<'_, Option<T>> {
    fn wire(&self) -> Value {
        self.0.as_ref().map_or(Value::Null, Wire::to_wire)
    }
    fn check(&self, key: &str, sent: Option<&Value>) {
        if let (Some(v), Some(Value::Object(m))) = (self.0, sent) {
            v.check_exact(m);
        }
        if sent.is_none() {
            assert!(self.0.is_none(), "{key}");
        }
    }
}

impl<T: Wire> Kind for Nested<'_, Vec<T>> {
    fn wire(&self) -> Value {
        Value::Array(self.0.iter().map(Wire::to_wire).collect())
    }
    fn check(&self, key: &str, sent: Option<&Value>) {
        match sent {
            Some(Value::Array(items)) => {
                assert_eq!(self.0.len(), items.len(), "{key}");
                for (v, item) in self.0.iter().zip(items) {
                    if let Value::Object(m) = item {
                        v.check_exact(m);
                    }
                }
            }
            None => assert!(self.0.is_empty(), "{key}"),
            _ => {}
        }
    }
}

/// `requestType`: the name as sent, or the name of a proto number.
pub struct OobType<'a>(pub &'a Option<String>);

impl Kind for OobType<'_> {
    fn wire(&self) -> Value {
        self.0.wire()
    }
    fn check(&self, key: &str, sent: Option<&Value>) {
        match sent {
            Some(Value::Number(_)) => {
                let named = self.0.as_deref().is_some_and(|n| {
                    !n.is_empty() && n.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
                });
                assert!(named, "{key}: {:?}", self.0);
            }
            other => self.0.check(key, other),
        }
    }
}

macro_rules! wire {
    ($ty:ty { $($key:literal => $($field:ident).+ $(as $wrap:ident)?),* $(,)? }) => {
        impl Wire for $ty {
            fn to_wire(&self) -> Value {
                let mut m = Map::new();
                $( m.insert($key.to_owned(), wire!(@kind self, $($field).+ $(, $wrap)?).wire()); )*
                Value::Object(m)
            }
            fn check_exact(&self, input: &Map<String, Value>) {
                $( wire!(@kind self, $($field).+ $(, $wrap)?).check($key, input.get($key)); )*
            }
        }
    };
    (@kind $s:ident, $($field:ident).+) => { $s.$($field).+ };
    (@kind $s:ident, $($field:ident).+, $wrap:ident) => { $wrap(&$s.$($field).+) };
}

wire!(id::SignUpRequest {
    "email" => email, "password" => password, "displayName" => display_name,
    "photoUrl" => photo_url, "emailVerified" => email_verified, "phoneNumber" => phone_number,
    "disabled" => disabled, "localId" => local_id, "idToken" => id_token, "tenantId" => tenant_id,
});
wire!(id::SignInWithPasswordRequest {
    "email" => email, "password" => password, "tenantId" => tenant_id,
});
wire!(id::SignInWithCustomTokenRequest { "token" => token, "tenantId" => tenant_id });
wire!(id::FederatedUserId { "providerId" => provider_id, "rawId" => raw_id });
wire!(id::LookupRequest {
    "idToken" => id_token, "localId" => local_id, "email" => email,
    "phoneNumber" => phone_number, "federatedUserId" => federated_user_id as Nested,
    "initialEmail" => initial_email, "tenantId" => tenant_id,
});
wire!(id::ProviderUserInfoInput {
    "providerId" => provider_id, "rawId" => raw_id, "email" => email,
    "displayName" => display_name, "photoUrl" => photo_url, "screenName" => screen_name,
});
wire!(id::UpdateRequest {
    "idToken" => id_token, "localId" => local_id, "oobCode" => oob_code, "email" => email,
    "password" => password, "displayName" => display_name, "photoUrl" => photo_url,
    "phoneNumber" => phone_number, "emailVerified" => email_verified,
    "disableUser" => disable_user, "customAttributes" => custom_attributes,
    "validSince" => valid_since, "createdAt" => created_at, "lastLoginAt" => last_login_at,
    "deleteAttribute" => delete_attribute, "deleteProvider" => delete_provider,
    "linkProviderUserInfo" => link_provider_user_info as Nested, "tenantId" => tenant_id,
});
wire!(id::DeleteRequest { "idToken" => id_token, "localId" => local_id, "tenantId" => tenant_id });
wire!(id::SendOobCodeRequest {
    "requestType" => request_type as OobType, "email" => email, "newEmail" => new_email,
    "idToken" => id_token, "returnOobLink" => return_oob_link, "continueUrl" => continue_url,
    "canHandleCodeInApp" => can_handle_code_in_app, "tenantId" => tenant_id,
});
wire!(id::ResetPasswordRequest {
    "oobCode" => oob_code, "newPassword" => new_password, "oldPassword" => old_password,
    "email" => email, "tenantId" => tenant_id,
});
wire!(id::CreateAuthUriRequest {
    "identifier" => identifier, "continueUri" => continue_uri, "providerId" => provider_id,
    "sessionId" => session_id, "tenantId" => tenant_id,
});
wire!(id::SignInWithEmailLinkRequest {
    "email" => email, "oobCode" => oob_code, "idToken" => id_token, "tenantId" => tenant_id,
});
// Written back under the camelCase aliases: `body_object` camel-cases every key it reads.
wire!(id::TokenRequest { "grantType" => grant_type, "refreshToken" => refresh_token });
wire!(id::ImportUser {
    "localId" => local_id, "email" => email, "emailVerified" => email_verified,
    "displayName" => display_name, "photoUrl" => photo_url, "phoneNumber" => phone_number,
    "disabled" => disabled, "passwordHash" => password_hash, "salt" => salt,
    "rawPassword" => raw_password, "createdAt" => created_at, "lastLoginAt" => last_login_at,
    "customAttributes" => custom_attributes, "providerUserInfo" => provider_user_info as Nested,
    "tenantId" => tenant_id,
});
wire!(id::BatchCreateRequest {
    "users" => users as Nested, "allowOverwrite" => allow_overwrite,
    "hashAlgorithm" => hash_algorithm, "signerKey" => signer_key,
    "saltSeparator" => salt_separator, "rounds" => rounds, "memoryCost" => memory_cost,
    "cpuMemCost" => cpu_mem_cost, "parallelization" => parallelization,
    "blockSize" => block_size, "dkLen" => dk_len, "passwordHashOrder" => password_hash_order,
    "tenantId" => tenant_id,
});
wire!(id::BatchDeleteRequest { "localIds" => local_ids, "force" => force, "tenantId" => tenant_id });
wire!(id::QueryRequest {
    "returnUserInfo" => return_user_info, "limit" => limit, "offset" => offset,
    "expression" => expression, "order" => order, "sortBy" => sort_by, "tenantId" => tenant_id,
});
wire!(id::CreateSessionCookieRequest {
    "idToken" => id_token, "validDuration" => valid_duration, "tenantId" => tenant_id,
});
wire!(id::SignInWithIdpRequest {
    "requestUri" => request_uri, "postBody" => post_body, "idToken" => id_token,
    "returnIdpCredential" => return_idp_credential, "returnSecureToken" => return_secure_token,
    "sessionId" => session_id, "tenantId" => tenant_id,
});

//! Identity Toolkit request decoding exactly as the handlers run it (`body_object`, then
//! `decode` into each request type), on arbitrary bodies: never a panic; body keys arrive
//! camel-cased; a field sent in its own JSON type arrives unchanged; and a decoded request
//! written back as JSON decodes to the same request.
//!
//! Input: one byte choosing method and content type, then the body.
#![no_main]

use gatehouse_fuzz::identity_wire::Wire;
use gatehouse_identity as id;
use gatehouse_identity_http::fuzzing::{body_object, decode};
use http::{HeaderMap, HeaderValue, Method, header};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

fuzz_target!(|data: &[u8]| {
    let Some((&choice, body)) = data.split_first() else {
        return;
    };
    let method = match choice % 4 {
        0 => Method::GET,
        1 => Method::DELETE,
        _ => Method::POST,
    };
    let mut headers = HeaderMap::new();
    if choice & 4 != 0 {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
    }
    let Ok(map) = body_object(&method, &headers, body) else {
        return;
    };
    if method != Method::POST {
        assert!(map.is_empty(), "a {method} body was read");
    }
    assert_no_snake_keys(&Value::Object(map.clone()));

    round_trip::<id::SignUpRequest>(&map);
    round_trip::<id::SignInWithPasswordRequest>(&map);
    round_trip::<id::SignInWithCustomTokenRequest>(&map);
    round_trip::<id::SignInWithIdpRequest>(&map);
    round_trip::<id::LookupRequest>(&map);
    round_trip::<id::UpdateRequest>(&map);
    round_trip::<id::DeleteRequest>(&map);
    round_trip::<id::SendOobCodeRequest>(&map);
    round_trip::<id::ResetPasswordRequest>(&map);
    round_trip::<id::CreateAuthUriRequest>(&map);
    round_trip::<id::SignInWithEmailLinkRequest>(&map);
    round_trip::<id::TokenRequest>(&map);
    round_trip::<id::BatchCreateRequest>(&map);
    round_trip::<id::BatchDeleteRequest>(&map);
    round_trip::<id::QueryRequest>(&map);
    round_trip::<id::CreateSessionCookieRequest>(&map);
});

fn round_trip<T: Wire>(map: &Map<String, Value>) {
    let Ok(first) = decode::<T>(map.clone()) else {
        return;
    };
    first.check_exact(map);
    let Value::Object(wire) = first.to_wire() else {
        unreachable!("to_wire writes an object");
    };
    let second = decode::<T>(wire.clone()).unwrap_or_else(|e| {
        panic!(
            "{} written back does not decode: {e:?}\n{wire:?}",
            std::any::type_name::<T>()
        )
    });
    assert_eq!(
        format!("{first:?}"),
        format!("{second:?}"),
        "round trip of {}",
        std::any::type_name::<T>()
    );
}

/// `body_object` camel-cases every key, nested ones included.
fn assert_no_snake_keys(v: &Value) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                assert!(!k.contains('_'), "key {k:?} not camel-cased");
                assert_no_snake_keys(v);
            }
        }
        Value::Array(items) => items.iter().for_each(assert_no_snake_keys),
        _ => {}
    }
}

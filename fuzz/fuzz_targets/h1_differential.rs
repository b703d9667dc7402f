//! Differential: every request head the gateway accepts must be read the same by an independent
//! RFC 9112 parser (`gatehouse_fuzz::http1`): method, target, fields, body framing and
//! persistence. The gateway may be stricter (refuse what the oracle accepts), never looser.
//!
//! The chunked decoder is checked twice over: fed in pieces of any size it gives one answer,
//! and that answer agrees with an independent whole-buffer decoder (`gatehouse_fuzz::chunked`).
//! Every input is also tried as a chunked body, and an accepted chunked request's body is.
#![no_main]

use std::sync::Once;

use gatehouse_fuzz::chunked::{self, Decoded};
use gatehouse_fuzz::http1::{self, Framing, Persistence, Reading};
use gatehouse_gateway::fuzzing::{decode_chunked, parse_request_head};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    static ORACLES_CHECKED: Once = Once::new();
    ORACLES_CHECKED.call_once(|| {
        http1::self_check();
        chunked::self_check();
    });
    check_chunked(data);
    let gateway = parse_request_head(data);
    let oracle = http1::read_head(data);
    let head = match gateway {
        Ok(Some(head)) => head,
        Ok(None) => {
            if let Reading::Head(o) = &oracle {
                panic!("the gateway waits for more of a complete head: {o:?}");
            }
            return;
        }
        // Stricter than the oracle: allowed.
        Err(_) => return,
    };
    let o = match oracle {
        Reading::Head(o) => o,
        other => panic!("the gateway accepts a head the oracle reads as {other:?}: {head:?}"),
    };
    assert_eq!(head.head_len, o.head_len, "where the head ends");
    assert_eq!(head.method, o.method, "method");
    assert_eq!(
        http1::canonical_scheme(&head.target),
        o.target,
        "request-target"
    );
    assert_eq!(head.http11, o.http11, "version");
    let framing = match head.body {
        None => Framing::None,
        Some(None) => Framing::Chunked,
        Some(Some(n)) => Framing::Length(n),
    };
    assert_eq!(framing, o.framing, "body framing");
    match o.persistence {
        Persistence::Close => assert!(!head.keep_alive, "kept alive; must close"),
        Persistence::KeepAlive => assert!(head.keep_alive, "closed; must persist"),
        Persistence::Either => {}
    }
    // The gateway's field list is grouped by name (first-seen order), each name's values in order.
    let mut grouped: Vec<(String, Vec<u8>)> = Vec::with_capacity(o.fields.len());
    let mut names: Vec<&str> = Vec::new();
    for (name, _) in &o.fields {
        if !names.contains(&name.as_str()) {
            names.push(name);
        }
    }
    for name in names {
        grouped.extend(o.fields.iter().filter(|(n, _)| n == name).cloned());
    }
    assert_eq!(head.headers, grouped, "header fields");

    if framing == Framing::Chunked {
        check_chunked(&data[head.head_len..]);
    }
});

/// The gateway's chunked decoder against itself in pieces and against the oracle.
fn check_chunked(body: &[u8]) {
    let whole = decode_chunked(body, body.len().max(1));
    for piece in [1, 2, 3, 7, 64] {
        assert_eq!(
            decode_chunked(body, piece),
            whole,
            "pieces of {piece} bytes decode differently"
        );
    }
    match (&whole, chunked::decode(body)) {
        (Ok((data, used, true)), Decoded::Done { data: d, used: u }) => {
            assert_eq!((data, *used), (&d, u), "chunked data or end differ");
        }
        (Ok((_, _, true)), other) => {
            panic!("the gateway ends a chunked body the oracle reads as {other:?}")
        }
        (Ok((_, used, false)), Decoded::Done { used: u, .. }) => {
            panic!("the gateway waits for more of a chunked body that ended at {u} (read {used})")
        }
        (Ok((_, used, false)), _) => assert_eq!(*used, body.len()),
        // Stricter than the oracle, or refusing earlier: allowed.
        (Err(_), _) => {}
    }
}

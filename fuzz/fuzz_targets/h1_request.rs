//! The gateway's HTTP/1.1 request-head parser on arbitrary bytes: never a panic, and every head
//! it accepts is one the serving path can frame unambiguously.
#![no_main]

use gatehouse_gateway::fuzzing::{ParsedHead, connection_may_remove, parse_request_head};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(Some(head)) = parse_request_head(data) else {
        return;
    };
    check_head(data, &head);

    // The head alone parses the same: what follows it (a body, a pipelined request) never
    // changes how it is read.
    assert_eq!(
        parse_request_head(&data[..head.head_len]),
        Ok(Some(head.clone())),
        "the head depends on bytes after it"
    );
    // A client that sends the head slowly is never refused halfway: every prefix needs more.
    for cut in [
        head.head_len - 1,
        head.head_len / 2,
        data.len() % head.head_len,
    ] {
        assert_eq!(
            parse_request_head(&data[..cut]),
            Ok(None),
            "a prefix of {cut} bytes of an accepted head is not incomplete"
        );
    }
});

fn check_head(data: &[u8], head: &ParsedHead) {
    assert!(head.head_len > 0 && head.head_len <= data.len());
    assert!(
        data[..head.head_len].ends_with(b"\n\n") || data[..head.head_len].ends_with(b"\n\r\n"),
        "the head does not end with an empty line"
    );
    assert!(
        !head.method.is_empty()
            && head
                .method
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)),
        "method {:?} is not a token",
        head.method
    );
    assert!(
        !head.target.is_empty() && head.target.bytes().all(|b| b.is_ascii_graphic()),
        "target {:?} has whitespace, control or non-ASCII bytes",
        head.target
    );

    let named = |name: &'static str| {
        head.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    };
    for (name, value) in &head.headers {
        assert!(
            !name.is_empty()
                && name.bytes().all(|b| b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || b"!#$%&'*+-.^_`|~".contains(&b)),
            "field name {name:?}"
        );
        assert!(
            !value.iter().any(|b| matches!(b, b'\r' | b'\n' | 0)),
            "{name} value has CR, LF or NUL: {value:?}"
        );
    }

    // Host: exactly one in HTTP/1.1, at most one in HTTP/1.0.
    let hosts = named("host").count();
    assert!(
        hosts == 1 || (!head.http11 && hosts == 0),
        "{hosts} Host fields accepted (HTTP/1.1: {})",
        head.http11
    );

    // Framing: one answer, taken from fields that say exactly that.
    let lengths: Vec<&[u8]> = named("content-length").collect();
    let codings: Vec<&[u8]> = named("transfer-encoding").collect();
    match head.body {
        Some(None) => {
            assert!(head.http11, "chunked accepted in HTTP/1.0");
            assert!(lengths.is_empty(), "chunked with a Content-Length");
            assert_eq!(codings.len(), 1, "chunked from {codings:?}");
            assert!(codings[0].trim_ascii().eq_ignore_ascii_case(b"chunked"));
        }
        Some(Some(n)) => {
            assert!(codings.is_empty(), "a length with a Transfer-Encoding");
            assert!(!lengths.is_empty());
            for l in &lengths {
                let l = l.trim_ascii();
                assert!(
                    !l.is_empty() && l.iter().all(u8::is_ascii_digit),
                    "Content-Length {l:?} is not digits"
                );
                assert_eq!(
                    std::str::from_utf8(l).ok().and_then(|s| s.parse().ok()),
                    Some(n)
                );
            }
        }
        None => {
            assert!(lengths.is_empty(), "a Content-Length read as no body");
            assert!(codings.is_empty(), "a Transfer-Encoding read as no body");
        }
    }

    // Persistence: never kept for HTTP/1.0 nor against `Connection: close`.
    let options: Vec<&[u8]> = named("connection")
        .flat_map(|v| v.split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .collect();
    if head.keep_alive {
        assert!(head.http11, "HTTP/1.0 kept alive");
        assert!(
            !options.iter().any(|o| o.eq_ignore_ascii_case(b"close")),
            "kept alive against Connection: close"
        );
    }
    // `Connection` never removes the framing or the Host (issue #14, hole 1).
    for o in options {
        let framing = [&b"content-length"[..], b"transfer-encoding", b"host"]
            .iter()
            .any(|f| o.eq_ignore_ascii_case(f));
        assert!(
            !(framing && connection_may_remove(o)),
            "Connection may remove {o:?}"
        );
    }
}

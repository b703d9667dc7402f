//! The attack corpus in `tests/adversarial/` and what its runners share: loading the cases,
//! rendering them for one listener, sending them raw, counting the answers, and building the
//! attacker's JWTs from a base token the listener accepts.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use gatehouse_tokens::{SigningKey, b64url, b64url_decode};
use hmac::{Hmac, Mac as _};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// The folder of the corpus.
pub fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/adversarial")
}

/// What a listener must do with an HTTP case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Expect {
    /// A 4xx/5xx first answer (or a close without one), and nothing more.
    Refused,
    /// At most one answer on the connection.
    Single,
    /// Exactly two answers.
    Two,
}

/// One raw HTTP attack.
#[derive(Debug, Clone, Deserialize)]
pub struct HttpCase {
    pub name: String,
    #[serde(default)]
    pub why: Option<String>,
    request: String,
    pub expect: Expect,
    #[serde(default)]
    expect_on: std::collections::BTreeMap<String, Expect>,
    /// The request is a HEAD: its answer has no body.
    #[serde(default)]
    pub head: bool,
}

/// The request the attacker tries to smuggle, and the path no backend may ever see.
pub const CANARY_PATH: &str = "/adversarial-canary";

impl HttpCase {
    /// The expectation on the listener called `target`.
    pub fn expect_on(&self, target: &str) -> Expect {
        self.expect_on.get(target).copied().unwrap_or(self.expect)
    }

    /// The bytes for a listener at `host` whose route `path` exists. The corpus strings are
    /// byte strings: each character (all at most U+00FF) is one byte.
    pub fn render(&self, host: &str, path: &str) -> anyhow::Result<Vec<u8>> {
        let canary = format!("GET {CANARY_PATH} HTTP/1.1\r\nHost: {host}\r\n\r\n");
        let many: String = (0..200).map(|i| format!("X-F{i}: v\r\n")).collect();
        let text = self
            .request
            .replace("{canary_len}", &canary.len().to_string())
            .replace("{canary_hex}", &format!("{:x}", canary.len()))
            .replace("{canary}", &canary)
            .replace("{many_fields}", &many)
            .replace("{big_value}", &"a".repeat(80 * 1024))
            .replace("{huge_value}", &"a".repeat(1024 * 1024))
            .replace("{host}", host)
            .replace("{path}", path);
        text.chars()
            .map(|c| u8::try_from(u32::from(c)).with_context(|| format!("{}: {c:?}", self.name)))
            .collect()
    }
}

/// The HTTP cases of `tests/adversarial/http.yaml`.
pub fn http_cases() -> anyhow::Result<Vec<HttpCase>> {
    load("http.yaml")
}

fn load<T: serde::de::DeserializeOwned>(file: &str) -> anyhow::Result<Vec<T>> {
    let path = corpus_dir().join(file);
    let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    serde_saphyr::from_str(&text).with_context(|| path.display().to_string())
}

/// What came back on one connection.
#[derive(Debug, Clone, Default)]
pub struct Answers {
    /// Final (non-1xx) statuses, in order.
    pub statuses: Vec<u16>,
    /// Bytes after the last answer that are not an answer (counted as one more: they would be
    /// read as the next response).
    pub garbage: usize,
}

impl Answers {
    /// How many answers the client would read.
    pub fn count(&self) -> usize {
        self.statuses.len() + usize::from(self.garbage > 0)
    }

    /// Whether this is the safe answer `expect`.
    pub fn check(&self, expect: Expect) -> Result<(), String> {
        let ok = match expect {
            Expect::Refused => self.count() <= 1 && self.statuses.first().is_none_or(|s| *s >= 400),
            Expect::Single => self.count() <= 1,
            Expect::Two => self.count() == 2,
        };
        if ok {
            Ok(())
        } else {
            Err(format!("expected {expect:?}, got {self:?}"))
        }
    }
}

/// Sends `raw` on a new connection to `addr` and reads answers until the listener closes, or
/// nothing more arrives for a while after `enough` answers (or at all).
pub async fn send_raw(
    addr: &str,
    raw: &[u8],
    head: bool,
    enough: usize,
) -> anyhow::Result<Answers> {
    let mut s = TcpStream::connect(addr).await?;
    // A listener may refuse and close before it has read everything: that is fine.
    let _ = s.write_all(raw).await;
    let mut buf = Vec::new();
    let mut tmp = vec![0u8; 64 * 1024];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let parsed = parse_answers(&buf, head);
        let quiet = if parsed.statuses.len() >= enough {
            Duration::from_millis(300)
        } else {
            Duration::from_millis(1500)
        };
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(quiet.min(left), s.read(&mut tmp)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&tmp[..n]),
            _ => return Ok(parsed),
        }
    }
}

/// Splits `buf` into responses (Content-Length, chunked, or the rest of the stream).
pub fn parse_answers(buf: &[u8], head: bool) -> Answers {
    let mut out = Answers::default();
    let mut at = 0;
    while at < buf.len() {
        let mut raw = [httparse::EMPTY_HEADER; 128];
        let mut r = httparse::Response::new(&mut raw);
        let Ok(httparse::Status::Complete(n)) = r.parse(&buf[at..]) else {
            // Incomplete or not a response: the rest is what a client would misread.
            out.garbage = buf.len() - at;
            return out;
        };
        let status = r.code.unwrap_or(0);
        let field = |name: &str| {
            r.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).into_owned())
        };
        let chunked = field("transfer-encoding").is_some_and(|v| v.contains("chunked"));
        let length = field("content-length").and_then(|v| v.trim().parse::<usize>().ok());
        at += n;
        if (100..200).contains(&status) {
            continue;
        }
        out.statuses.push(status);
        if head || status == 204 || status == 304 {
            continue;
        }
        if chunked {
            match chunked_len(&buf[at..]) {
                Some(len) => at += len,
                None => return out,
            }
        } else if let Some(len) = length {
            at = (at + len).min(buf.len());
        } else {
            return out;
        }
    }
    out
}

/// The length of a complete chunked body at the front of `buf`.
fn chunked_len(buf: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        let line = buf[at..].windows(2).position(|w| w == b"\r\n")?;
        let size = std::str::from_utf8(&buf[at..at + line]).ok()?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        at += line + 2;
        if size == 0 {
            // Trailers, then the empty line.
            loop {
                let end = buf[at..].windows(2).position(|w| w == b"\r\n")?;
                at += end + 2;
                if end == 0 {
                    return Some(at);
                }
            }
        }
        at += size + 2;
        if at > buf.len() {
            return None;
        }
    }
}

/// How a JWT case is signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Sign {
    Trusted,
    Attacker,
    None,
    Original,
    Bitflip,
    Hs256Jwk,
    Hs256N,
}

/// One JWT attack.
#[derive(Debug, Clone, Deserialize)]
pub struct JwtCase {
    pub name: String,
    #[serde(default)]
    header: Map<String, Value>,
    #[serde(default)]
    claims: Map<String, Value>,
    #[serde(default)]
    sign: Option<Sign>,
    #[serde(default)]
    raw: Option<String>,
}

/// The JWT cases of `tests/adversarial/jwt.yaml`.
pub fn jwt_cases() -> anyhow::Result<Vec<JwtCase>> {
    load("jwt.yaml")
}

/// What an attacker has to work with: a token the listener accepts, the listener's published
/// public key, and keys and URLs of the attacker's own. `trusted` only where the runner holds
/// the listener's private key.
pub struct Material<'a> {
    pub base: &'a str,
    pub trusted_public_jwk: &'a Value,
    pub trusted: Option<&'a SigningKey>,
    pub attacker: &'a SigningKey,
    pub attacker_jwks_url: &'a str,
    pub attacker_x5u_url: &'a str,
}

impl JwtCase {
    /// Whether building this case needs the listener's private key.
    pub fn needs_trusted_key(&self) -> bool {
        self.sign == Some(Sign::Trusted)
    }

    /// The attacker's token.
    pub fn build(&self, m: &Material<'_>) -> anyhow::Result<String> {
        let parts: Vec<&str> = m.base.split('.').collect();
        let [h, p, s] = parts[..] else {
            bail!("the base token is not a JWT");
        };
        if let Some(raw) = &self.raw {
            return Ok(raw
                .replace("{base_header}", h)
                .replace("{base_signature}", s)
                .replace("{base}", m.base));
        }
        let decode = |seg: &str| -> anyhow::Result<Map<String, Value>> {
            let bytes = b64url_decode(seg).context("base64url")?;
            Ok(serde_json::from_slice(&bytes)?)
        };
        let mut header = decode(h)?;
        let mut claims = decode(p)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs() as i64;
        let fill = |v: &Value| -> Value {
            match v.as_str() {
                Some("{now-3600}") => json!(now - 3600),
                Some("{now-7200}") => json!(now - 7200),
                Some("{now+3600}") => json!(now + 3600),
                Some("{64k}") => json!("a".repeat(64 * 1024)),
                Some("{attacker_kid}") => json!(m.attacker.kid()),
                Some("{attacker_jwks}") => json!(m.attacker_jwks_url),
                Some("{attacker_x5u}") => json!(m.attacker_x5u_url),
                Some("{attacker_jwk}") => m.attacker.public().jwk(),
                _ => v.clone(),
            }
        };
        for (target, changes) in [(&mut header, &self.header), (&mut claims, &self.claims)] {
            for (k, v) in changes {
                if v.is_null() {
                    target.remove(k);
                } else {
                    target.insert(k.clone(), fill(v));
                }
            }
        }
        let signed = format!(
            "{}.{}",
            b64url(Value::Object(header).to_string().as_bytes()),
            b64url(Value::Object(claims).to_string().as_bytes())
        );
        let base_sig = b64url_decode(s).context("base signature")?;
        let sig = match self.sign.unwrap_or(Sign::Original) {
            Sign::Trusted => m
                .trusted
                .context("needs the trusted key")?
                .sign_rs256(signed.as_bytes())?,
            Sign::Attacker => m.attacker.sign_rs256(signed.as_bytes())?,
            Sign::None => Vec::new(),
            Sign::Original => base_sig,
            Sign::Bitflip => {
                let mut sig = base_sig;
                if let Some(last) = sig.last_mut() {
                    *last ^= 1;
                }
                // The bit flip applies to the untouched base token.
                return Ok(format!("{h}.{p}.{}", b64url(&sig)));
            }
            Sign::Hs256Jwk => hmac(m.trusted_public_jwk.to_string().as_bytes(), &signed)?,
            Sign::Hs256N => {
                let n = m.trusted_public_jwk["n"].as_str().unwrap_or_default();
                hmac(&b64url_decode(n).unwrap_or_default(), &signed)?
            }
        };
        Ok(format!("{signed}.{}", b64url(&sig)))
    }
}

fn hmac(key: &[u8], message: &str) -> anyhow::Result<Vec<u8>> {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key)?;
    mac.update(message.as_bytes());
    Ok(mac.finalize().into_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_corpus_loads_and_renders() {
        let cases = http_cases().unwrap();
        assert!(cases.len() >= 40, "{}", cases.len());
        for c in &cases {
            let raw = c.render("h.example", "/p").unwrap();
            assert!(!raw.is_empty(), "{}", c.name);
        }
        let jwt = jwt_cases().unwrap();
        assert!(jwt.len() >= 30, "{}", jwt.len());
    }

    #[test]
    fn answers_are_counted_as_a_client_reads_them() {
        let two = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        let a = parse_answers(two, false);
        assert_eq!(a.statuses, [200, 404]);
        assert_eq!(a.count(), 2);
        assert!(a.check(Expect::Two).is_ok());
        assert!(a.check(Expect::Single).is_err());
        let leak = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\nvictim's secret";
        assert_eq!(parse_answers(leak, false).count(), 2);
        let cont =
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n";
        assert!(parse_answers(cont, false).check(Expect::Refused).is_ok());
        assert!(parse_answers(b"", false).check(Expect::Refused).is_ok());
    }
}

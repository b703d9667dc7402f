//! google.api.http path templates: parsing, matching with variable capture, ESPv2's route
//! precedence, and the two path translations.
//!
//! Pure functions of paths: no I/O, no knowledge of backends or authentication.

use std::borrow::Cow;
use std::cmp::Ordering;

use smallvec::{SmallVec, smallvec};

/// One template segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    /// A literal segment.
    Lit(String),
    /// `*` or `{var}`: one non-empty segment.
    Star,
    /// `**`: the rest, one or more (possibly empty) segments.
    DoubleStar,
}

/// A named variable covering template segments `start..end`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Var {
    /// The name as written in the OpenAPI path (the `jsonName`).
    pub name: String,
    pub start: usize,
    pub end: usize,
}

/// A parsed path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub source: String,
    pub segs: Vec<Seg>,
    pub vars: Vec<Var>,
    pub verb: Option<String>,
}

/// Why a template does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid path template {template:?}: {why}")]
pub struct TemplateError {
    pub template: String,
    pub why: &'static str,
}

impl Template {
    /// Parses `/a/{b}/{c=x/**}:verb`.
    pub fn parse(source: &str) -> Result<Self, TemplateError> {
        let err = |why| TemplateError {
            template: source.to_owned(),
            why,
        };
        let rest = source
            .strip_prefix('/')
            .ok_or_else(|| err("must start with '/'"))?;
        // A trailing `:verb` outside any braces.
        let (body, verb) = match rest.rfind(':') {
            Some(i) if !rest[i..].contains('}') && !rest[i..].contains('/') => {
                (&rest[..i], Some(rest[i + 1..].to_owned()))
            }
            _ => (rest, None),
        };
        let mut segs = Vec::new();
        let mut vars = Vec::new();
        let mut chars = body;
        if body.is_empty() {
            return Ok(Self {
                source: source.to_owned(),
                segs,
                vars,
                verb,
            });
        }
        loop {
            if let Some(after) = chars.strip_prefix('{') {
                let close = after.find('}').ok_or_else(|| err("unclosed '{'"))?;
                let inner = &after[..close];
                let (name, pattern) = inner.split_once('=').unwrap_or((inner, "*"));
                if name.is_empty()
                    || !name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-')
                {
                    return Err(err("bad variable name"));
                }
                let start = segs.len();
                for p in pattern.split('/') {
                    segs.push(parse_seg(p).ok_or_else(|| err("bad segment in variable pattern"))?);
                }
                vars.push(Var {
                    name: name.to_owned(),
                    start,
                    end: segs.len(),
                });
                chars = &after[close + 1..];
            } else {
                let end = chars.find('/').unwrap_or(chars.len());
                let seg = &chars[..end];
                if seg.contains('{') || seg.contains('}') {
                    return Err(err("braces inside a segment"));
                }
                segs.push(parse_seg(seg).ok_or_else(|| err("empty segment"))?);
                chars = &chars[end..];
            }
            match chars.strip_prefix('/') {
                Some(next) => chars = next,
                None if chars.is_empty() => break,
                None => return Err(err("unexpected text after a variable")),
            }
        }
        if let Some(i) = segs.iter().position(|s| *s == Seg::DoubleStar)
            && i + 1 != segs.len()
        {
            return Err(err("'**' must be the last segment"));
        }
        Ok(Self {
            source: source.to_owned(),
            segs,
            vars,
            verb,
        })
    }

    /// Whether the template has any wildcard.
    pub fn has_wildcard(&self) -> bool {
        self.segs.iter().any(|s| !matches!(s, Seg::Lit(_)))
    }

    /// The template as the service config shows it (variables in snake_case), for messages.
    pub fn display(&self) -> String {
        let mut out = String::new();
        let mut i = 0;
        while i < self.segs.len() {
            out.push('/');
            if let Some(v) = self.vars.iter().find(|v| v.start == i) {
                let pattern: Vec<String> = self.segs[v.start..v.end].iter().map(seg_text).collect();
                if pattern == ["*"] {
                    out.push_str(&format!("{{{}}}", snake(&v.name)));
                } else {
                    out.push_str(&format!("{{{}={}}}", snake(&v.name), pattern.join("/")));
                }
                i = v.end;
            } else {
                out.push_str(&seg_text(&self.segs[i]));
                i += 1;
            }
        }
        if out.is_empty() {
            out.push('/');
        }
        if let Some(v) = &self.verb {
            out.push(':');
            out.push_str(v);
        }
        out
    }

    /// Matches a normalised path (no query). Returns the variable bindings (raw text) in order.
    pub fn matches(&self, path: &str) -> Option<Vec<(String, String)>> {
        let rest = path.strip_prefix('/')?;
        let rest = match &self.verb {
            Some(v) => rest.strip_suffix(v.as_str())?.strip_suffix(':')?,
            None => rest,
        };
        // On the stack for the usual path: every request tries routes until one matches.
        let parts: SmallVec<[&str; 16]> = rest.split('/').collect();
        let mut spans: SmallVec<[(usize, usize); 16]> = smallvec![(0, 0); self.segs.len()];
        if !match_from(&self.segs, &parts, 0, 0, &mut spans) {
            return None;
        }
        Some(
            self.vars
                .iter()
                .map(|v| {
                    let from = spans.get(v.start).map_or(0, |s| s.0);
                    let to = spans.get(v.end.saturating_sub(1)).map_or(from, |s| s.1);
                    let mut value = parts[from..to].join("/");
                    // A `**` that swallowed the optional trailing slash does not bind it.
                    if v.end == self.segs.len()
                        && self.segs.last() == Some(&Seg::DoubleStar)
                        && value.ends_with('/')
                    {
                        value.pop();
                    }
                    (v.name.clone(), value)
                })
                .collect(),
        )
    }
}

fn parse_seg(text: &str) -> Option<Seg> {
    match text {
        "" => None,
        "*" => Some(Seg::Star),
        "**" => Some(Seg::DoubleStar),
        lit => Some(Seg::Lit(lit.to_owned())),
    }
}

fn seg_text(s: &Seg) -> String {
    match s {
        Seg::Lit(l) => l.clone(),
        Seg::Star => "*".into(),
        Seg::DoubleStar => "**".into(),
    }
}

/// `shelfId` → `shelf_id`, as Service Management renames path variables.
pub fn snake(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Matches `segs[ti..]` against `parts[pi..]`, recording which parts each segment took.
fn match_from(
    segs: &[Seg],
    parts: &[&str],
    ti: usize,
    pi: usize,
    spans: &mut [(usize, usize)],
) -> bool {
    if ti == segs.len() {
        // Exactly one optional trailing slash.
        return pi == parts.len()
            || (pi + 1 == parts.len() && parts[pi].is_empty() && (pi > 0 || segs.is_empty()));
    }
    match &segs[ti] {
        Seg::Lit(l) => {
            if parts.get(pi) == Some(&l.as_str()) {
                spans[ti] = (pi, pi + 1);
                return match_from(segs, parts, ti + 1, pi + 1, spans);
            }
            false
        }
        Seg::Star => {
            if parts.get(pi).is_some_and(|p| !p.is_empty()) {
                spans[ti] = (pi, pi + 1);
                return match_from(segs, parts, ti + 1, pi + 1, spans);
            }
            false
        }
        Seg::DoubleStar => {
            // The last segment: takes everything that is left (at least one part, maybe empty).
            if pi < parts.len() {
                spans[ti] = (pi, parts.len());
                return true;
            }
            false
        }
    }
}

fn rank(s: &Seg) -> u8 {
    match s {
        Seg::Lit(_) => 0,
        Seg::Star => 1,
        Seg::DoubleStar => 2,
    }
}

/// ESPv2's route order: literal before `*` before `**` at each depth (literals sorted); a
/// template ending at a node comes before longer ones, except below a `**`.
pub fn precedence(a: &Template, b: &Template) -> Ordering {
    let mut i = 0;
    loop {
        match (a.segs.get(i), b.segs.get(i)) {
            (None, None) => return a.verb.cmp(&b.verb),
            (None, Some(_)) => {
                let under_double = i > 0 && a.segs[i - 1] == Seg::DoubleStar;
                return if under_double {
                    Ordering::Greater
                } else {
                    Ordering::Less
                };
            }
            (Some(_), None) => {
                let under_double = i > 0 && b.segs[i - 1] == Seg::DoubleStar;
                return if under_double {
                    Ordering::Less
                } else {
                    Ordering::Greater
                };
            }
            (Some(x), Some(y)) => {
                let by_rank = rank(x).cmp(&rank(y));
                if by_rank != Ordering::Equal {
                    return by_rank;
                }
                if let (Seg::Lit(p), Seg::Lit(q)) = (x, y)
                    && p != q
                {
                    return p.cmp(q);
                }
            }
        }
        i += 1;
    }
}

/// Normalises a request path as ESPv2 does by default: decodes percent-encoded unreserved
/// characters (never `%2F`), resolves `.` and `..` segments, and merges repeated slashes.
/// `None` for paths that cannot be served (no leading slash, a fragment, over 8192 bytes).
pub fn normalize(path: &str) -> Result<Cow<'_, str>, &'static str> {
    if path.len() > 8192 {
        return Err("Path is too long, max allowed size is 8192.");
    }
    if path.contains('#') {
        return Err("Path cannot contain fragment identifier (#)");
    }
    if !path.starts_with('/') {
        return Err("Path must start with '/'");
    }
    // Work on bytes: a request target is ASCII (RFC 3986; anything else must be
    // percent-encoded), and a raw non-ASCII or control byte is refused rather than guessed at.
    let bytes = path.as_bytes();
    if !bytes.iter().all(u8::is_ascii_graphic) {
        return Err("Bad Request: the path must be ASCII, with anything else percent-encoded");
    }
    if already_normal(bytes) {
        return Ok(Cow::Borrowed(path));
    }
    resolve(path).map(Cow::Owned)
}

/// Decodes unreserved escapes and resolves empty, `.` and `..` segments of an ASCII path.
fn resolve(path: &str) -> Result<String, &'static str> {
    let bytes = path.as_bytes();
    // Decode unreserved characters only. Every '%' must start a well-formed escape: a stray
    // one would let a decoded character complete a new escape (`%2%65` → `%2e`), so a second
    // decoder (the backend's) would see something the router never did.
    let mut decoded = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).and_then(|b| char::from(*b).to_digit(16)),
                bytes.get(i + 2).and_then(|b| char::from(*b).to_digit(16)),
            ) else {
                return Err("Bad Request: malformed percent-encoding in the path");
            };
            let v = (hi * 16 + lo) as u8;
            if v.is_ascii_alphanumeric() || matches!(v, b'-' | b'.' | b'_' | b'~') {
                decoded.push(char::from(v));
            } else {
                decoded.push_str(&path[i..i + 3]);
            }
            i += 3;
            continue;
        }
        decoded.push(char::from(bytes[i]));
        i += 1;
    }
    let trailing = decoded.ends_with('/') && decoded.len() > 1;
    let mut out: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut result = format!("/{}", out.join("/"));
    if trailing && result.len() > 1 {
        result.push('/');
    }
    Ok(result)
}

/// Whether a path (ASCII, starting with '/') is its own normal form: no escape to decode, no
/// empty, `.` or `..` segment except one empty segment after a trailing '/'. The common case,
/// answered without allocating.
fn already_normal(path: &[u8]) -> bool {
    if path.contains(&b'%') {
        return false;
    }
    let mut segments = path[1..].split(|b| *b == b'/').peekable();
    while let Some(seg) = segments.next() {
        let last = segments.peek().is_none();
        match seg {
            b"" if last => return true,
            b"" | b"." | b".." => return false,
            _ => {}
        }
    }
    true
}

#[cfg(test)]
mod tests {
    /// The allocation-free answer agrees with the full resolution on every path over a small
    /// alphabet up to 7 characters long.
    #[test]
    fn fast_path_agrees_with_resolution() {
        let alphabet = [b'/', b'a', b'.', b'%', b'4', b'1'];
        let mut checked = 0;
        let mut fast = 0;
        let mut paths = vec![b"/".to_vec()];
        for _ in 0..6 {
            let mut next = Vec::new();
            for p in &paths {
                for c in alphabet {
                    let mut q = p.clone();
                    q.push(c);
                    next.push(q);
                }
            }
            for p in &next {
                let s = std::str::from_utf8(p).unwrap();
                if super::already_normal(p) {
                    fast += 1;
                    assert_eq!(super::resolve(s).as_deref(), Ok(s), "{s}");
                }
                checked += 1;
            }
            paths = next;
        }
        assert!(checked > 50_000 && fast > 1_000, "{checked} {fast}");
    }

    use super::*;

    fn t(s: &str) -> Template {
        Template::parse(s).unwrap()
    }

    #[test]
    fn normalize_refuses_non_ascii_without_panicking() {
        // A '%' followed by a multi-byte character used to slice inside it and panic.
        for p in [
            "/%\u{e9}",
            "/a%\u{e9}x",
            "/\u{e9}",
            "/%\u{1F600}",
            "/a\u{7f}",
            "/a\tb",
        ] {
            assert!(normalize(p).is_err(), "{p:?}");
        }
        assert_eq!(normalize("/x/%2e%2E/b%2F").as_deref(), Ok("/b%2F"));
        assert_eq!(normalize("/%41b").as_deref(), Ok("/Ab"));
        // A '%' that starts no escape is refused: `%2%65` would decode into a new `%2e`.
        for p in ["/%4", "/a%", "/public/%2%65%2%65/admin", "/%zz"] {
            assert!(normalize(p).is_err(), "{p}");
        }
    }

    #[test]
    fn literal_templates_match_with_optional_trailing_slash() {
        let tpl = t("/shelves");
        assert!(tpl.matches("/shelves").is_some());
        assert!(tpl.matches("/shelves/").is_some());
        assert!(tpl.matches("/shelves//").is_none());
        assert!(tpl.matches("/shelvesx").is_none());
        assert!(t("/").matches("/").is_some());
    }

    #[test]
    fn variables_and_wildcards() {
        let tpl = t("/pet/{pet_id}/num/{number}");
        assert_eq!(
            tpl.matches("/pet/123/num/987/").unwrap(),
            vec![
                ("pet_id".into(), "123".into()),
                ("number".into(), "987".into())
            ]
        );
        assert!(tpl.matches("/pet//num/9").is_none());
        let w = t("/wildcard/a/*/b/{name=*}/c/**");
        assert_eq!(
            w.matches("/wildcard/a/1/b/2/c/3/4/5").unwrap(),
            vec![("name".into(), "2".into())]
        );
        assert!(w.matches("/wildcard/a/1/b/2/c/").is_some());
        assert!(w.matches("/wildcard/a/1/b/2/c").is_none());
        let f = t("/field_path/{s_1=a/*/b/*}/{s_2=x/**}:upload");
        assert_eq!(
            f.matches("/field_path/a/1/b/2/x/9/8/7:upload").unwrap(),
            vec![
                ("s_1".into(), "a/1/b/2".into()),
                ("s_2".into(), "x/9/8/7".into())
            ]
        );
        assert!(f.matches("/field_path/a/1/b/2/x/9").is_none());
        assert_eq!(
            t("/v1/{name=books/*}").matches("/v1/books/7").unwrap(),
            vec![("name".into(), "books/7".into())]
        );
        assert!(t("/**").matches("/").is_some());
        assert!(t("/**").matches("/a/b/c").is_some());
    }

    #[test]
    fn bad_templates() {
        for bad in ["x", "/a/{b", "/a/**/c", "/a//b", "/a/{}", "/a/{b}c"] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn precedence_literal_star_doublestar() {
        let mut list = [
            t("/allow-all/{double=**}"),
            t("/allow-all/{single=*}"),
            t("/allow-all/exact-match"),
            t("/**"),
            t("/allow-all"),
        ];
        list.sort_by(precedence);
        let order: Vec<&str> = list.iter().map(|x| x.source.as_str()).collect();
        assert_eq!(
            order,
            [
                "/allow-all",
                "/allow-all/exact-match",
                "/allow-all/{single=*}",
                "/allow-all/{double=**}",
                "/**"
            ]
        );
    }

    #[test]
    fn display_uses_snake_case() {
        assert_eq!(
            t("/v1/shelves/{shelfId}").display(),
            "/v1/shelves/{shelf_id}"
        );
        assert_eq!(t("/v1/{name=books/*}").display(), "/v1/{name=books/*}");
    }

    #[test]
    fn normalisation() {
        assert_eq!(
            normalize("/echo/123/../123/path/").unwrap(),
            "/echo/123/path/"
        );
        assert_eq!(normalize("/echo/%4a/path/").unwrap(), "/echo/J/path/");
        assert_eq!(
            normalize("/echo/12%2F3/path/").unwrap(),
            "/echo/12%2F3/path/"
        );
        assert_eq!(normalize("/echo/123/path//").unwrap(), "/echo/123/path/");
        assert_eq!(normalize("/").unwrap(), "/");
        assert!(normalize("/a#b").is_err());
    }
}

//! Path templates as google.api.http writes them (AIP-127):
//! `/v1/{name=projects/*/secrets/*}:addVersion`, `/v1/{parent=projects/*}/secrets`,
//! `/v1/projects/{project}/serviceAccounts/{account}/keys/{key}`.
//!
//! Grammar: `Template = "/" Segment {"/" Segment} [":" Verb]`; a segment is a literal, `*`
//! (one segment), `**` (the rest, last only) or a variable `{field[=Segments]}` (`{x}` is
//! `{x=*}`). A path's verb is what follows the last `:` of its last segment; a template with a
//! verb matches only paths with that verb, one without only paths with none. One extension:
//! the verb `*` (`/v1/{resource}:*`) matches any verb, for APIs that dispatch on it themselves
//! (Identity Toolkit's `accounts:signUp`, `accounts:lookup`, …).
//!
//! Captured segments are percent-decoded. A capture that would decode to `/`, `.` or `..`, or
//! that holds an invalid escape, does not match: `%2F` cannot smuggle a path separator into a
//! resource name.

use std::fmt;

/// A template that does not follow the grammar.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid path template {template:?}: {reason}")]
pub struct TemplateError {
    template: String,
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// `*`: exactly one non-empty segment.
    One,
    /// `**`: zero or more segments (last only).
    Rest,
}

/// A variable: its field path and the template segments it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Variable {
    name: String,
    start: usize,
    end: usize,
}

/// A parsed path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    text: String,
    segments: Vec<Segment>,
    variables: Vec<Variable>,
    verb: Option<String>,
}

impl fmt::Display for PathTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Values a match captured, by variable name, percent-decoded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Captures(Vec<(String, String)>);

impl Captures {
    /// The value of variable `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `name`, or "" if the template has no such variable.
    pub fn str(&self, name: &str) -> &str {
        self.get(name).unwrap_or_default()
    }

    /// All captures in template order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// A path split into its segments and verb, ready to be matched against many templates.
#[derive(Debug, Clone)]
pub struct SplitPath<'a> {
    segments: Vec<&'a str>,
    verb: Option<&'a str>,
}

impl<'a> SplitPath<'a> {
    /// Splits `path` (which must start with `/`; else it matches nothing).
    pub fn new(path: &'a str) -> Self {
        let Some(rest) = path.strip_prefix('/') else {
            return Self {
                segments: vec!["\0"],
                verb: None,
            };
        };
        let mut segments: Vec<&str> = rest.split('/').collect();
        let mut verb = None;
        if let Some(last) = segments.last_mut()
            && let Some((head, v)) = last.rsplit_once(':')
        {
            *last = head;
            verb = Some(v);
        }
        Self { segments, verb }
    }

    /// The verb after the last segment's last `:`.
    pub fn verb(&self) -> Option<&'a str> {
        self.verb
    }
}

impl PathTemplate {
    /// Parses `text`.
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let err = |reason| TemplateError {
            template: text.to_owned(),
            reason,
        };
        let body = text
            .strip_prefix('/')
            .ok_or_else(|| err("must start with /"))?;
        // The verb follows the last ':' outside braces.
        let (body, verb) = match body.rfind(':') {
            Some(i) if !body[i..].contains('}') && !body[i..].contains('/') => {
                let verb = &body[i + 1..];
                if verb.is_empty() {
                    return Err(err("empty verb"));
                }
                (&body[..i], Some(verb.to_owned()))
            }
            _ => (body, None),
        };
        let mut segments = Vec::new();
        let mut variables: Vec<Variable> = Vec::new();
        let mut open: Option<(String, usize, bool)> = None;
        for raw in body.split('/') {
            let mut seg = raw;
            if let Some(inner) = seg.strip_prefix('{') {
                if open.is_some() {
                    return Err(err("nested variable"));
                }
                let (name, pattern) = match inner.split_once('=') {
                    Some((n, p)) => (n, Some(p)),
                    None => (inner.strip_suffix('}').unwrap_or(inner), None),
                };
                let valid = !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
                if !valid {
                    return Err(err("bad variable name"));
                }
                match pattern {
                    None if inner.ends_with('}') => {
                        variables.push(Variable {
                            name: name.to_owned(),
                            start: segments.len(),
                            end: segments.len() + 1,
                        });
                        segments.push(Segment::One);
                        continue;
                    }
                    None => return Err(err("unclosed variable")),
                    Some(p) => {
                        open = Some((name.to_owned(), segments.len(), false));
                        seg = p;
                    }
                }
            }
            let closes = seg.ends_with('}');
            if closes {
                if open.is_none() {
                    return Err(err("unbalanced }"));
                }
                seg = &seg[..seg.len() - 1];
            }
            if seg.contains(['{', '}', ':', '=']) {
                return Err(err("reserved character in a segment"));
            }
            segments.push(match seg {
                "" => return Err(err("empty segment")),
                "*" => Segment::One,
                "**" => Segment::Rest,
                lit => Segment::Literal(lit.to_owned()),
            });
            if let Some((name, start, _)) = open.take() {
                if closes {
                    variables.push(Variable {
                        name,
                        start,
                        end: segments.len(),
                    });
                } else {
                    open = Some((name, start, true));
                }
            }
        }
        if open.is_some() {
            return Err(err("unclosed variable"));
        }
        if let Some(i) = segments.iter().position(|s| *s == Segment::Rest)
            && i + 1 != segments.len()
        {
            return Err(err("** must be the last segment"));
        }
        let mut names: Vec<&str> = variables.iter().map(|v| v.name.as_str()).collect();
        names.sort_unstable();
        if names.windows(2).any(|w| w[0] == w[1]) {
            return Err(err("duplicate variable"));
        }
        Ok(Self {
            text: text.to_owned(),
            segments,
            variables,
            verb,
        })
    }

    /// The template's verb (`addVersion` in `…:addVersion`).
    pub fn verb(&self) -> Option<&str> {
        self.verb.as_deref()
    }

    /// Matches `path`, returning its captures.
    pub fn matches(&self, path: &str) -> Option<Captures> {
        self.match_split(&SplitPath::new(path))
    }

    /// Matches an already split path.
    pub fn match_split(&self, path: &SplitPath<'_>) -> Option<Captures> {
        let verb_ok = match (self.verb.as_deref(), path.verb) {
            (Some("*"), Some(v)) => !v.is_empty(),
            (want, got) => want == got,
        };
        if !verb_ok {
            return None;
        }
        let segs = &path.segments;
        let rest = self.segments.last() == Some(&Segment::Rest);
        let fixed = self.segments.len() - usize::from(rest);
        if segs.len() < fixed || (!rest && segs.len() != fixed) {
            return None;
        }
        let mut decoded: Vec<String> = Vec::with_capacity(segs.len());
        for (i, raw) in segs.iter().enumerate() {
            match self.segments.get(i) {
                Some(Segment::Literal(lit)) if lit == raw => decoded.push(String::new()),
                Some(Segment::Literal(_)) => return None,
                Some(Segment::One) | Some(Segment::Rest) | None => {
                    decoded.push(decode_segment(raw)?);
                }
            }
        }
        let mut captures = Vec::with_capacity(self.variables.len());
        for v in &self.variables {
            let end = if rest && v.end == self.segments.len() {
                segs.len()
            } else {
                v.end
            };
            let value = (v.start..end)
                .map(|i| match &self.segments.get(i) {
                    Some(Segment::Literal(lit)) => lit.clone(),
                    _ => decoded[i].clone(),
                })
                .collect::<Vec<_>>()
                .join("/");
            captures.push((v.name.clone(), value));
        }
        Some(Captures(captures))
    }
}

/// A percent-decoded segment that is safe to put in a resource name: not empty, no `/`, not
/// `.` or `..`, valid escapes and UTF-8.
fn decode_segment(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = raw.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let text = String::from_utf8(out).ok()?;
    let safe = !text.is_empty() && !text.contains('/') && text != "." && text != "..";
    safe.then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> PathTemplate {
        PathTemplate::parse(s).unwrap()
    }

    #[test]
    fn resource_names_and_verbs() {
        let add = t("/v1/{name=projects/*/secrets/*}:addVersion");
        let c = add
            .matches("/v1/projects/p1/secrets/s1:addVersion")
            .unwrap();
        assert_eq!(c.get("name"), Some("projects/p1/secrets/s1"));
        assert_eq!(add.matches("/v1/projects/p1/secrets/s1"), None);
        assert_eq!(add.matches("/v1/projects/p1/secrets/s1:access"), None);
        assert_eq!(add.matches("/v1/projects/p1/keys/s1:addVersion"), None);
        let get = t("/v1/{name=projects/*/secrets/*}");
        assert!(get.matches("/v1/projects/p1/secrets/s1").is_some());
        assert_eq!(get.matches("/v1/projects/p1/secrets/s1:addVersion"), None);
        let simple = t("/v1/projects/{project}/serviceAccounts/{account}/keys");
        let c = simple
            .matches("/v1/projects/-/serviceAccounts/a%40p.iam.gserviceaccount.com/keys")
            .unwrap();
        assert_eq!(c.str("project"), "-");
        assert_eq!(c.str("account"), "a@p.iam.gserviceaccount.com");
        let lit = t("/v1/accounts:signUp");
        assert!(lit.matches("/v1/accounts:signUp").is_some());
        assert!(lit.matches("/v1/accounts").is_none());
    }

    #[test]
    fn double_star_takes_the_rest() {
        let any = t("/v1/{name=operations/**}");
        assert_eq!(
            any.matches("/v1/operations/a/b/c").unwrap().str("name"),
            "operations/a/b/c"
        );
        assert_eq!(
            any.matches("/v1/operations").unwrap().str("name"),
            "operations"
        );
        assert!(t("/v1/**").matches("/v1/x/y:verb").is_none());
        assert!(t("/v1/**:verb").matches("/v1/x/y:verb").is_some());
        let any = t("/v1/{resource}:*");
        assert_eq!(
            any.matches("/v1/accounts:signUp").unwrap().str("resource"),
            "accounts"
        );
        assert!(any.matches("/v1/accounts").is_none());
        assert!(any.matches("/v1/accounts:").is_none());
    }

    #[test]
    fn attacker_paths_do_not_match() {
        let get = t("/v1/{name=projects/*/secrets/*}");
        for path in [
            "/v1/projects/p/secrets/a%2Fb",
            "/v1/projects/p/secrets/a%2fb",
            "/v1/projects/p/secrets/..",
            "/v1/projects/p/secrets/%2E%2E",
            "/v1/projects/p/secrets/.",
            "/v1/projects/p/secrets/",
            "/v1/projects//secrets/s",
            "/v1/projects/p/secrets/s/",
            "/v1/projects/p/secrets/%zz",
            "/v1/projects/p/secrets/%",
            "/v1/projects/p/secrets/%ff",
            "v1/projects/p/secrets/s",
            "",
        ] {
            assert_eq!(get.matches(path), None, "{path}");
        }
        // An escaped ':' is part of the name, not a verb separator.
        assert_eq!(
            get.matches("/v1/projects/p/secrets/s%3AaddVersion")
                .unwrap()
                .str("name"),
            "projects/p/secrets/s:addVersion"
        );
    }

    #[test]
    fn bad_templates_are_refused() {
        for bad in [
            "v1/x",
            "/v1/{name",
            "/v1/{name=projects/*",
            "/v1/name}",
            "/v1/{a}/{a}",
            "/v1/**/x",
            "/v1//x",
            "/v1/x:",
            "/v1/{a={b}}",
            "/v1/{}",
        ] {
            assert!(PathTemplate::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(t("/v1/{x}:run").verb(), Some("run"));
        assert_eq!(t("/v1/{x}").to_string(), "/v1/{x}");
    }
}

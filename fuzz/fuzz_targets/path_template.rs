//! Path templates and request-path normalisation. Input: `template\npath`.
//! `Template::parse` never panics and what it accepts round-trips through `display`;
//! `normalize` is idempotent and yields an ASCII absolute path without dot or empty segments;
//! `matches` binds every variable, and the bindings put back into the template give the path.
#![no_main]

use gatehouse_gateway::template::{Seg, Template, normalize};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (template, path) = text.split_once('\n').unwrap_or((&text, "/"));

    let normalized = match normalize(path) {
        Ok(n) => {
            assert!(n.starts_with('/'), "{n:?}");
            assert!(n.bytes().all(|b| b.is_ascii_graphic()), "{n:?}");
            assert!(!n.contains("//"), "{n:?}");
            let body = n.trim_start_matches('/').trim_end_matches('/');
            assert!(
                !body.split('/').any(|s| s == "." || s == ".."),
                "dot segment left in {n:?}"
            );
            assert_eq!(normalize(&n), Ok(n.clone()), "normalize is not idempotent");
            Some(n)
        }
        Err(_) => None,
    };

    let Ok(t) = Template::parse(template) else {
        // A raw, unnormalised path must not panic the matcher either (issue #14, hole 12).
        return;
    };
    check_template(&t, template);
    let _ = t.matches(path);
    if let Some(n) = normalized {
        if let Some(bindings) = t.matches(&n) {
            check_bindings(&t, &n, &bindings);
        }
    }
});

fn check_template(t: &Template, source: &str) {
    assert_eq!(t.source, source);
    for v in &t.vars {
        assert!(v.start < v.end && v.end <= t.segs.len(), "{v:?} of {t:?}");
    }
    if let Some(i) = t.segs.iter().position(|s| *s == Seg::DoubleStar) {
        assert_eq!(i + 1, t.segs.len(), "'**' not last: {t:?}");
    }
    let shown = t.display();
    let again = Template::parse(&shown)
        .unwrap_or_else(|e| panic!("display {shown:?} of {source:?} does not parse: {e}"));
    assert_eq!(
        (&again.segs, &again.verb),
        (&t.segs, &t.verb),
        "display {shown:?}"
    );
}

fn check_bindings(t: &Template, path: &str, bindings: &[(String, String)]) {
    assert_eq!(bindings.len(), t.vars.len());
    // Rebuild the path from the literals and the bindings where every wildcard is a variable.
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < t.segs.len() {
        if let Some((k, v)) = t.vars.iter().enumerate().find(|(_, v)| v.start == i) {
            let (name, value) = &bindings[k];
            assert_eq!(name, &v.name);
            if t.segs[v.start..v.end].iter().all(|s| *s == Seg::Star) {
                assert_eq!(
                    value.split('/').count(),
                    v.end - v.start,
                    "{name} = {value:?} spans other segments"
                );
            }
            parts.push(value.clone());
            i = v.end;
        } else {
            match &t.segs[i] {
                Seg::Lit(l) => parts.push(l.clone()),
                _ => return,
            }
            i += 1;
        }
    }
    let rebuilt = format!("/{}", parts.join("/"));
    // The verb comes off first; then one optional trailing slash on either side.
    let bare = match &t.verb {
        Some(v) => path
            .strip_suffix(v.as_str())
            .and_then(|p| p.strip_suffix(':'))
            .unwrap_or(path),
        None => path,
    };
    let trim = |p: &str| {
        p.strip_suffix('/')
            .filter(|p| !p.is_empty())
            .unwrap_or(p)
            .to_owned()
    };
    assert_eq!(
        trim(bare),
        trim(&rebuilt),
        "{path:?} matched {:?} but the bindings rebuild {rebuilt:?}",
        t.source
    );
}

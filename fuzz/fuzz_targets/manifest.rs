//! The `gatehouse up` manifest parser on arbitrary text: never a panic; every problem names the
//! manifest; a manifest that parses has no duplicate names; `${...}` filling leaves text it
//! has no values for exactly as it was, and replaces every reference it has a value for.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use gatehouse_fuzz::manifest::{Manifest, fill, references};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The parser reads the OpenAPI files a manifest names; keep it away from device files.
    if ["/dev", "/proc", "/sys"].iter().any(|d| text.contains(d)) {
        return;
    }
    let base = Path::new("/nonexistent/gatehouse-fuzz");
    match Manifest::parse(text, base, "fuzz.yaml") {
        Ok(m) => {
            assert_eq!(m.base, base);
            for (what, names) in [
                (
                    "secrets",
                    m.secrets
                        .iter()
                        .map(|s| s.name.as_str())
                        .collect::<Vec<_>>(),
                ),
                (
                    "services",
                    m.services.iter().map(|s| s.name.as_str()).collect(),
                ),
                ("apis", m.apis.iter().map(|a| a.name.as_str()).collect()),
                (
                    "gateways",
                    m.gateways.iter().map(|g| g.name.as_str()).collect(),
                ),
                (
                    "service_accounts",
                    m.service_accounts.iter().map(|a| a.name.as_str()).collect(),
                ),
            ] {
                let unique: BTreeSet<&str> = names.iter().copied().collect();
                assert_eq!(
                    unique.len(),
                    names.len(),
                    "duplicate {what} accepted: {names:?}"
                );
            }
        }
        Err(e) => {
            assert!(!e.0.is_empty(), "an error without a problem");
            for p in &e.0 {
                assert!(
                    p.starts_with("fuzz.yaml: "),
                    "problem without its origin: {p:?}"
                );
            }
        }
    }

    assert_eq!(
        fill(text, &BTreeMap::new()),
        text,
        "fill with no values changed the text"
    );
    let refs = references(text);
    let values: BTreeMap<String, String> =
        refs.iter().map(|r| (r.clone(), "\u{1}".into())).collect();
    let filled = fill(text, &values);
    for r in &refs {
        assert!(r.contains('.'), "reference {r:?}");
    }
    for r in references(&filled) {
        assert!(!values.contains_key(&r), "${{{r}}} left after filling");
    }
});

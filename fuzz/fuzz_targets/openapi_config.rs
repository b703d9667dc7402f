//! The OpenAPI config compiler on arbitrary YAML/JSON text: never a panic; `validate` says
//! exactly what `parse_document` + `compile` say; a document reads the same as YAML and as its
//! JSON form; and a config that compiles is internally consistent.
#![no_main]

use gatehouse_gateway::config::{Scheme, compile, parse_document};
use gatehouse_gateway::template::Template;
use gatehouse_gateway::validate;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let problems = validate(text);
    let doc = match parse_document(text) {
        Ok(doc) => doc,
        Err(p) => {
            assert_eq!(problems, vec![p]);
            return;
        }
    };
    let compiled = compile(&doc);
    match &compiled {
        Ok(_) => assert!(
            problems.is_empty(),
            "validate: {problems:?} but compile succeeds"
        ),
        Err(ps) => {
            assert_eq!(&problems, ps);
            assert!(!ps.is_empty(), "compile failed without a problem");
            for p in ps {
                assert!(!p.location.is_empty() && !p.message.is_empty(), "{p:?}");
            }
        }
    }
    // Deterministic: the same document compiles to the same answer.
    assert_eq!(
        format!("{:?}", compile(&doc)),
        format!("{compiled:?}"),
        "compile is not deterministic"
    );

    // YAML and its JSON form are one document.
    if doc.is_object() {
        let json = doc.to_string();
        let again =
            parse_document(&json).unwrap_or_else(|p| panic!("JSON form does not parse: {p}"));
        assert_eq!(again, doc, "the JSON form reads differently");
    }

    if let Ok(cfg) = compiled {
        for r in &cfg.routes {
            assert!(
                r.method == "*"
                    || (!r.method.is_empty() && r.method.bytes().all(|b| b.is_ascii_uppercase())),
                "method {:?}",
                r.method
            );
            assert_eq!(
                Template::parse(&r.template.source).as_ref(),
                Ok(&r.template)
            );
            assert!(
                !r.backend.path.ends_with('/'),
                "backend path {:?}",
                r.backend.path
            );
            if let Some(origin) = &r.backend.origin {
                let rest = origin.split_once("://").map(|(_, rest)| rest);
                assert!(
                    rest.is_some_and(|r| !r.is_empty() && !r.contains('/')),
                    "backend origin {origin:?} is not scheme://host[:port]"
                );
            }
            for requirement in &r.security {
                for s in requirement {
                    if let Scheme::Jwt(i) = s {
                        assert!(
                            *i < cfg.providers.len(),
                            "provider {i} of {}",
                            cfg.providers.len()
                        );
                    }
                }
            }
        }
    }
});

//! The workspace's crates form no cycle, dev-dependencies included: test support is layered
//! like the code (`gatehouse-testkit` under every crate's tests, `gatehouse-world` above IAM
//! and Secret Manager), so no test links a second copy of the crate it tests.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use serde_json::Value;

/// Every workspace crate and the workspace crates it names, in any dependency table.
fn graph() -> BTreeMap<String, Vec<String>> {
    let out = std::process::Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .current_dir(gatehouse_testkit::workspace_root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).unwrap();
    let packages = meta["packages"].as_array().unwrap();
    let names: Vec<&str> = packages
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    packages
        .iter()
        .map(|p| {
            let deps = p["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["name"].as_str().unwrap())
                .filter(|d| names.contains(d))
                .map(str::to_owned)
                .collect();
            (p["name"].as_str().unwrap().to_owned(), deps)
        })
        .collect()
}

/// A cycle reached from `node`, if any (depth first; `path` holds the crates on the way).
fn cycle(g: &BTreeMap<String, Vec<String>>, node: &str, path: &mut Vec<String>) -> Option<String> {
    if let Some(at) = path.iter().position(|p| p == node) {
        return Some(format!("{} -> {node}", path[at..].join(" -> ")));
    }
    path.push(node.to_owned());
    for dep in g.get(node).into_iter().flatten() {
        if let Some(c) = cycle(g, dep, path) {
            return Some(c);
        }
    }
    path.pop();
    None
}

#[test]
fn no_crate_depends_on_itself_through_its_tests() {
    let g = graph();
    assert!(g.contains_key("gatehouse-world"), "{g:?}");
    for name in g.keys() {
        if let Some(c) = cycle(&g, name, &mut Vec::new()) {
            panic!("dependency cycle: {c}");
        }
    }
}

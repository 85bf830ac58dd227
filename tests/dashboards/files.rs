//! Reading the repository's stack files: dashboards, alert rules, compose and provisioning.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value as Json;
use serde_norway::Value as Yaml;

pub(crate) fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub(crate) fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

pub(crate) fn yaml(relative: &str) -> Yaml {
    yaml_at(&repo().join(relative))
}

pub(crate) fn yaml_at(path: &Path) -> Yaml {
    serde_norway::from_str(&read(path))
        .unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// The files of a folder of the repository with this extension, sorted.
pub(crate) fn files(folder: &str, extension: &str) -> Vec<PathBuf> {
    let dir = repo().join(folder);
    let mut found: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == extension))
        .collect();
    found.sort();
    assert!(!found.is_empty(), "no *.{extension} in {}", dir.display());
    found
}

/// Every dashboard, by file name.
pub(crate) fn dashboards() -> Vec<(String, Json)> {
    files("dashboards", "json")
        .into_iter()
        .map(|path| {
            let json = serde_json::from_str(&read(&path))
                .unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()));
            (name(&path), json)
        })
        .collect()
}

pub(crate) fn name(path: &Path) -> String {
    path.file_name()
        .expect("a file name")
        .to_string_lossy()
        .into_owned()
}

/// Where the alert rules live, and their `promtool test rules` files.
pub(crate) const RULES: &str = "observability/rules";
pub(crate) const RULE_TESTS: &str = "observability/rules/tests";

/// One alerting rule of `observability/rules`.
pub(crate) struct Alert {
    pub(crate) file: String,
    pub(crate) name: String,
    pub(crate) expr: String,
    pub(crate) rule: Yaml,
}

pub(crate) fn alerts() -> Vec<Alert> {
    let mut out = Vec::new();
    for path in files(RULES, "yml") {
        let file = name(&path);
        let doc = yaml_at(&path);
        let groups = doc
            .get("groups")
            .and_then(Yaml::as_sequence)
            .unwrap_or_else(|| panic!("{file}: no groups"));
        for rule in groups.iter().flat_map(|g| {
            g.get("rules")
                .and_then(Yaml::as_sequence)
                .into_iter()
                .flatten()
        }) {
            let Some(name) = rule.get("alert").and_then(Yaml::as_str) else {
                continue;
            };
            let expr = rule
                .get("expr")
                .and_then(Yaml::as_str)
                .unwrap_or_else(|| panic!("{file}: alert {name} has no expr"));
            out.push(Alert {
                file: file.clone(),
                name: name.to_owned(),
                expr: expr.to_owned(),
                rule: rule.clone(),
            });
        }
    }
    out
}

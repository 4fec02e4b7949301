//! The operator kit's files (dashboards/, alerts/) and the PromQL expressions in them.

use std::path::{Path, PathBuf};

pub fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// Files of a kit directory whose names end with `suffix`, sorted.
pub fn kit_files(dir: &str, suffix: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo_path(dir))
        .unwrap_or_else(|e| panic!("read {dir}: {e}"))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.to_string_lossy().ends_with(suffix))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no {suffix} files in {dir}");
    files
}

/// Every dashboard, parsed.
pub fn dashboards() -> Vec<(PathBuf, serde_json::Value)> {
    kit_files("dashboards", ".json")
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("read dashboard");
            let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()));
            (path, json)
        })
        .collect()
}

/// Every panel of a dashboard, rows' nested panels included.
pub fn panels(dashboard: &serde_json::Value) -> Vec<&serde_json::Value> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        out.push(panel);
        out.extend(panel["panels"].as_array().into_iter().flatten());
    }
    out
}

/// One PromQL expression of the kit and where it comes from.
#[derive(Debug, Clone)]
pub struct Expr {
    pub origin: String,
    pub promql: String,
}

/// The expressions of every dashboard: panel targets, and the series selector inside each
/// `label_values(<selector>, <label>)` variable query.
pub fn dashboard_exprs() -> Vec<Expr> {
    let mut out = Vec::new();
    for (path, dashboard) in dashboards() {
        let file = path.file_name().expect("file name").to_string_lossy().into_owned();
        for panel in panels(&dashboard) {
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    out.push(Expr {
                        origin: format!("{file}: panel {:?} target {}", panel["title"], target["refId"]),
                        promql: expr.to_owned(),
                    });
                }
            }
        }
        for variable in dashboard["templating"]["list"].as_array().into_iter().flatten() {
            if variable["type"] != "query" {
                continue;
            }
            let query = variable["query"]["query"]
                .as_str()
                .or(variable["query"].as_str())
                .expect("a variable's query");
            let inner = query
                .strip_prefix("label_values(")
                .and_then(|q| q.strip_suffix(')'))
                .and_then(|q| q.rsplit_once(','))
                .map(|(selector, _label)| selector.trim())
                .unwrap_or_else(|| panic!("{file}: variable query {query:?} is not label_values(selector, label)"));
            out.push(Expr {
                origin: format!("{file}: variable {}", variable["name"]),
                promql: inner.to_owned(),
            });
        }
    }
    out
}

/// The rule files (not their unit tests).
pub fn rule_files() -> Vec<PathBuf> {
    kit_files("alerts", ".rules.yml")
}

/// The rules of every rule file, parsed.
pub fn rules() -> Vec<(String, serde_yaml_ng::Value)> {
    let mut out = Vec::new();
    for path in rule_files() {
        let file = path.file_name().expect("file name").to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).expect("read rules");
        let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("rules are YAML");
        for group in doc["groups"].as_sequence().expect("groups") {
            for rule in group["rules"].as_sequence().expect("rules") {
                out.push((file.clone(), rule.clone()));
            }
        }
    }
    out
}

/// The expression of every recording and alerting rule.
pub fn rule_exprs() -> Vec<Expr> {
    rules()
        .into_iter()
        .map(|(file, rule)| {
            let name = rule["alert"]
                .as_str()
                .or(rule["record"].as_str())
                .expect("alert or record");
            Expr {
                origin: format!("{file}: {name}"),
                promql: rule["expr"].as_str().expect("expr").trim().to_owned(),
            }
        })
        .collect()
}

/// A dashboard expression with Grafana's variables replaced by what an operator would pick:
/// every instance/namespace/pod/container, and 5-minute windows. Panics on a variable it
/// does not know, so a typo cannot hide.
pub fn substitute(promql: &str) -> String {
    substitute_instance(promql, ".*")
}

/// [`substitute`] with one instance picked (a regex, as Grafana passes a selection).
pub fn substitute_instance(promql: &str, instance: &str) -> String {
    let out = promql
        .replace("$__rate_interval", "5m")
        .replace("$__interval", "15s")
        .replace("$__range", "5m")
        .replace("$instance", instance)
        .replace("$namespace", ".*")
        .replace("$pod", ".*")
        .replace("$container", ".*");
    assert!(!out.contains('$'), "unknown variable in {promql:?}");
    out
}

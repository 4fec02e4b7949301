//! The operator kit's files, checked without a cluster: dashboards are importable Grafana
//! JSON (unique panel ids, only the templated datasource), rules pass `promtool check rules`
//! and their unit tests (every alert firing and not firing, each with a runbook), the
//! Kubernetes manifests pass an offline schema validation, and the compose stack mounts
//! files that exist.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use common::kit::{dashboards, kit_files, panels, repo_path, rule_files, rules};
use common::require_tool;
use serde_json::Value;

/// Every `datasource` of a dashboard that is not the `${datasource}` variable.
fn hard_coded_datasources(value: &Value, path: &str, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let here = format!("{path}.{key}");
                if key == "datasource" {
                    let templated = match child {
                        Value::String(s) => s == "${datasource}",
                        Value::Object(ds) => ds.get("uid") == Some(&Value::from("${datasource}")),
                        _ => false,
                    };
                    if !templated {
                        out.push(format!("{here} = {child}"));
                    }
                }
                hard_coded_datasources(child, &here, out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                hard_coded_datasources(child, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn variable_names(dashboard: &Value) -> BTreeMap<String, Value> {
    dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list")
        .iter()
        .map(|v| (v["name"].as_str().expect("variable name").to_owned(), v.clone()))
        .collect()
}

#[test]
fn dashboards_are_importable_json_with_unique_panel_ids_and_only_the_templated_datasource() {
    let all = dashboards();
    assert_eq!(all.len(), 3, "Containers, Connections and sonde");
    let mut uids = BTreeSet::new();
    for (path, dashboard) in &all {
        let file = path.display();
        assert!(
            uids.insert(dashboard["uid"].as_str().expect("uid").to_owned()),
            "{file}: uid reused"
        );
        assert!(
            dashboard["id"].is_null(),
            "{file}: an exported id would clash on import"
        );
        assert!(
            dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 39),
            "{file}: schemaVersion"
        );
        assert_eq!(
            dashboard["__inputs"],
            Value::Array(vec![]),
            "{file}: import-time inputs"
        );

        let mut ids = BTreeSet::new();
        for panel in panels(dashboard) {
            let id = panel["id"]
                .as_u64()
                .unwrap_or_else(|| panic!("{file}: panel without id"));
            assert!(ids.insert(id), "{file}: panel id {id} is used twice");
            let grid = &panel["gridPos"];
            let (x, w) = (grid["x"].as_u64().expect("x"), grid["w"].as_u64().expect("w"));
            assert!(x + w <= 24, "{file}: panel {id} is wider than the grid");
            if panel["type"] != "row" {
                let exprs: Vec<&str> = panel["targets"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|t| t["expr"].as_str())
                    .collect();
                assert!(
                    !exprs.is_empty() && exprs.iter().all(|e| !e.trim().is_empty()),
                    "{file}: panel {id} has no query"
                );
            }
        }

        let mut hard_coded = Vec::new();
        hard_coded_datasources(dashboard, "", &mut hard_coded);
        assert!(
            hard_coded.is_empty(),
            "{file}: datasources not templated: {hard_coded:?}"
        );

        let variables = variable_names(dashboard);
        let datasource = &variables["datasource"];
        assert_eq!(
            (&datasource["type"], &datasource["query"]),
            (&Value::from("datasource"), &Value::from("prometheus")),
            "{file}"
        );
        assert!(variables.contains_key("instance"), "{file}: no instance variable");
        if !file.to_string().ends_with("sonde.json") {
            for name in ["namespace", "pod", "container"] {
                assert!(variables.contains_key(name), "{file}: no {name} variable");
            }
        }
    }

    // The check finds a hard-coded datasource where there is one.
    let (_, mut dashboard) = all.into_iter().next().expect("a dashboard");
    dashboard["panels"][1]["datasource"] = serde_json::json!({"type": "prometheus", "uid": "P1809F7CD0C75ACF3"});
    let mut hard_coded = Vec::new();
    hard_coded_datasources(&dashboard, "", &mut hard_coded);
    assert_eq!(hard_coded.len(), 1, "{hard_coded:?}");
}

#[test]
fn rules_pass_promtool_check_and_their_unit_tests() {
    let promtool = require_tool("promtool");
    for file in rule_files() {
        let out = Command::new(&promtool)
            .args(["check", "rules"])
            .arg(&file)
            .output()
            .expect("run promtool");
        assert!(out.status.success(), "promtool check rules {}: {out:?}", file.display());
    }
    for file in kit_files("alerts", ".test.yml") {
        let out = Command::new(&promtool)
            .args(["test", "rules"])
            .arg(&file)
            .current_dir(repo_path("alerts"))
            .output()
            .expect("run promtool");
        assert!(
            out.status.success(),
            "promtool test rules {}:\n{}{}",
            file.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn every_alert_has_a_runbook_and_unit_tests_firing_and_not_firing() {
    let alerts: BTreeSet<String> = rules()
        .iter()
        .filter_map(|(file, rule)| {
            let name = rule["alert"].as_str()?;
            let runbook = rule["annotations"]["runbook"].as_str().unwrap_or_default();
            assert!(!runbook.trim().is_empty(), "{file}: {name} has no runbook annotation");
            Some(name.to_owned())
        })
        .collect();
    assert_eq!(alerts.len(), 8, "{alerts:?}");

    let (mut firing, mut quiet) = (BTreeSet::new(), BTreeSet::new());
    for file in kit_files("alerts", ".test.yml") {
        let doc: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(&std::fs::read_to_string(&file).expect("read tests")).expect("YAML");
        for test in doc["tests"].as_sequence().expect("tests") {
            for case in test["alert_rule_test"].as_sequence().into_iter().flatten() {
                let name = case["alertname"].as_str().expect("alertname").to_owned();
                let expected = case["exp_alerts"].as_sequence().map_or(0, Vec::len);
                if expected > 0 { &mut firing } else { &mut quiet }.insert(name);
            }
        }
    }
    for alert in &alerts {
        assert!(firing.contains(alert), "no unit test shows {alert} firing");
        assert!(quiet.contains(alert), "no unit test shows {alert} not firing");
    }
}

#[test]
fn kubernetes_manifests_pass_an_offline_schema_validation() {
    let validator = repo_path("docker/kubernetes/validate.py");
    let out = Command::new(require_tool("python3"))
        .arg(&validator)
        .output()
        .expect("run validate.py");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{report}");
    assert!(report.contains("6 files, 0 problems"), "{report}");

    // Broken copies are rejected: a misspelt field in the DaemonSet (a built-in kind) and
    // in the ServiceMonitor (our own schema).
    let dir = tempfile::tempdir().expect("tempdir");
    let mut broken = Vec::new();
    for (file, from, to) in [
        ("daemonset.yaml", "hostPID: true", "hostPid: true"),
        ("servicemonitor.yaml", "    - port: metrics", "    - portt: metrics"),
    ] {
        let text = std::fs::read_to_string(repo_path(&format!("docker/kubernetes/{file}"))).expect("read manifest");
        assert!(text.contains(from), "{file} has no {from:?}");
        let path = dir.path().join(file);
        std::fs::write(&path, text.replacen(from, to, 1)).expect("write broken copy");
        broken.push(path);
    }
    let out = Command::new("python3")
        .arg(&validator)
        .args(&broken)
        .output()
        .expect("run validate.py");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{report}");
    assert!(report.contains("'hostPid' was unexpected"), "{report}");
    assert!(report.contains("'portt' was unexpected"), "{report}");
}

#[test]
fn the_compose_stack_mounts_files_that_exist_and_its_prometheus_config_is_valid() {
    let compose: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(repo_path("docker/compose.yaml")).expect("read compose"))
            .expect("compose is YAML");
    let mut sources = 0;
    for (name, service) in compose["services"].as_mapping().expect("services") {
        for volume in service["volumes"].as_sequence().into_iter().flatten() {
            let source = volume
                .as_str()
                .expect("short volume syntax")
                .split(':')
                .next()
                .expect("source");
            if source.starts_with('.') {
                assert!(
                    repo_path("docker").join(source).exists(),
                    "{name:?} mounts {source}, which does not exist"
                );
                sources += 1;
            }
        }
    }
    assert_eq!(sources, 4, "prometheus.yml, alerts, Grafana provisioning, dashboards");
    let sonde = &compose["services"]["sonde"];
    assert_eq!(sonde["pid"], "host");
    let caps: BTreeSet<&str> = sonde["cap_add"]
        .as_sequence()
        .expect("cap_add")
        .iter()
        .filter_map(|c| c.as_str())
        .collect();
    assert_eq!(caps, BTreeSet::from(["SYS_ADMIN", "SYS_PTRACE"]));

    // docker-compose validates the file against the Compose schema, offline; a misspelt
    // option is refused.
    let compose_tool = require_tool("docker-compose");
    let out = Command::new(&compose_tool)
        .args(["-f", "compose.yaml", "config", "-q"])
        .current_dir(repo_path("docker"))
        .output()
        .expect("run docker-compose");
    assert!(out.status.success(), "docker-compose config: {out:?}");
    let dir = tempfile::tempdir().expect("tempdir");
    let text = std::fs::read_to_string(repo_path("docker/compose.yaml")).expect("read compose");
    std::fs::write(
        dir.path().join("compose.yaml"),
        text.replacen("pid: host", "pidd: host", 1),
    )
    .expect("write");
    let out = Command::new(&compose_tool)
        .args(["-f", "compose.yaml", "config", "-q"])
        .current_dir(dir.path())
        .output()
        .expect("run docker-compose");
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("pidd"),
        "a misspelt option passed: {out:?}"
    );

    let out = Command::new(require_tool("promtool"))
        .args(["check", "config", "--syntax-only"])
        .arg(repo_path("docker/prometheus/prometheus.yml"))
        .output()
        .expect("run promtool");
    assert!(out.status.success(), "promtool check config: {out:?}");
}

/// The runtime stage of a Dockerfile: its lines from `FROM scratch` on, comments and the
/// COPY of the binary (which differs in where it comes from) left out.
fn runtime_stage(file: &str) -> Vec<String> {
    let text = std::fs::read_to_string(repo_path(file)).expect("read Dockerfile");
    let from = text
        .find("\nFROM scratch\n")
        .unwrap_or_else(|| panic!("{file} has no FROM scratch stage"));
    text[from..]
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with("COPY"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_host_built_image_has_the_same_runtime_stage_as_the_multi_stage_dockerfile() {
    let multi_stage = runtime_stage("docker/Dockerfile");
    assert!(
        multi_stage.iter().any(|l| l == "ENTRYPOINT [\"/sonde\"]"),
        "{multi_stage:?}"
    );
    assert_eq!(multi_stage, runtime_stage("docker/Dockerfile.scratch"));
}

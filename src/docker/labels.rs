//! Which container labels and environment variables become series labels, under the names
//! cAdvisor gives them: `container_label_<key>` and `container_env_<name>`, with every
//! character that a label name cannot hold replaced by `_`.

use std::collections::{BTreeMap, HashMap};

use regex::Regex;

/// The label that keeps a container out of every report, as the container filters document.
pub const EXCLUDE_LABEL: &str = "sonde.io/exclude";

/// The allowlists of `--docker.label-allowlist` and `--docker.env-allowlist`.
#[derive(Debug, Clone, Default)]
pub struct Allowlists {
    pub labels: Option<Regex>,
    pub env: Option<Regex>,
}

impl Allowlists {
    /// The extra series labels of a container, sorted by name. Two keys that sanitize to the
    /// same name keep the value of the first in key order, so the label set stays valid.
    pub fn extra_labels(&self, labels: &HashMap<String, String>, env: &[String]) -> Vec<(String, String)> {
        let mut out = BTreeMap::new();
        if let Some(re) = &self.labels {
            let mut keys: Vec<&String> = labels.keys().filter(|k| re.is_match(k)).collect();
            keys.sort();
            for key in keys {
                out.entry(format!("container_label_{}", sanitize(key)))
                    .or_insert_with(|| labels[key].clone());
            }
        }
        if let Some(re) = &self.env {
            let mut vars: Vec<(&str, &str)> = env
                .iter()
                .filter_map(|entry| entry.split_once('='))
                .filter(|(name, _)| re.is_match(name))
                .collect();
            vars.sort();
            for (name, value) in vars {
                // cAdvisor lower-cases environment variable names.
                out.entry(format!("container_env_{}", sanitize(&name.to_lowercase())))
                    .or_insert_with(|| value.to_owned());
            }
        }
        out.into_iter().collect()
    }
}

/// A label name from any text: characters other than `[a-zA-Z0-9_]` become `_`.
pub fn sanitize(key: &str) -> String {
    key.chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' })
        .collect()
}

/// Whether the container asked not to be reported.
pub fn excluded(labels: &HashMap<String, String>) -> bool {
    labels
        .get(EXCLUDE_LABEL)
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn re(s: &str) -> Option<Regex> {
        Some(Regex::new(s).expect("valid regex"))
    }

    #[test]
    fn only_allowlisted_keys_become_labels_with_sanitized_names() {
        let labels: HashMap<String, String> = [
            ("com.example/team", "payments \"core\""),
            ("com-example/team", "shadowed"),
            ("maintainer", "ops"),
            ("zone.ünï", "eu"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let env = [
            "APP_MODE=fast=yes".to_owned(),
            "PATH=/bin".to_owned(),
            "APP_EMPTY=".to_owned(),
            "BARE".to_owned(),
        ];

        assert!(
            Allowlists::default().extra_labels(&labels, &env).is_empty(),
            "default: none"
        );

        let lists = Allowlists {
            labels: re("^com|zone"),
            env: re("^APP_"),
        };
        let pairs = |v: &[(&str, &str)]| {
            v.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            lists.extra_labels(&labels, &env),
            pairs(&[
                ("container_env_app_empty", ""),
                ("container_env_app_mode", "fast=yes"),
                ("container_label_com_example_team", "shadowed"),
                ("container_label_zone__n_", "eu"),
            ])
        );
    }

    #[test]
    fn the_exclude_label() {
        let with = |v: &str| HashMap::from([(EXCLUDE_LABEL.to_owned(), v.to_owned())]);
        assert!(excluded(&with("true")) && excluded(&with(" TRUE ")));
        assert!(!excluded(&with("false")) && !excluded(&HashMap::new()));
    }
}

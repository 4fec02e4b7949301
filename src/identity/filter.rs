//! Which containers are reported: include/exclude regexes on name, image and namespace, and
//! the `sonde.io/exclude=true` label or annotation.

use regex::Regex;

use super::metadata::Metadata;
use crate::settings::{self, InvalidValue};

/// Regexes match anywhere in the value (anchor them with `^…$` for whole values). A value
/// sonde does not know is the empty string.
#[derive(Debug, Clone, Default)]
pub struct Filters {
    pub include_name: Option<Regex>,
    pub exclude_name: Option<Regex>,
    pub include_image: Option<Regex>,
    pub exclude_image: Option<Regex>,
    pub include_namespace: Option<Regex>,
    pub exclude_namespace: Option<Regex>,
}

impl Filters {
    pub fn excludes(&self, m: &Metadata) -> bool {
        let fails_include = |re: &Option<Regex>, value: &str| re.as_ref().is_some_and(|re| !re.is_match(value));
        let hits_exclude = |re: &Option<Regex>, value: &str| re.as_ref().is_some_and(|re| re.is_match(value));
        m.exclude
            || fails_include(&self.include_name, &m.name)
            || fails_include(&self.include_image, &m.image)
            || fails_include(&self.include_namespace, &m.namespace)
            || hits_exclude(&self.exclude_name, &m.name)
            || hits_exclude(&self.exclude_image, &m.image)
            || hits_exclude(&self.exclude_namespace, &m.namespace)
    }
}

/// The `--container.include-*` and `--container.exclude-*` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct FilterArgs {
    #[arg(
        id = "container.include-name",
        long = "container.include-name",
        value_name = "REGEX",
        help = "Report only containers whose name matches this regex"
    )]
    include_name: Option<String>,
    #[arg(
        id = "container.exclude-name",
        long = "container.exclude-name",
        value_name = "REGEX",
        help = "Do not report containers whose name matches this regex"
    )]
    exclude_name: Option<String>,
    #[arg(
        id = "container.include-image",
        long = "container.include-image",
        value_name = "REGEX",
        help = "Report only containers whose image matches this regex"
    )]
    include_image: Option<String>,
    #[arg(
        id = "container.exclude-image",
        long = "container.exclude-image",
        value_name = "REGEX",
        help = "Do not report containers whose image matches this regex"
    )]
    exclude_image: Option<String>,
    #[arg(
        id = "container.include-namespace",
        long = "container.include-namespace",
        value_name = "REGEX",
        help = "Report only containers whose namespace matches this regex"
    )]
    include_namespace: Option<String>,
    #[arg(
        id = "container.exclude-namespace",
        long = "container.exclude-namespace",
        value_name = "REGEX",
        help = "Do not report containers whose namespace matches this regex"
    )]
    exclude_namespace: Option<String>,
}

impl FilterArgs {
    pub fn resolve(&self) -> Result<Filters, InvalidValue> {
        Ok(Filters {
            include_name: settings::regex("container.include-name", self.include_name.as_deref())?,
            exclude_name: settings::regex("container.exclude-name", self.exclude_name.as_deref())?,
            include_image: settings::regex("container.include-image", self.include_image.as_deref())?,
            exclude_image: settings::regex("container.exclude-image", self.exclude_image.as_deref())?,
            include_namespace: settings::regex("container.include-namespace", self.include_namespace.as_deref())?,
            exclude_namespace: settings::regex("container.exclude-namespace", self.exclude_namespace.as_deref())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn re(s: &str) -> Option<Regex> {
        Some(Regex::new(s).expect("valid regex"))
    }

    fn meta(name: &str, image: &str, namespace: &str) -> Metadata {
        Metadata {
            name: name.into(),
            image: image.into(),
            namespace: namespace.into(),
            ..Metadata::default()
        }
    }

    #[test]
    fn include_and_exclude() {
        let none = Filters::default();
        assert!(!none.excludes(&meta("web", "nginx:1", "prod")));
        assert!(
            none.excludes(&Metadata {
                exclude: true,
                ..meta("web", "nginx:1", "prod")
            }),
            "the sonde.io/exclude label or annotation wins"
        );

        let f = Filters {
            exclude_name: re("^sidecar-"),
            exclude_image: re("pause"),
            include_namespace: re("^(prod|staging)$"),
            ..Filters::default()
        };
        assert!(!f.excludes(&meta("web", "nginx:1", "prod")));
        assert!(f.excludes(&meta("sidecar-log", "fluent", "prod")));
        assert!(f.excludes(&meta("web", "registry.k8s.io/pause:3.9", "prod")));
        assert!(f.excludes(&meta("web", "nginx:1", "kube-system")));
        assert!(
            f.excludes(&meta("web", "nginx:1", "")),
            "an unknown namespace is not included"
        );

        let images = Filters {
            include_image: re("^nginx"),
            ..Filters::default()
        };
        assert!(!images.excludes(&meta("", "nginx:1", "")));
        assert!(images.excludes(&meta("", "redis:7", "")));
    }
}

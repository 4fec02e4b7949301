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

/// `(flag, help)` of the filter flags, in `--help` order: include and exclude, for the name,
/// the image and the namespace.
const FLAGS: [(&str, &str); 6] = [
    (
        "container.include-name",
        "Report only containers whose name matches this regex",
    ),
    (
        "container.exclude-name",
        "Do not report containers whose name matches this regex",
    ),
    (
        "container.include-image",
        "Report only containers whose image matches this regex",
    ),
    (
        "container.exclude-image",
        "Do not report containers whose image matches this regex",
    ),
    (
        "container.include-namespace",
        "Report only containers whose namespace matches this regex",
    ),
    (
        "container.exclude-namespace",
        "Do not report containers whose namespace matches this regex",
    ),
];

/// The `--container.include-*` and `--container.exclude-*` flags: their patterns, in the
/// order of [`FLAGS`]. Written against clap's `Args` by hand: six flags of one shape.
#[derive(Debug, Clone, Default)]
pub struct FilterArgs([Option<String>; 6]);

impl FilterArgs {
    pub fn resolve(&self) -> Result<Filters, InvalidValue> {
        let regex = |i: usize| settings::regex(FLAGS[i].0, self.0[i].as_deref());
        Ok(Filters {
            include_name: regex(0)?,
            exclude_name: regex(1)?,
            include_image: regex(2)?,
            exclude_image: regex(3)?,
            include_namespace: regex(4)?,
            exclude_namespace: regex(5)?,
        })
    }
}

impl clap::Args for FilterArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        FLAGS.iter().fold(cmd, |cmd, (flag, help)| {
            cmd.arg(
                clap::Arg::new(*flag)
                    .long(*flag)
                    .value_name("REGEX")
                    .help(*help)
                    .action(clap::ArgAction::Set),
            )
        })
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

impl clap::FromArgMatches for FilterArgs {
    fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
        Ok(Self(FLAGS.map(|(flag, _)| m.get_one::<String>(flag).cloned())))
    }

    fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
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

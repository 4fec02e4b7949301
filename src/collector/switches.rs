//! `--collector.<name>` and `--no-collector.<name>`: one pair for each collector of the
//! registry switched by flags. Written against clap's `Args` by hand because the flags come
//! from the registry, not from fields.

use std::collections::BTreeMap;

use clap::builder::BoolishValueParser;
use clap::{Arg, ArgAction, ArgMatches, Command};

use super::{Switch, registry};

/// Collector name → on, for every collector switched by flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectorSwitches(BTreeMap<String, bool>);

impl CollectorSwitches {
    pub fn enabled(&self, name: &str) -> bool {
        self.0.get(name).copied().unwrap_or(false)
    }
}

/// The switchable collectors: name, help, and whether they run by default.
fn switchable() -> impl Iterator<Item = (&'static str, &'static str, bool)> {
    registry().iter().filter_map(|spec| match spec.switch {
        Switch::Flags { on_by_default, help } => Some((spec.name, help, on_by_default)),
        Switch::WithItsSource => None,
    })
}

impl clap::Args for CollectorSwitches {
    fn augment_args(mut cmd: Command) -> Command {
        for (name, help, on_by_default) in switchable() {
            let on = format!("collector.{name}");
            let off = format!("no-collector.{name}");
            cmd = cmd
                .arg(
                    Arg::new(on.clone())
                        .long(on.clone())
                        .help(format!("Enable the {name} collector: {help}"))
                        .value_name("BOOL")
                        .num_args(0..=1)
                        .require_equals(true)
                        .default_missing_value("true")
                        .default_value(if on_by_default { "true" } else { "false" })
                        .value_parser(BoolishValueParser::new())
                        .overrides_with(off.clone()),
                )
                .arg(
                    Arg::new(off.clone())
                        .long(off)
                        .help(format!("Disable the {name} collector"))
                        .action(ArgAction::SetTrue)
                        .overrides_with(on),
                );
        }
        cmd
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

impl clap::FromArgMatches for CollectorSwitches {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        Ok(Self(
            switchable()
                .map(|(name, _, on_by_default)| {
                    let disabled = m.get_flag(&format!("no-collector.{name}"));
                    let enabled = m.get_one::<bool>(&format!("collector.{name}")).copied();
                    (name.to_owned(), !disabled && enabled.unwrap_or(on_by_default))
                })
                .collect(),
        ))
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

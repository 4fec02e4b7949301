//! What every part's settings share: the error for a value a flag cannot take, and the
//! parsers of the value shapes several parts use (durations, regexes, sizes). Each part owns
//! its flags (a `clap::Args` struct beside its code) and turns them into its settings; the
//! command line (`cli`) only composes them.

use std::time::Duration;

use regex::Regex;

/// A flag's value that its part cannot use, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid value {value:?} for --{flag}: {reason}")]
pub struct InvalidValue {
    pub flag: &'static str,
    pub value: String,
    pub reason: String,
}

impl InvalidValue {
    pub fn new(flag: &'static str, value: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            flag,
            value: value.into(),
            reason: reason.into(),
        }
    }
}

/// A Prometheus-style duration (`10s`, `500ms`, `2m`); a bare number is seconds. Zero is
/// refused: every duration sonde takes is a window or a limit.
pub fn duration(flag: &'static str, value: &str) -> Result<Duration, InvalidValue> {
    let parsed = match value.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs >= 0.0 => Ok(Duration::from_secs_f64(secs)),
        Ok(_) => Err("must be a non-negative duration".to_owned()),
        Err(_) => humantime::parse_duration(value).map_err(|e| e.to_string()),
    };
    match parsed {
        Ok(d) if d.is_zero() => Err(InvalidValue::new(flag, value, "must be greater than zero")),
        Ok(d) => Ok(d),
        Err(reason) => Err(InvalidValue::new(flag, value, reason)),
    }
}

/// An optional regex; the reason is the last line of the regex crate's message (the one
/// that names the problem), so the error stays one line.
pub fn regex(flag: &'static str, pattern: Option<&str>) -> Result<Option<Regex>, InvalidValue> {
    pattern
        .map(|pattern| {
            Regex::new(pattern).map_err(|e| {
                let message = e.to_string();
                let reason = message.lines().last().unwrap_or("invalid regex").trim().to_owned();
                InvalidValue::new(flag, pattern, reason)
            })
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units_or_seconds_and_refuse_zero() {
        assert_eq!(duration("x", "2m"), Ok(Duration::from_secs(120)));
        assert_eq!(duration("x", "0.25"), Ok(Duration::from_millis(250)));
        let zero = duration("x", "0s").expect_err("zero");
        assert_eq!(
            zero.to_string(),
            "invalid value \"0s\" for --x: must be greater than zero"
        );
        assert!(duration("x", "soon").is_err());
        assert!(duration("x", "-1").is_err());
    }

    #[test]
    fn regex_errors_are_one_line() {
        assert!(regex("x", None).expect("none").is_none());
        let err = regex("x", Some("(")).expect_err("bad");
        assert_eq!(err.to_string().lines().count(), 1, "{err}");
    }
}

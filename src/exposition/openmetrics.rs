//! OpenMetrics 1.0.0 text encoding over the `prometheus` crate's `MetricFamily` model, which
//! ships only the 0.0.4 text and protobuf encoders.
//!
//! What differs from text 0.0.4: counter families are named without `_total` (their samples
//! keep it), untyped becomes `unknown`, HELP escapes `"` too, timestamps are in seconds, and
//! the exposition ends with `# EOF`. The model has no units, so no `# UNIT` line is written.

use std::io::Write;

use prometheus::proto::{LabelPair, Metric, MetricFamily, MetricType};

/// The `Content-Type` of an OpenMetrics answer.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The last line of every OpenMetrics exposition.
pub const EOF: &[u8] = b"# EOF\n";

/// Appends the families to `out`, then `# EOF`.
pub fn encode(families: &[MetricFamily], out: &mut Vec<u8>) {
    for family in families {
        encode_family(family, out);
    }
    out.extend_from_slice(EOF);
}

/// Appends one family. A family with no samples is left out, as the text encoder refuses it.
pub fn encode_family(family: &MetricFamily, out: &mut Vec<u8>) {
    if family.get_metric().is_empty() {
        return;
    }
    let name = family.name();
    let kind = family.get_field_type();
    let (family_name, type_name) = match kind {
        MetricType::COUNTER => (name.strip_suffix("_total").unwrap_or(name), "counter"),
        MetricType::GAUGE => (name, "gauge"),
        MetricType::SUMMARY => (name, "summary"),
        MetricType::HISTOGRAM => (name, "histogram"),
        MetricType::UNTYPED => (name, "unknown"),
    };
    out.extend_from_slice(b"# TYPE ");
    out.extend_from_slice(family_name.as_bytes());
    out.push(b' ');
    out.extend_from_slice(type_name.as_bytes());
    out.push(b'\n');
    if !family.help().is_empty() {
        out.extend_from_slice(b"# HELP ");
        out.extend_from_slice(family_name.as_bytes());
        out.push(b' ');
        escape_into(family.help(), out);
        out.push(b'\n');
    }
    for metric in family.get_metric() {
        let labels = metric.get_label();
        match kind {
            MetricType::COUNTER => {
                let value = metric.get_counter().value();
                sample(out, family_name, "_total", labels, None, value, metric);
            }
            MetricType::GAUGE => {
                sample(out, name, "", labels, None, metric.get_gauge().value(), metric);
            }
            MetricType::UNTYPED => {
                sample(out, name, "", labels, None, metric.untyped.value(), metric);
            }
            MetricType::SUMMARY => {
                let summary = metric.get_summary();
                for quantile in &summary.quantile {
                    let q = canonical(quantile.quantile());
                    sample(out, name, "", labels, Some(("quantile", &q)), quantile.value(), metric);
                }
                sample(out, name, "_sum", labels, None, summary.sample_sum(), metric);
                sample(out, name, "_count", labels, None, summary.sample_count() as f64, metric);
            }
            MetricType::HISTOGRAM => {
                let histogram = metric.get_histogram();
                let mut saw_infinity = false;
                for bucket in &histogram.bucket {
                    saw_infinity |= bucket.upper_bound() == f64::INFINITY;
                    let le = canonical(bucket.upper_bound());
                    let count = bucket.cumulative_count() as f64;
                    sample(out, name, "_bucket", labels, Some(("le", &le)), count, metric);
                }
                // OpenMetrics requires the +Inf bucket; the model leaves it implicit.
                if !saw_infinity {
                    let count = histogram.sample_count() as f64;
                    sample(out, name, "_bucket", labels, Some(("le", "+Inf")), count, metric);
                }
                sample(
                    out,
                    name,
                    "_count",
                    labels,
                    None,
                    histogram.sample_count() as f64,
                    metric,
                );
                sample(out, name, "_sum", labels, None, histogram.sample_sum(), metric);
            }
        }
    }
}

/// One sample line: `name{labels} value [timestamp]`.
fn sample(
    out: &mut Vec<u8>,
    name: &str,
    suffix: &str,
    labels: &[LabelPair],
    extra: Option<(&str, &str)>,
    value: f64,
    metric: &Metric,
) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(suffix.as_bytes());
    let pairs = labels.iter().map(|l| (l.name(), l.value())).chain(extra);
    let mut first = true;
    for (key, val) in pairs {
        out.push(if first { b'{' } else { b',' });
        first = false;
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"=\"");
        escape_into(val, out);
        out.push(b'"');
    }
    if !first {
        out.push(b'}');
    }
    out.push(b' ');
    number_into(value, out);
    if let Some(ms) = metric.timestamp_ms {
        out.push(b' ');
        // Writing into a Vec cannot fail.
        let _ = write!(out, "{}", ms as f64 / 1000.0);
    }
    out.push(b'\n');
}

/// Escapes a label value or help text: backslash, double quote and newline.
pub(crate) fn escape_into(text: &str, out: &mut Vec<u8>) {
    let bytes = text.as_bytes();
    // Short values (`pgfault`, `container`, a device's name) are checked byte by byte: for
    // them memchr's setup costs more than the scan (a quarter of a millisecond a scrape of
    // 1,000 containers, measured with perf).
    if bytes.len() < 32 && !bytes.iter().any(|&b| matches!(b, b'\\' | b'"' | b'\n')) {
        out.extend_from_slice(bytes);
        return;
    }
    let mut start = 0;
    // memchr scans many bytes at a time: most label values (ids, names) need no escape, and
    // this runs for every label of every sample.
    while let Some(offset) = memchr::memchr3(b'\\', b'"', b'\n', &bytes[start..]) {
        let i = start + offset;
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(match bytes[i] {
            b'\\' => b"\\\\",
            b'"' => b"\\\"",
            _ => b"\\n",
        });
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

/// A sample value. Whole numbers (counts, bytes) print as integers, the common case;
/// everything else as the shortest string that reads back to the same float.
pub(crate) fn number_into(value: f64, out: &mut Vec<u8>) {
    const EXACT_INTEGERS: f64 = 9_007_199_254_740_992.0; // 2^53
    // itoa and ryu, not `write!`: a large scrape formats ~50,000 numbers, and core::fmt's
    // machinery costs several times theirs.
    // Whole: the same as `fract() == 0.0` in this range, without its software `trunc`.
    if value.abs() < EXACT_INTEGERS && (value as i64) as f64 == value {
        match itoa::Buffer::new().format(value as i64).as_bytes() {
            // One digit (a zero, mostly: failures, OOM kills, swap, an idle cgroup's
            // pressure) without the call of a copy.
            [digit] => out.push(*digit),
            digits => out.extend_from_slice(digits),
        }
    } else if (1e-4..1e16).contains(&value.abs()) {
        // Both ryu and `{:?}` write the shortest digits that read back exactly; in this range
        // both write them without an exponent, so the output is the same.
        out.extend_from_slice(ryu::Buffer::new().format_finite(value).as_bytes());
    } else {
        out.extend_from_slice(canonical(value).as_bytes());
    }
}

/// The canonical form OpenMetrics asks for in `le` and `quantile`: `+Inf`, `-Inf`, `NaN`,
/// and otherwise a float that always shows it is one (`1.0`, `0.25`, `1e21`).
fn canonical(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value == f64::INFINITY {
        "+Inf".into()
    } else if value == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{value:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exposition::family::FamilyBuilder;
    use prometheus::core::Collector;
    use prometheus::{Histogram, HistogramOpts, Opts};

    fn render(families: &[MetricFamily]) -> String {
        let mut out = Vec::new();
        encode(families, &mut out);
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn numbers_read_as_integers_or_the_shortest_exact_float() {
        let mut values = vec![
            0.0,
            -0.0,
            1.0,
            -7.0,
            0.5,
            1e-4,
            9.99e-5,
            1e15,
            9.999e15,
            1e16,
            1e21,
            1.5e300,
            4.000000007,
            1_700_000_000.123_456,
            9_007_199_254_740_992.0,
            -2.5e-9,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ];
        // Plus a sweep of arbitrary bit patterns, so every range and digit count is met.
        let mut bits: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..100_000 {
            bits = bits
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            values.push(f64::from_bits(bits));
            values.push((bits >> 11) as f64 / 1e9);
        }
        for value in values {
            let mut out = Vec::new();
            number_into(value, &mut out);
            let out = String::from_utf8(out).expect("ASCII");
            if value.fract() == 0.0 && value.abs() < 9_007_199_254_740_992.0 {
                assert_eq!(out, format!("{}", value as i64));
            } else if value.is_finite() {
                // ryu and core::fmt may pick different last digits for the same shortest
                // length (both read back exactly).
                let back: f64 = out.parse().expect("a float");
                assert_eq!(back.to_bits(), value.to_bits(), "{out} for {value:e}");
                assert_eq!(out.len(), canonical(value).len(), "{out} for {value:e}");
                assert!(out.contains('.') || out.contains('e'), "{out} shows it is a float");
            } else {
                assert_eq!(out, canonical(value));
            }
        }
    }

    #[test]
    fn counters_drop_total_from_the_family_but_not_the_sample() {
        let family = FamilyBuilder::counter("sonde_events_total", "Events seen.")
            .with_sample(&[("cpu", "0")], 42.0)
            .build();
        assert_eq!(
            render(&[family.expect("one sample")]),
            "# TYPE sonde_events counter\n# HELP sonde_events Events seen.\nsonde_events_total{cpu=\"0\"} 42\n# EOF\n"
        );
    }

    #[test]
    fn gauges_without_labels_or_help() {
        let family = FamilyBuilder::gauge("machine_cpu_cores", "")
            .with_sample(&[], 2.0)
            .build();
        assert_eq!(
            render(&[family.expect("one sample")]),
            "# TYPE machine_cpu_cores gauge\nmachine_cpu_cores 2\n# EOF\n"
        );
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        let family = FamilyBuilder::gauge("g", "a \"quoted\" \\ help\nline")
            .with_sample(&[("path", "C:\\dir\n\"x\""), ("empty", "")], 0.5)
            .build();
        assert_eq!(
            render(&[family.expect("one sample")]),
            "# TYPE g gauge\n# HELP g a \\\"quoted\\\" \\\\ help\\nline\ng{path=\"C:\\\\dir\\n\\\"x\\\"\",empty=\"\"} 0.5\n# EOF\n"
        );
    }

    #[test]
    fn short_and_long_values_escape_alike() {
        // Either side of the byte-by-byte check's length, with each escaped byte first,
        // inside and last.
        for len in [0usize, 1, 2, 30, 31, 32, 33, 64, 65] {
            for special in ['\\', '"', '\n', 'x'] {
                for at in [0, len / 2, len.saturating_sub(1)] {
                    let text: String = (0..len).map(|i| if i == at { special } else { 'a' }).collect();
                    let mut out = Vec::new();
                    escape_into(&text, &mut out);
                    let expected = text.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
                    assert_eq!(String::from_utf8(out).expect("utf-8"), expected, "{text:?}");
                }
            }
        }
    }

    #[test]
    fn special_and_fractional_values() {
        let mut builder = FamilyBuilder::gauge("g", "h");
        for (i, v) in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -3.0, 1e21, 1.5e-7, 0.1]
            .into_iter()
            .enumerate()
        {
            builder.sample(&[("i", &i.to_string())], v);
        }
        let text = render(&[builder.build().expect("samples")]);
        let values: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("g{"))
            .filter_map(|l| l.split(' ').nth(1))
            .collect();
        assert_eq!(values, ["NaN", "+Inf", "-Inf", "-3", "1e21", "1.5e-7", "0.1"]);
    }

    #[test]
    fn histograms_get_an_explicit_inf_bucket_count_and_sum() {
        let histogram = Histogram::with_opts(HistogramOpts::new("latency_seconds", "Latency.").buckets(vec![0.5, 1.0]))
            .expect("valid histogram");
        histogram.observe(0.25);
        histogram.observe(2.0);
        let text = render(&histogram.collect());
        assert_eq!(
            text,
            "# TYPE latency_seconds histogram\n# HELP latency_seconds Latency.\n\
             latency_seconds_bucket{le=\"0.5\"} 1\nlatency_seconds_bucket{le=\"1.0\"} 1\n\
             latency_seconds_bucket{le=\"+Inf\"} 2\nlatency_seconds_count 2\nlatency_seconds_sum 2.25\n# EOF\n"
        );
    }

    #[test]
    fn untyped_becomes_unknown_and_empty_families_are_skipped() {
        let counter =
            prometheus::IntCounterVec::new(Opts::new("unused_total", "never touched"), &["x"]).expect("valid counter");
        let mut untyped = FamilyBuilder::gauge("raw", "")
            .with_sample(&[], 1.0)
            .build()
            .expect("sample");
        untyped.set_field_type(MetricType::UNTYPED);
        let mut value = prometheus::proto::Untyped::new();
        value.set_value(7.0);
        let metric = &mut untyped.mut_metric()[0];
        metric.gauge.clear();
        metric.untyped = Some(value).into();
        let mut families = counter.collect();
        families.push(untyped);
        assert_eq!(render(&families), "# TYPE raw unknown\nraw 7\n# EOF\n");
    }

    #[test]
    fn timestamps_are_seconds() {
        let mut family = FamilyBuilder::gauge("g", "")
            .with_sample(&[], 1.0)
            .build()
            .expect("sample");
        family.mut_metric()[0].set_timestamp_ms(1_700_000_000_123);
        assert_eq!(render(&[family]), "# TYPE g gauge\ng 1 1700000000.123\n# EOF\n");
    }
}

//! Reading expositions: the one parser of text-format sample lines, the queries the tests
//! make with it, the label sets they expect, and the protobuf decoder.

use std::collections::BTreeMap;

/// One sample line of a text or OpenMetrics exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample<'t> {
    /// Name and labels as written: `name{k="v",...}`.
    pub series: &'t str,
    pub name: &'t str,
    /// In the order written, values unescaped.
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample<'_> {
    /// The value of label `key`, if the sample has it.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Whether the sample has every one of these label pairs.
    pub fn has(&self, filter: &[(&str, &str)]) -> bool {
        filter.iter().all(|(k, v)| self.label(k) == Some(*v))
    }
}

/// Every sample line of an exposition (comments and lines that are not samples skipped).
pub fn parse_samples(text: &str) -> Vec<Sample<'_>> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}')?)?),
                None => (series, Vec::new()),
            };
            Some(Sample {
                series,
                name,
                labels,
                value: value.parse().ok()?,
            })
        })
        .collect()
}

/// `k="v",k2="v2"` (the text between the braces) into pairs, with `\\`, `\"` and `\n`
/// unescaped; `None` when it is not a label set.
fn parse_labels(mut text: &str) -> Option<Vec<(String, String)>> {
    let mut labels = Vec::new();
    while !text.is_empty() {
        let (key, rest) = text.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                (_, c) => value.push(c),
            }
        };
        labels.push((key.to_owned(), value));
        text = rest[end + 1..].strip_prefix(',').unwrap_or(&rest[end + 1..]);
    }
    Some(labels)
}

/// The value of the first sample whose series (name and labels as written) is `series`.
pub fn sample_value(text: &str, series: &str) -> Option<f64> {
    parse_samples(text)
        .into_iter()
        .find(|s| s.series == series)
        .map(|s| s.value)
}

/// `sonde_collector_success` of a collector.
pub fn collector_success(text: &str, collector: &str) -> Option<f64> {
    sample_value(text, &format!("sonde_collector_success{{collector=\"{collector}\"}}"))
}

/// The samples named `name` that have every label pair of `filter`.
pub fn samples_with<'t>(text: &'t str, name: &str, filter: &[(&str, &str)]) -> Vec<Sample<'t>> {
    parse_samples(text)
        .into_iter()
        .filter(|s| s.name == name && s.has(filter))
        .collect()
}

/// The sum of the samples named `name` that have every label pair of `filter`.
pub fn sum(text: &str, name: &str, filter: &[(&str, &str)]) -> f64 {
    samples_with(text, name, filter).iter().map(|s| s.value).sum()
}

/// Every labelled sample named `family`: series → value.
pub fn series_values(text: &str, family: &str) -> BTreeMap<String, f64> {
    parse_samples(text)
        .into_iter()
        .filter(|s| s.name == family && !s.labels.is_empty())
        .map(|s| (s.series.to_owned(), s.value))
        .collect()
}

/// The samples named `name` whose series text contains every one of `parts`.
pub fn samples_containing<'t>(text: &'t str, name: &str, parts: &[&str]) -> Vec<Sample<'t>> {
    parse_samples(text)
        .into_iter()
        .filter(|s| s.name == name && !s.labels.is_empty() && parts.iter().all(|p| s.series.contains(p)))
        .collect()
}

/// The values of label `key` on the samples named `name`, in order (where they have it).
pub fn label_values(text: &str, name: &str, key: &str) -> Vec<String> {
    parse_samples(text)
        .into_iter()
        .filter(|s| s.name == name)
        .filter_map(|s| s.label(key).map(str::to_owned))
        .collect()
}

/// The `id` label (the cgroup path) of the series of a container, found by its id.
pub fn cgroup_of(text: &str, container_id: &str) -> Option<String> {
    label_values(text, "container_last_seen", "id")
        .into_iter()
        .find(|id| id.contains(container_id))
}

/// The names of the families (`# TYPE` lines) of a text exposition.
pub fn family_names(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// The label set of a `container_*` series, sorted by name as sonde writes it: the six
/// container labels (names unknown: empty) plus the family's own.
pub fn container_labels(id: &str, extra: &[(&str, &str)]) -> String {
    named_container_labels(id, "", "", extra)
}

/// The label set of a `container_*` series of a named container (a Docker one): the six
/// container labels with its name and image, plus `extra` (the family's own labels and any
/// `container_label_*`), sorted by name as sonde writes them.
pub fn named_container_labels(id: &str, name: &str, image: &str, extra: &[(&str, &str)]) -> String {
    let mut labels: Vec<(&str, &str)> = vec![
        ("container", ""),
        ("id", id),
        ("image", image),
        ("name", name),
        ("namespace", ""),
        ("pod", ""),
    ];
    labels.extend_from_slice(extra);
    label_set(&labels)
}

/// `{k="v",...}` of these pairs, sorted by name as sonde writes them.
pub fn label_set(pairs: &[(&str, &str)]) -> String {
    let mut pairs = pairs.to_vec();
    pairs.sort_unstable();
    let inner: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{{{}}}", inner.join(","))
}

/// The families of a length-delimited protobuf exposition, in order.
pub fn decode_protobuf(body: &[u8]) -> Vec<prometheus::proto::MetricFamily> {
    let mut input = protobuf::CodedInputStream::from_bytes(body);
    let mut families = Vec::new();
    while !input.eof().expect("readable") {
        families.push(input.read_message().expect("a delimited MetricFamily"));
    }
    families
}

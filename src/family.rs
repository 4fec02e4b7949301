//! Builders for metric families in the `prometheus` crate's data model.
//!
//! Collectors read their sources at scrape time and emit "const" samples (as cAdvisor and
//! node_exporter do) rather than keeping registered metric objects that would have to be
//! updated and pruned; these builders keep that terse.

use prometheus::proto::{Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType};

/// One family under construction: a name, a help text, a type and its samples.
#[derive(Debug, Clone)]
pub struct FamilyBuilder {
    family: MetricFamily,
}

impl FamilyBuilder {
    fn new(name: &str, help: &str, kind: MetricType) -> Self {
        let mut family = MetricFamily::new();
        family.set_name(name.to_owned());
        family.set_help(help.to_owned());
        family.set_field_type(kind);
        Self { family }
    }

    /// A gauge family.
    pub fn gauge(name: &str, help: &str) -> Self {
        Self::new(name, help, MetricType::GAUGE)
    }

    /// A counter family; `name` is the sample name as Prometheus text shows it (`…_total`).
    pub fn counter(name: &str, help: &str) -> Self {
        Self::new(name, help, MetricType::COUNTER)
    }

    /// A histogram family; its samples come from [`histogram_sample`](Self::histogram_sample).
    pub fn histogram(name: &str, help: &str) -> Self {
        Self::new(name, help, MetricType::HISTOGRAM)
    }

    /// Adds one histogram: `buckets` are (upper bound, cumulative count) in ascending order,
    /// without the `+Inf` bucket, which is `count`.
    pub fn histogram_sample(
        &mut self,
        labels: &[(&str, &str)],
        buckets: &[(f64, u64)],
        sum: f64,
        count: u64,
    ) -> &mut Self {
        let mut histogram = Histogram::new();
        histogram.set_sample_sum(sum);
        histogram.set_sample_count(count);
        for &(upper, cumulative) in buckets {
            let mut bucket = Bucket::new();
            bucket.set_upper_bound(upper);
            bucket.set_cumulative_count(cumulative);
            histogram.bucket.push(bucket);
        }
        let mut metric = Metric::from_label(labels.iter().map(|(k, v)| label(k, v)).collect());
        metric.set_histogram(histogram);
        self.family.mut_metric().push(metric);
        self
    }

    /// Adds one sample with the given labels.
    pub fn sample(&mut self, labels: &[(&str, &str)], value: f64) -> &mut Self {
        let mut metric = Metric::from_label(labels.iter().map(|(k, v)| label(k, v)).collect());
        match self.family.get_field_type() {
            MetricType::COUNTER => {
                let mut counter = Counter::new();
                counter.set_value(value);
                metric.set_counter(counter);
            }
            _ => {
                let mut gauge = Gauge::new();
                gauge.set_value(value);
                metric.set_gauge(gauge);
            }
        }
        self.family.mut_metric().push(metric);
        self
    }

    /// Adds one sample and returns the builder, for single-sample families.
    pub fn with_sample(mut self, labels: &[(&str, &str)], value: f64) -> Self {
        self.sample(labels, value);
        self
    }

    /// The finished family, or `None` when it has no samples: an empty family is not valid
    /// exposition, and a family whose source had nothing to say should simply be absent.
    pub fn build(self) -> Option<MetricFamily> {
        (!self.family.get_metric().is_empty()).then_some(self.family)
    }
}

/// A label pair.
pub fn label(name: &str, value: &str) -> LabelPair {
    let mut pair = LabelPair::new();
    pair.set_name(name.to_owned());
    pair.set_value(value.to_owned());
    pair
}

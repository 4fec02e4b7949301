//! Builders for metric families in the `prometheus` crate's data model.
//!
//! Collectors read their sources at scrape time and emit "const" samples (as cAdvisor and
//! node_exporter do) rather than keeping registered metric objects that would have to be
//! updated and pruned; these builders keep that terse.

use std::sync::{Arc, OnceLock};

use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};

use crate::exposition::{EncodeError, Format};

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

/// A finished family as collectors hand it over: the model plus its encoding in each
/// format, made on first use. A collector that serves the same families for a whole
/// validity window shares them across scrapes, so each is encoded once per window.
#[derive(Debug)]
pub struct Family {
    model: MetricFamily,
    encoded: [OnceLock<Result<Vec<u8>, String>>; 3],
}

impl Family {
    pub fn new(model: MetricFamily) -> Arc<Family> {
        Arc::new(Family {
            model,
            encoded: Default::default(),
        })
    }

    pub fn model(&self) -> &MetricFamily {
        &self.model
    }

    pub fn name(&self) -> &str {
        self.model.name()
    }

    /// This family alone in `format` (for OpenMetrics, without the final `# EOF`).
    pub fn encoded(&self, format: Format) -> Result<&[u8], EncodeError> {
        self.encoded[format as usize]
            .get_or_init(|| {
                let mut out = Vec::new();
                format
                    .encode_family(&self.model, &mut out)
                    .map(|()| out)
                    .map_err(|e| e.to_string())
            })
            .as_deref()
            .map_err(|e| EncodeError::Family(e.clone()))
    }
}

/// Wraps families built for one scrape.
pub fn shared(families: impl IntoIterator<Item = MetricFamily>) -> Vec<Arc<Family>> {
    families.into_iter().map(Family::new).collect()
}

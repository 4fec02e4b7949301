//! The metric families sonde builds, the exposition formats they are encoded in, and the
//! format's negotiation from the scraper's `Accept` header.

pub mod family;
pub mod gzip;
pub mod openmetrics;

use std::sync::Arc;

use bytes::Bytes;
use mediatype::MediaTypeList;
use prometheus::Encoder;
use prometheus::proto::MetricFamily;

use self::family::Family;

/// The formats sonde can answer in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4: the default, and the answer to anything unrecognised.
    Text,
    /// OpenMetrics 1.0.0 text.
    OpenMetrics,
    /// Length-delimited `io.prometheus.client.MetricFamily` protobuf messages.
    Protobuf,
}

impl Format {
    /// The `Content-Type` of an answer in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => openmetrics::CONTENT_TYPE,
            Format::Protobuf => prometheus::PROTOBUF_FORMAT,
        }
    }

    /// Picks the format the client prefers: highest `q` first, the earlier entry on a tie.
    /// Entries that do not parse are skipped; nothing usable means text 0.0.4.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let Some(accept) = accept else {
            return Format::Text;
        };
        let mut best: Option<(f32, Format)> = None;
        for media in MediaTypeList::new(accept).flatten() {
            let param = |name: &str| {
                media
                    .params
                    .iter()
                    .find(|(k, _)| k.as_str().eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.unquoted_str().into_owned())
            };
            let q = match param("q").map(|q| q.parse::<f32>()) {
                None => 1.0,
                Some(Ok(q)) if (0.0..=1.0).contains(&q) => q,
                Some(_) => continue,
            };
            if q <= 0.0 {
                continue;
            }
            let (ty, subty) = (media.ty.as_str(), media.subty.as_str());
            let is = |a: &str, b: &str| ty.eq_ignore_ascii_case(a) && subty.eq_ignore_ascii_case(b);
            let format = if is("application", "openmetrics-text") {
                // 0.0.1 is the pre-release name of 1.0.0 that Prometheus still offers.
                match param("version").as_deref() {
                    None | Some("1.0.0") | Some("0.0.1") => Format::OpenMetrics,
                    Some(_) => continue,
                }
            } else if is("application", "vnd.google.protobuf") {
                let proto_ok = param("proto").is_none_or(|p| p == "io.prometheus.client.MetricFamily");
                let encoding_ok = param("encoding").as_deref() == Some("delimited");
                if !(proto_ok && encoding_ok) {
                    continue;
                }
                Format::Protobuf
            } else if is("text", "plain") || is("text", "*") || is("*", "*") {
                match param("version").as_deref() {
                    None | Some("0.0.4") => Format::Text,
                    Some(_) => continue,
                }
            } else {
                continue;
            };
            if best.is_none_or(|(best_q, _)| q > best_q) {
                best = Some((q, format));
            }
        }
        best.map_or(Format::Text, |(_, format)| format)
    }

    /// Encodes the families in this format.
    pub fn encode(self, families: &[MetricFamily], out: &mut Vec<u8>) -> Result<(), EncodeError> {
        match self {
            Format::Text => prometheus::TextEncoder::new().encode(families, out)?,
            Format::Protobuf => prometheus::ProtobufEncoder::new().encode(families, out)?,
            Format::OpenMetrics => openmetrics::encode(families, out),
        }
        Ok(())
    }

    /// Encodes one family; for OpenMetrics without the final `# EOF`. Concatenating the
    /// encodings of several families gives the encoding of all of them, minus that `# EOF`.
    pub fn encode_family(self, family: &MetricFamily, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        match self {
            Format::OpenMetrics => {
                openmetrics::encode_family(family, out);
                Ok(())
            }
            _ => self.encode(std::slice::from_ref(family), out),
        }
    }

    /// The answer for shared families, as chunks that reuse each family's bytes where they
    /// were made before: a window's families are sent without being copied again.
    pub fn encode_chunks(self, families: &[Arc<Family>]) -> Result<Vec<Bytes>, EncodeError> {
        let mut chunks = Vec::with_capacity(2 * families.len() + 1);
        for family in families {
            family.chunks(self, &mut chunks)?;
        }
        if self == Format::OpenMetrics {
            chunks.push(Bytes::from_static(openmetrics::EOF));
        }
        Ok(chunks)
    }

    /// The answer for shared families, gzipped: each family's segment is compressed once
    /// and shared after. When there is much to compress (the first answer of a window), the
    /// families not compressed yet are compressed in parallel first; a warm answer has only
    /// the few small families built for it, compressed here in turn (waking other threads
    /// for them would cost more, and under load wait for a preempted one).
    pub fn encode_gzip_chunks(self, families: &[Arc<Family>]) -> Result<Vec<Bytes>, EncodeError> {
        use rayon::prelude::*;
        if self.gzip_work(families) >= PARALLEL_GZIP_BYTES {
            // Errors are kept in the families and returned by the pass below.
            families
                .par_iter()
                .filter(|family| family.gzip_pending(self) > 0)
                .for_each(|family| {
                    let _ = family.gzipped(self);
                });
        }
        let mut segments: Vec<&gzip::Segment> = families
            .iter()
            .map(|family| family.gzipped(self))
            .collect::<Result<_, _>>()?;
        if self == Format::OpenMetrics {
            segments.push(openmetrics_eof_segment()?);
        }
        Ok(gzip::member(segments))
    }

    /// The bytes a gzip answer of `families` still has to compress (0 when every family was
    /// compressed by an earlier answer): what decides whether it is worth another thread.
    pub fn gzip_work(self, families: &[Arc<Family>]) -> usize {
        families.iter().map(|family| family.gzip_pending(self)).sum()
    }

    /// The answer for shared families in one buffer.
    pub fn encode_shared(self, families: &[Arc<Family>], out: &mut Vec<u8>) -> Result<(), EncodeError> {
        for chunk in self.encode_chunks(families)? {
            out.extend_from_slice(&chunk);
        }
        Ok(())
    }
}

/// From this many bytes to compress, an answer compresses its families in parallel (and the
/// server compresses it on the blocking pool): below, a fifth of a millisecond at most of
/// compression, which an async worker can afford (a warm answer has a few kilobytes).
pub const PARALLEL_GZIP_BYTES: usize = 32 * 1024;

/// OpenMetrics' `# EOF`, compressed once.
fn openmetrics_eof_segment() -> Result<&'static gzip::Segment, EncodeError> {
    static EOF: std::sync::OnceLock<Result<gzip::Segment, String>> = std::sync::OnceLock::new();
    EOF.get_or_init(|| gzip::Segment::compress(&[Bytes::from_static(openmetrics::EOF)]).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| EncodeError::Family(e.clone()))
}

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("encoding metrics: {0}")]
    Prometheus(#[from] prometheus::Error),
    #[error("encoding metrics: {0}")]
    Family(String),
}

#[cfg(test)]
mod tests {
    use super::Format::{self, *};

    #[test]
    fn prometheus_scrape_protocol_headers() {
        // What Prometheus 2.x/3.x send for their scrape_protocols settings.
        let cases = [
            (
                "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
                OpenMetrics,
            ),
            (
                "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited,application/openmetrics-text;version=1.0.0;q=0.8,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
                Protobuf,
            ),
            ("text/plain;version=0.0.4;q=0.5,*/*;q=0.1", Text),
            (
                "text/plain;q=0.2, application/openmetrics-text; version=1.0.0; q=0.9",
                OpenMetrics,
            ),
        ];
        for (accept, want) in cases {
            assert_eq!(Format::negotiate(Some(accept)), want, "{accept}");
        }
    }

    #[test]
    fn unusable_headers_fall_back_to_text() {
        for accept in [
            "",
            "garbage",
            ";;;,,,\u{7f}",
            "application/json",
            "application/openmetrics-text;version=9.9.9",
            "application/openmetrics-text;q=0",
            "application/openmetrics-text;q=banana",
            "application/vnd.google.protobuf",
            "application/vnd.google.protobuf;proto=other.Message;encoding=delimited",
        ] {
            assert_eq!(Format::negotiate(Some(accept)), Text, "{accept:?}");
        }
        assert_eq!(Format::negotiate(None), Text);
    }

    #[test]
    fn ties_go_to_the_first_entry() {
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text, text/plain")),
            OpenMetrics
        );
        assert_eq!(
            Format::negotiate(Some("text/plain, application/openmetrics-text")),
            Text
        );
    }
}

#[cfg(test)]
mod shared_tests {
    use super::Format;
    use crate::exposition::family::{self, FamilyBuilder};

    #[test]
    fn shared_encodings_concatenate_to_the_whole_encoding() {
        let models: Vec<_> = [
            FamilyBuilder::counter("a_total", "A.")
                .with_sample(&[("x", "1")], 1.0)
                .build(),
            FamilyBuilder::gauge("b", "B \"quoted\".").with_sample(&[], 2.5).build(),
            FamilyBuilder::gauge("c", "").with_sample(&[("y", "\n")], -1.0).build(),
        ]
        .into_iter()
        .flatten()
        .collect();
        let shared = family::shared(models.clone());
        for format in [Format::Text, Format::OpenMetrics, Format::Protobuf] {
            let (mut whole, mut parts) = (Vec::new(), Vec::new());
            format.encode(&models, &mut whole).expect("encodes");
            format.encode_shared(&shared, &mut parts).expect("encodes");
            assert_eq!(parts, whole, "{format:?}");
            // A second encoding reuses the first.
            let again = shared[0].encoded(format).expect("encoded").as_ptr();
            assert_eq!(shared[0].encoded(format).expect("encoded").as_ptr(), again);
        }
    }
}

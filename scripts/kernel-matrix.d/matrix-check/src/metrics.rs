//! One scrape of sonde's `/metrics` in the Prometheus text format (0.0.4), over a plain
//! HTTP/1.1 request, and sums of its samples by name and labels.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// One sample: `name{labels} value`.
#[derive(Debug)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    /// The series as written: name and labels, for comparing one scrape with the next.
    pub fn series(&self) -> String {
        let labels: Vec<String> = self.labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
        format!("{}{{{}}}", self.name, labels.join(","))
    }

    fn matches(&self, name: &str, filter: &[(&str, &str)]) -> bool {
        self.name == name
            && filter
                .iter()
                .all(|(key, value)| self.labels.iter().any(|(k, v)| k == key && v == value))
    }
}

/// The samples of one scrape.
pub struct Scrape {
    pub samples: Vec<Sample>,
}

impl Scrape {
    /// Fetches and parses `url` (`http://host:port/path`, or `host:port` for `/metrics`).
    pub fn fetch(url: &str) -> Result<Scrape, String> {
        let text = fetch_text(url)?;
        let samples = text
            .lines()
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .map(|line| parse_line(line).ok_or_else(|| format!("{url}: cannot parse the line {line:?}")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Scrape { samples })
    }

    /// The sum of the samples named `name` whose labels include every pair of `filter`;
    /// 0 when there is none (a counter not yet reported is 0).
    pub fn sum(&self, name: &str, filter: &[(&str, &str)]) -> f64 {
        // `+ 0.0`: the sum of nothing is -0.0, which would print as "-0".
        self.samples
            .iter()
            .filter(|s| s.matches(name, filter))
            .map(|s| s.value)
            .sum::<f64>()
            + 0.0
    }

    /// The value of the first sample named `name` with the labels of `filter`, if any.
    pub fn get(&self, name: &str, filter: &[(&str, &str)]) -> Option<f64> {
        self.samples.iter().find(|s| s.matches(name, filter)).map(|s| s.value)
    }
}

fn fetch_text(url: &str) -> Result<String, String> {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/metrics"),
    };
    let fail = |what: &str, e: std::io::Error| format!("{url}: {what}: {e}");
    let mut stream = TcpStream::connect(authority).map_err(|e| fail("connect", e))?;
    let timeout = Some(Duration::from_secs(60));
    stream.set_read_timeout(timeout).map_err(|e| fail("timeout", e))?;
    stream.set_write_timeout(timeout).map_err(|e| fail("timeout", e))?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).map_err(|e| fail("send", e))?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).map_err(|e| fail("receive", e))?;

    let end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("{url}: no end of the response header"))?;
    let head = String::from_utf8_lossy(&response[..end]).to_ascii_lowercase();
    let body = &response[end + 4..];
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(format!("{url}: {status}"));
    }
    let body = if head
        .lines()
        .any(|l| l.starts_with("transfer-encoding:") && l.contains("chunked"))
    {
        dechunk(body).ok_or_else(|| format!("{url}: malformed chunked body"))?
    } else {
        body.to_vec()
    };
    String::from_utf8(body).map_err(|_| format!("{url}: the body is not UTF-8"))
}

/// Decodes a chunked body: `<hex size>[;ext]\r\n<data>\r\n` ... `0\r\n\r\n`.
fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n")?;
        let size_field = std::str::from_utf8(&body[..line_end]).ok()?;
        let size = usize::from_str_radix(size_field.split(';').next()?.trim(), 16).ok()?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(body.get(..size)?);
        body = body.get(size + 2..)?;
    }
}

/// Parses `name{k="v",...} value [timestamp]`; label values may hold `\\`, `\"` and `\n`.
fn parse_line(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_owned();
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = after;
        loop {
            rest = rest.trim_start_matches([',', ' ']);
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = rest.find('=')?;
            let key = rest[..eq].trim().to_owned();
            rest = rest[eq + 1..].strip_prefix('"')?;
            let mut value = String::new();
            let mut chars = rest.char_indices();
            let close = loop {
                match chars.next()? {
                    (i, '"') => break i,
                    (_, '\\') => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    (_, c) => value.push(c),
                }
            };
            labels.push((key, value));
            rest = &rest[close + 1..];
        }
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other.parse().ok()?,
    };
    Some(Sample { name, labels, value })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_labels_with_escapes_and_values() {
        let s = parse_line(r#"sonde_x_total{a="1",b="q\"u\\o\nte",port="80"} 12.5"#).expect("parses");
        assert_eq!(s.name, "sonde_x_total");
        assert_eq!(s.labels[1], ("b".to_owned(), "q\"u\\o\nte".to_owned()));
        assert_eq!(s.value, 12.5);
        assert_eq!(parse_line("up 1").expect("parses").value, 1.0);
        assert!(parse_line(r#"broken{a="1} 2"#).is_none());
    }

    #[test]
    fn dechunks() {
        assert_eq!(
            dechunk(b"3\r\nabc\r\n2;x=1\r\nde\r\n0\r\n\r\n"),
            Some(b"abcde".to_vec())
        );
        assert_eq!(dechunk(b"5\r\nab"), None);
    }
}

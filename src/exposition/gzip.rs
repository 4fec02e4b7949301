//! gzip answers assembled from deflate segments compressed once per family.
//!
//! Prometheus asks for gzip on every scrape. Compressing a whole answer per scrape costs
//! tens of milliseconds for thousands of containers, although most of it is families shared
//! for a whole validity window. Each family is therefore compressed on its own into a raw
//! deflate segment that ends with a full flush: byte-aligned, and with no back-reference
//! into what precedes it, so segments compressed apart can be laid end to end into one
//! deflate stream (a small family is a stored block, which is byte-aligned too). An answer is a gzip header, the segments of its families (shared, not
//! copied), an empty final block, and a trailer whose CRC-32 is combined from the segments'.
//! A tower layer compresses the whole body and cannot know which parts repeat, hence this.

use bytes::Bytes;
use flate2::{Compress, Compression, FlushCompress};

/// One piece of an answer, compressed on its own.
#[derive(Debug, Clone)]
pub struct Segment {
    deflate: Bytes,
    crc: crc32fast::Hasher,
    /// Uncompressed length.
    len: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("gzip: {0}")]
pub struct GzipError(String);

/// The gzip header: magic, deflate, no flags, no time, no extra flags, unknown OS.
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
/// An empty final block (fixed Huffman codes, just the end-of-block code).
const FINAL_BLOCK: [u8; 2] = [0x03, 0x00];

impl Segment {
    /// Compresses `chunks`, in order, into one segment.
    pub fn compress(chunks: &[Bytes]) -> Result<Segment, GzipError> {
        let total: usize = chunks.iter().map(Bytes::len).sum();
        if total < STORED_BELOW {
            return Ok(Self::stored(chunks, total));
        }
        COMPRESSOR.with_borrow_mut(|compressor| {
            // The fastest level: exposition text is so repetitive that it still shrinks ~50x
            // (level 6: ~90x) at a fifth of the CPU (measured: 6 vs 33 ms for 7 MB).
            let compressor = compressor.get_or_insert_with(|| Compress::new(Compression::fast(), false));
            // A reset leaves the state of a new compressor, so the output is the same.
            compressor.reset();
            Self::compress_with(compressor, chunks)
        })
    }

    fn compress_with(compressor: &mut Compress, chunks: &[Bytes]) -> Result<Segment, GzipError> {
        let total: usize = chunks.iter().map(Bytes::len).sum();
        let mut crc = crc32fast::Hasher::new();
        // Label-heavy exposition text shrinks ten- to twentyfold.
        let mut out = Vec::with_capacity(total / 8 + 64);
        for chunk in chunks {
            crc.update(chunk);
            let mut input = &chunk[..];
            while !input.is_empty() {
                make_room(&mut out);
                let before = compressor.total_in();
                compressor
                    .compress_vec(input, &mut out, FlushCompress::None)
                    .map_err(|e| GzipError(e.to_string()))?;
                let consumed = usize::try_from(compressor.total_in() - before).unwrap_or(input.len());
                input = &input[consumed.min(input.len())..];
            }
        }
        // The flush is complete once a call leaves room in the buffer.
        loop {
            make_room(&mut out);
            compressor
                .compress_vec(&[], &mut out, FlushCompress::Full)
                .map_err(|e| GzipError(e.to_string()))?;
            if out.len() < out.capacity() {
                break;
            }
        }
        out.shrink_to_fit();
        Ok(Segment {
            deflate: Bytes::from(out),
            crc,
            len: total as u64,
        })
    }

    /// `chunks` as one stored (uncompressed) block, when there are fewer than
    /// [`STORED_BELOW`] bytes: byte-aligned at both ends like a compressed segment.
    fn stored(chunks: &[Bytes], total: usize) -> Segment {
        let mut crc = crc32fast::Hasher::new();
        let mut out = Vec::with_capacity(total + 5);
        if total > 0 {
            // A stored block, not the last: header bits 000 padded to a byte, then LEN and
            // its complement (RFC 1951, 3.2.4). `total` fits: it is below STORED_BELOW.
            let len = total as u16;
            out.push(0);
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(&(!len).to_le_bytes());
        }
        for chunk in chunks {
            crc.update(chunk);
            out.extend_from_slice(chunk);
        }
        Segment {
            deflate: Bytes::from(out),
            crc,
            len: total as u64,
        }
    }

    /// The compressed bytes.
    pub fn deflate(&self) -> &Bytes {
        &self.deflate
    }
}

/// Families smaller than this (a single sample, a few series: most of the families built
/// anew for every scrape) are sent as stored blocks: deflate would save them some hundred
/// bytes each, for a compressor reset (~300 KB zeroed) per family on every warm answer.
const STORED_BELOW: usize = 512;

thread_local! {
    // One compressor per compressing thread, reset between segments: a new one is ~300 KB
    // allocated and zeroed, and a warm answer compresses a few dozen small families built
    // for it (the scrape's own telemetry), where allocating and freeing that much per family
    // cost more than the compression (page faults, and the TLB shootdowns of a trimmed
    // heap).
    static COMPRESSOR: std::cell::RefCell<Option<Compress>> = const { std::cell::RefCell::new(None) };
}

fn make_room(out: &mut Vec<u8>) {
    if out.capacity() - out.len() < 64 {
        out.reserve(out.capacity().max(4096));
    }
}

/// A whole gzip answer from its segments, in order: chunks that share the segments' bytes.
pub fn member<'s>(segments: impl IntoIterator<Item = &'s Segment>) -> Vec<Bytes> {
    let mut chunks = vec![Bytes::from_static(&HEADER)];
    let mut crc = crc32fast::Hasher::new();
    let mut length: u64 = 0;
    for segment in segments {
        crc.combine(&segment.crc);
        length += segment.len;
        chunks.push(segment.deflate.clone());
    }
    // ISIZE is the length modulo 2^32, as the format says.
    let length = length as u32;
    let mut trailer = Vec::with_capacity(10);
    trailer.extend_from_slice(&FINAL_BLOCK);
    trailer.extend_from_slice(&crc.finalize().to_le_bytes());
    trailer.extend_from_slice(&length.to_le_bytes());
    chunks.push(Bytes::from(trailer));
    chunks
}

/// Whether an `Accept-Encoding` value accepts gzip (`gzip`, `x-gzip` or `*`, with a
/// quality above zero).
pub fn accepted(accept_encoding: &str) -> bool {
    accept_encoding.split(',').any(|coding| {
        let mut parts = coding.split(';').map(str::trim);
        let name = parts.next().unwrap_or("");
        let wanted = ["gzip", "x-gzip", "*"].iter().any(|n| name.eq_ignore_ascii_case(n));
        let quality = parts
            .find_map(|p| p.strip_prefix("q=").or_else(|| p.strip_prefix("Q=")))
            .map_or(Some(1.0), |q| q.trim().parse::<f64>().ok());
        wanted && quality.is_some_and(|q| q > 0.0)
    })
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn gunzip(chunks: &[Bytes]) -> Vec<u8> {
        let body: Vec<u8> = chunks.concat();
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut out)
            .expect("valid gzip");
        out
    }

    #[test]
    fn segments_compressed_apart_make_one_valid_member() {
        // Repetitive text (back-references within a segment), an empty segment, a segment
        // of many chunks, and one larger than the first output buffer.
        let lines: Vec<u8> = (0..20_000)
            .flat_map(|i| format!("container_memory_rss{{id=\"/docker/{i:064x}\"}} {i}\n").into_bytes())
            .collect();
        let pieces: Vec<Vec<Bytes>> = vec![
            vec![
                Bytes::from_static(b"# HELP a A.\n# TYPE a gauge\n"),
                Bytes::from(lines.clone()),
            ],
            vec![],
            vec![Bytes::from_static(b"b 1\n"), Bytes::from_static(b"b{x=\"y\"} 2\n")],
            vec![Bytes::from(lines[..5000].to_vec())],
        ];
        let segments: Vec<Segment> = pieces
            .iter()
            .map(|p| Segment::compress(p).expect("compresses"))
            .collect();
        let expected: Vec<u8> = pieces.iter().flatten().flat_map(|b| b.to_vec()).collect();
        let answer = member(&segments);
        assert_eq!(gunzip(&answer), expected);
        let compressed: usize = answer.iter().map(Bytes::len).sum();
        assert!(
            compressed < expected.len() / 5,
            "{compressed} bytes for {}",
            expected.len()
        );
        // Small pieces are stored: a 5-byte block header and the bytes.
        assert_eq!(segments[1].deflate().len(), 0);
        assert_eq!(segments[2].deflate().len(), 5 + 4 + 11);
        // The thread's compressor, reset between segments, compresses as a new one does.
        let again = Segment::compress(&pieces[0]).expect("compresses");
        let mut fresh = Compress::new(Compression::fast(), false);
        let new = Segment::compress_with(&mut fresh, &pieces[0]).expect("compresses");
        assert_eq!(again.deflate(), segments[0].deflate());
        assert_eq!(new.deflate(), segments[0].deflate());
        // The same segments serve again, in another answer.
        let tail: Vec<u8> = pieces[2..].iter().flatten().flat_map(|b| b.to_vec()).collect();
        assert_eq!(gunzip(&member(&segments[2..])), tail);
    }

    #[test]
    fn an_answer_of_nothing_is_valid_gzip() {
        assert!(gunzip(&member([])).is_empty());
    }

    #[test]
    fn accept_encoding_values() {
        for yes in [
            "gzip",
            "GZIP",
            "deflate, gzip;q=0.5",
            "x-gzip",
            "*",
            "br;q=1, gzip ; q=0.1",
        ] {
            assert!(accepted(yes), "{yes}");
        }
        for no in [
            "",
            "identity",
            "deflate, br",
            "gzip;q=0",
            "gzip;q=0.0",
            "*;q=0",
            "gzip;q=x",
        ] {
            assert!(!accepted(no), "{no}");
        }
    }
}

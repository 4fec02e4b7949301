//! The body of a scrape's answer: chunks made before the answer (shared with the families
//! that keep them), sent in order with their total length known up front.
//!
//! A stream body has no length, so hyper frames it as `Transfer-Encoding: chunked`: three
//! buffers per chunk (size line, data, line end), and as it queues at most 16 buffers
//! between writes, a write of five chunks. With the length known it sends each chunk as
//! it is under a `Content-Length`: a third of the buffers and system calls for the
//! megabytes of a large plain-text answer.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};

pub struct Chunks {
    chunks: VecDeque<Bytes>,
    remaining: u64,
}

impl Chunks {
    pub fn new(chunks: Vec<Bytes>) -> Self {
        let chunks: VecDeque<Bytes> = chunks.into_iter().filter(|c| !c.is_empty()).collect();
        let remaining = chunks.iter().map(|c| c.len() as u64).sum();
        Self { chunks, remaining }
    }
}

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let next = self.chunks.pop_front();
        if let Some(chunk) = &next {
            self.remaining -= chunk.len() as u64;
        }
        Poll::Ready(next.map(|chunk| Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    #[tokio::test]
    async fn sends_the_chunks_in_order_with_their_length() {
        let body = Chunks::new(vec![
            Bytes::from_static(b"# HELP a A.\n"),
            Bytes::new(),
            Bytes::from_static(b"a 1\n"),
        ]);
        assert_eq!(http_body::Body::size_hint(&body).exact(), Some(16));
        let collected = body.collect().await.expect("infallible").to_bytes();
        assert_eq!(&collected[..], b"# HELP a A.\na 1\n");
    }
}

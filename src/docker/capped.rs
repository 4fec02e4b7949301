//! The engine's answers, capped: bollard reads a whole answer into memory before decoding
//! it, so an engine (or whatever listens on its socket) that answers 200 MB would cost
//! sonde that much. Each request gets its own connection (none is pooled), and the
//! connection refuses to read more than [`MAX_ANSWER_BYTES`]: an answer cut there fails
//! that request alone, as the Kubelet client's size limit does. The events stream stays
//! open for the life of a session, so there the cap is on one line (one event), which is
//! all bollard keeps of it at a time.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most one answer (or one event line) may hold; the Kubelet client's default too.
pub const MAX_ANSWER_BYTES: u64 = 16 << 20;

/// What a connection counts against the cap.
#[derive(Debug, Clone, Copy)]
pub enum Cap {
    /// Every byte of the connection (one request and its answer).
    Total(u64),
    /// The bytes since the last newline (a stream of JSON lines).
    Line(u64),
}

/// Where the engine listens.
#[derive(Debug, Clone)]
pub enum Target {
    Unix(PathBuf),
    Tcp(String),
}

impl Target {
    /// `unix:///path`, `tcp://host:port` or `http://host:port`; `None` for other schemes.
    pub fn parse(host: &str) -> Option<Target> {
        if let Some(path) = host.strip_prefix("unix://") {
            return Some(Target::Unix(PathBuf::from(path)));
        }
        let address = host.strip_prefix("tcp://").or_else(|| host.strip_prefix("http://"))?;
        Some(Target::Tcp(address.trim_end_matches('/').to_owned()))
    }
}

/// A stream that fails a read once the cap is passed.
pub struct Capped<S> {
    inner: S,
    cap: Cap,
    counted: u64,
}

impl<S> Capped<S> {
    pub fn new(inner: S, cap: Cap) -> Self {
        Self { inner, cap, counted: 0 }
    }

    /// Counts bytes just read; an error once the cap is passed.
    fn count(&mut self, bytes: &[u8]) -> io::Result<()> {
        let (limit, what) = match self.cap {
            Cap::Total(limit) => {
                self.counted += bytes.len() as u64;
                (limit, "answer")
            }
            Cap::Line(limit) => {
                match bytes.iter().rposition(|&b| b == b'\n') {
                    Some(at) => self.counted = (bytes.len() - at - 1) as u64,
                    None => self.counted += bytes.len() as u64,
                }
                (limit, "event line")
            }
        };
        if self.counted > limit {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the Docker engine's {what} is larger than {limit} bytes"),
            ));
        }
        Ok(())
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Capped<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => Poll::Ready(this.count(&buf.filled()[before..])),
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Capped<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<S> Connection for Capped<S> {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

/// A hyper connector to the engine whose connections carry a cap.
#[derive(Clone)]
pub struct Connector {
    pub target: Target,
    pub cap: Cap,
}

/// One connection of a [`Connector`].
pub enum Stream {
    Unix(tokio::net::UnixStream),
    Tcp(tokio::net::TcpStream),
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

impl tower_service::Service<http::Uri> for Connector {
    type Response = TokioIo<Capped<Stream>>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Uri) -> Self::Future {
        let (target, cap) = (self.target.clone(), self.cap);
        Box::pin(async move {
            let stream = match target {
                Target::Unix(path) => Stream::Unix(tokio::net::UnixStream::connect(path).await?),
                Target::Tcp(address) => Stream::Tcp(tokio::net::TcpStream::connect(address).await?),
            };
            Ok(TokioIo::new(Capped::new(stream, cap)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_total_cap_counts_every_byte_and_a_line_cap_restarts_at_each_newline() {
        let mut total = Capped::new((), Cap::Total(10));
        assert!(total.count(b"12345").is_ok());
        assert!(total.count(b"\n1234").is_ok());
        assert!(total.count(b"5").is_err());
        let mut line = Capped::new((), Cap::Line(4));
        assert!(line.count(b"1234\n1234\n12").is_ok());
        assert!(line.count(b"34").is_ok());
        assert!(line.count(b"\n").is_ok());
        assert!(line.count(b"12345").is_err());
    }

    #[test]
    fn hosts_name_their_targets() {
        assert!(
            matches!(Target::parse("unix:///var/run/docker.sock"), Some(Target::Unix(p)) if p == std::path::Path::new("/var/run/docker.sock"))
        );
        assert!(matches!(Target::parse("tcp://127.0.0.1:2375"), Some(Target::Tcp(a)) if a == "127.0.0.1:2375"));
        assert!(matches!(Target::parse("http://127.0.0.1:2375/"), Some(Target::Tcp(a)) if a == "127.0.0.1:2375"));
        assert!(Target::parse("ssh://host").is_none());
    }
}

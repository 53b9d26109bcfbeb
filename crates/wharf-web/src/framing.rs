//! Spots, in a connection's raw bytes, requests framed by both `Content-Length` and `Transfer-Encoding`, which hyper hides: it drops the `Content-Length` before the router sees the request.
//!
//! Such a request is the shape of request smuggling: a proxy and Wharf could disagree on where
//! its body ends. hyper reads it safely (chunked, then closes the connection), but a request
//! that two parsers could read differently should be refused, and only the bytes tell. So each
//! connection's reads pass through a [`Scanner`] that follows HTTP/1.1 framing (heads, fixed
//! bodies, chunked bodies) and records the ordinal of every ambiguous request; the router
//! answers that request 400 without running its handler. When the scanner cannot follow the
//! bytes (a head it cannot parse, an upgrade, HTTP/2), it stops looking: hyper refuses what it
//! cannot parse itself, and nothing is refused on a guess.

use std::collections::BTreeSet;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Largest request head (request line and headers) a connection buffers; a bigger one gets 431
/// from hyper, and the scanner stops looking. `MAX_PATH_BYTES` is at most 16 KiB, so a valid
/// path always fits.
pub const MAX_HEAD_BYTES: usize = 32 * 1024;

/// Most headers one request may carry; more gets 431.
pub const MAX_HEADERS: usize = 100;
/// The longest chunk-size or trailer line the scanner follows.
const MAX_LINE: usize = 4096;

/// Marks a request the scanner found framed both ways, for
/// [`crate::middleware::refuse_ambiguous_requests`] to refuse inside the router, where the
/// answer gets what every answer gets (the CORS headers of a `/submit` answer among them).
#[derive(Debug, Clone, Copy)]
pub struct FramedBothWays;

/// Ordinals (0 for a connection's first request) of the requests framed both ways.
#[derive(Debug, Default, Clone)]
pub struct Ambiguous(Arc<Mutex<BTreeSet<u64>>>);

impl Ambiguous {
    fn record(&self, ordinal: u64) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(ordinal);
    }

    /// Whether the request with this ordinal was framed both ways (and forgets it).
    pub fn take(&self, ordinal: u64) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&ordinal)
    }
}

#[derive(Debug)]
enum State {
    /// Collecting a request head.
    Head(Vec<u8>),
    /// Inside a `Content-Length` body: bytes left.
    Body(u64),
    /// A chunk-size line.
    ChunkSize(Vec<u8>),
    /// Inside a chunk: bytes left, then its CRLF.
    ChunkData(u64),
    ChunkEnd(u8),
    /// Trailer lines after the last chunk, until an empty line.
    Trailers(Vec<u8>),
    /// Not following any more.
    Lost,
}

/// Follows the framing of the requests on one connection.
#[derive(Debug)]
pub struct Scanner {
    state: State,
    ordinal: u64,
    ambiguous: Ambiguous,
}

impl Scanner {
    /// A scanner expecting a request head first, recording ambiguous requests into `ambiguous`
    /// (shared with whoever serves the connection's requests).
    pub fn new(ambiguous: Ambiguous) -> Self {
        Self {
            state: State::Head(Vec::new()),
            ordinal: 0,
            ambiguous,
        }
    }

    /// Takes the next bytes read from the client.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match &mut self.state {
                State::Lost => return,
                State::Head(head) => {
                    let room = MAX_HEAD_BYTES.saturating_sub(head.len());
                    let (taken, _) = bytes.split_at(bytes.len().min(room));
                    let before = head.len();
                    head.extend_from_slice(taken);
                    match self.parse_head() {
                        Some(end) => bytes = &bytes[end - before..],
                        None if taken.len() < bytes.len() => self.state = State::Lost,
                        None => return,
                    }
                }
                State::Body(left) => {
                    let n = (*left).min(bytes.len() as u64);
                    *left -= n;
                    bytes = &bytes[n as usize..];
                    if *left == 0 {
                        self.state = State::Head(Vec::new());
                    }
                }
                State::ChunkSize(line) | State::Trailers(line) => {
                    let Some(at) = bytes.iter().position(|b| *b == b'\n') else {
                        line.extend_from_slice(bytes);
                        if line.len() > MAX_LINE {
                            self.state = State::Lost;
                        }
                        return;
                    };
                    line.extend_from_slice(&bytes[..=at]);
                    bytes = &bytes[at + 1..];
                    self.end_line();
                }
                State::ChunkData(left) => {
                    let n = (*left).min(bytes.len() as u64);
                    *left -= n;
                    bytes = &bytes[n as usize..];
                    if *left == 0 {
                        self.state = State::ChunkEnd(2);
                    }
                }
                State::ChunkEnd(left) => {
                    let n = usize::from(*left).min(bytes.len());
                    *left -= n as u8;
                    bytes = &bytes[n..];
                    if *left == 0 {
                        self.state = State::ChunkSize(Vec::new());
                    }
                }
            }
        }
    }

    /// With a complete head collected, moves to its body and returns where the head ended
    /// (an index into the collected bytes); `None` while the head is incomplete.
    fn parse_head(&mut self) -> Option<usize> {
        let State::Head(head) = &self.state else {
            return None;
        };
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        let end = match request.parse(head) {
            Ok(httparse::Status::Complete(end)) => end,
            Ok(httparse::Status::Partial) => return None,
            Err(_) => {
                self.state = State::Lost;
                return None;
            }
        };
        let mut length: Option<Option<u64>> = None;
        // Whether the last Transfer-Encoding value ends in `chunked`, when there is one.
        let mut chunked: Option<bool> = None;
        let mut upgrade = request.method == Some("CONNECT");
        for header in request.headers.iter() {
            if header.name.eq_ignore_ascii_case("content-length") {
                let parsed = std::str::from_utf8(header.value)
                    .ok()
                    .and_then(|v| v.trim().parse().ok());
                length = Some(parsed);
            } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = Some(ends_chunked(header.value));
            } else if header.name.eq_ignore_ascii_case("upgrade") {
                upgrade = true;
            }
        }
        let ordinal = self.ordinal;
        self.ordinal += 1;
        self.state = match (length, chunked) {
            (Some(_), Some(_)) => {
                self.ambiguous.record(ordinal);
                // hyper closes the connection after answering this request.
                State::Lost
            }
            _ if upgrade => State::Lost,
            (None, Some(true)) => State::ChunkSize(Vec::new()),
            (None, Some(false)) => State::Lost,
            (Some(Some(0)), None) | (None, None) => State::Head(Vec::new()),
            (Some(Some(n)), None) => State::Body(n),
            (Some(None), None) => State::Lost,
        };
        Some(end)
    }

    /// A chunk-size or trailer line is complete.
    fn end_line(&mut self) {
        self.state = match &self.state {
            State::ChunkSize(line) => {
                let text = std::str::from_utf8(line).unwrap_or_default();
                let size = text.split(';').next().unwrap_or_default().trim();
                match u64::from_str_radix(size, 16) {
                    Ok(0) => State::Trailers(Vec::new()),
                    Ok(n) => State::ChunkData(n),
                    Err(_) => State::Lost,
                }
            }
            State::Trailers(line) if line.trim_ascii().is_empty() => State::Head(Vec::new()),
            State::Trailers(_) => State::Trailers(Vec::new()),
            _ => State::Lost,
        };
    }
}

fn ends_chunked(value: &[u8]) -> bool {
    value
        .rsplit(|b| *b == b',')
        .next()
        .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

/// A connection whose reads pass through a [`Scanner`].
pub struct Watched<S> {
    inner: S,
    scanner: Scanner,
}

impl<S> Watched<S> {
    /// Wraps `inner` (a client connection); ambiguous requests it reads go into `ambiguous`.
    pub fn new(inner: S, ambiguous: Ambiguous) -> Self {
        Self {
            inner,
            scanner: Scanner::new(ambiguous),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &polled {
            let fresh = &buf.filled()[before..];
            self.scanner.feed(fresh);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(chunks: &[&[u8]]) -> Vec<u64> {
        let ambiguous = Ambiguous::default();
        let mut scanner = Scanner::new(ambiguous.clone());
        for chunk in chunks {
            scanner.feed(chunk);
        }
        (0..10).filter(|n| ambiguous.take(*n)).collect()
    }

    const PLAIN: &[u8] = b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello";
    const CHUNKED: &[u8] =
        b"POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5;x=1\r\nhello\r\n0\r\nT: v\r\n\r\n";
    const BOTH: &[u8] = b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";

    #[test]
    fn finds_the_ambiguous_request_among_pipelined_ones() {
        let all = [PLAIN, CHUNKED, PLAIN, BOTH].concat();
        assert_eq!(scan(&[&all]), [3]);
        // The same bytes split at every position: the answer does not depend on the reads.
        for at in 0..all.len() {
            let (a, b) = all.split_at(at);
            assert_eq!(scan(&[a, b]), [3], "split at {at}");
        }
    }

    #[test]
    fn either_order_of_the_two_headers_is_ambiguous() {
        let te_first =
            b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n";
        assert_eq!(scan(&[te_first]), [0]);
        assert_eq!(scan(&[BOTH]), [0]);
    }

    #[test]
    fn a_body_that_looks_like_a_request_is_not_read_as_one() {
        let body = BOTH;
        let head = format!(
            "POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        assert!(scan(&[head.as_bytes(), body]).is_empty());
    }

    #[test]
    fn bytes_it_cannot_follow_stop_the_scan_without_a_guess() {
        let garbage = [b"\x16\x03\x01 not http\r\n\r\n".as_slice(), BOTH].concat();
        assert!(scan(&[&garbage]).is_empty());
        let preface = [b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".as_slice(), BOTH].concat();
        assert!(scan(&[&preface]).is_empty());
    }
}

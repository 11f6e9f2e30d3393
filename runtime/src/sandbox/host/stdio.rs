//! Captured guest stdout/stderr.
//!
//! A guest's `println!`/`eprintln!` (and a Rust panic message) must not reach the
//! worker's own stdout, and a chatty or hostile guest must not grow the worker's
//! memory without bound. Each call gets two [`CapturedOutput`] buffers: writes
//! always succeed (so a guest never panics on a full pipe), bytes beyond the cap
//! are counted and dropped, and the worker logs the captured lines afterwards,
//! tagged with the task id.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// How many bytes of each stream one call keeps.
pub const CAPTURE_LIMIT: usize = 64 * 1024;

#[derive(Debug, Default)]
struct Buffer {
    bytes: Vec<u8>,
    dropped: usize,
}

/// An in-memory output stream with a byte cap that never fails a write.
#[derive(Debug, Clone)]
pub struct CapturedOutput {
    cap: usize,
    inner: Arc<Mutex<Buffer>>,
}

impl CapturedOutput {
    /// A new empty buffer keeping at most `cap` bytes.
    pub fn new(cap: usize) -> Self {
        CapturedOutput { cap, inner: Arc::default() }
    }

    fn push(&self, data: &[u8]) {
        // A poisoned lock only means another writer panicked mid-push; the bytes are still valid.
        let mut b = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let room = self.cap.saturating_sub(b.bytes.len());
        let take = room.min(data.len());
        b.bytes.extend_from_slice(&data[..take]);
        b.dropped += data.len() - take;
    }

    /// The captured text (lossy UTF-8) and how many bytes were dropped.
    pub fn take(&self) -> (String, usize) {
        let mut b = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let text = String::from_utf8_lossy(&b.bytes).into_owned();
        let dropped = b.dropped;
        b.bytes.clear();
        b.dropped = 0;
        (text, dropped)
    }
}

impl IsTerminal for CapturedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturedOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for CapturedOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        // Always writable: excess bytes are dropped, not refused.
        Ok(CAPTURE_LIMIT)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CapturedOutput {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for CapturedOutput {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.push(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_past_the_cap_are_counted_and_dropped() {
        let out = CapturedOutput::new(4);
        out.push(b"abc");
        out.push(b"defg");
        assert_eq!(out.take(), ("abcd".to_string(), 3));
        assert_eq!(out.take(), (String::new(), 0));
    }
}

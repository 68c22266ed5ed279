//! Guest stdout and stderr as `tracing` events.
//!
//! Each instance gets its own stdout and stderr ([`GuestOutput`]). Their
//! bytes are split into lines (at most [`MAX_LINE`] bytes: a longer line is
//! cut and marked, the rest of it skipped), control and invisible formatting
//! characters are escaped (so a guest cannot forge a log line with a newline
//! or repaint the terminal with an ANSI escape), and each line becomes one
//! `info` event with target `membrane::guest` and the fields `component` and
//! `stream` (`"stdout"` / `"stderr"`). Both streams log at `info`: the host
//! cannot know how serious a guest's line is (Rust guests print ordinary
//! diagnostics with `eprintln!`), and a guest must not be able to raise
//! warnings at will; guests that want levels have `wasi:logging`.
//!
//! A component version's instances share one budget ([`OutputBudget`]): a
//! token bucket of [`LINES_PER_SECOND`] lines a second, [`BURST`] at once.
//! Lines beyond it are dropped and counted; the count is logged as
//! `dropped N lines of guest output` before the next line that passes or
//! when an instance ends, at most once a second (a count not yet due waits
//! for the next summary, or for the version to be unloaded). A partial last
//! line is logged when the instance is dropped.

use bytes::Bytes;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// The longest line logged whole, in bytes.
pub const MAX_LINE: usize = 4096;
/// Lines a component version may log per second, sustained.
pub const LINES_PER_SECOND: f64 = 100.0;
/// Lines a component version may log at once.
pub const BURST: f64 = 200.0;
/// The most bytes one guest write may carry (`check-write`).
const WRITE_PERMIT: usize = 64 * 1024;
/// The least time between two summaries logged at an instance's end.
const SUMMARY_EVERY: Duration = Duration::from_secs(1);

/// Locks `m`, recovering it if a panic poisoned it: the data is a counter
/// and a buffer, always consistent.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The guest-output rate limit of one component version, shared by its
/// instances and both their streams.
pub struct OutputBudget {
    component: Arc<str>,
    bucket: Mutex<Bucket>,
}

struct Bucket {
    tokens: f64,
    refilled: Instant,
    dropped: u64,
    last_summary: Option<Instant>,
}

impl OutputBudget {
    /// A full budget for `component`.
    pub fn new(component: Arc<str>) -> Arc<OutputBudget> {
        Arc::new(OutputBudget {
            component,
            bucket: Mutex::new(Bucket {
                tokens: BURST,
                refilled: Instant::now(),
                dropped: 0,
                last_summary: None,
            }),
        })
    }

    /// Takes one line's token, or counts the line as dropped. When a line
    /// passes after some were dropped, their count is logged first.
    fn admit(&self) -> bool {
        let mut bucket = lock(&self.bucket);
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(bucket.refilled).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * LINES_PER_SECOND).min(BURST);
        bucket.refilled = now;
        if bucket.tokens < 1.0 {
            bucket.dropped += 1;
            return false;
        }
        bucket.tokens -= 1.0;
        let dropped = bucket.take_due(now);
        drop(bucket);
        self.summary(dropped);
        true
    }

    /// At an instance's end: logs the dropped count if it is due.
    fn settle(&self) {
        let dropped = lock(&self.bucket).take_due(Instant::now());
        self.summary(dropped);
    }

    fn summary(&self, dropped: u64) {
        if dropped == 0 {
            return;
        }
        tracing::warn!(
            target: "membrane::guest",
            component = &*self.component,
            "dropped {dropped} lines of guest output (more than {LINES_PER_SECOND} a second)"
        );
    }
}

impl Bucket {
    /// The dropped count, if there is one and no summary was logged in the
    /// last second (then the next summary carries it); 0 otherwise.
    fn take_due(&mut self, now: Instant) -> u64 {
        let due = self
            .last_summary
            .is_none_or(|last| now.saturating_duration_since(last) >= SUMMARY_EVERY);
        if self.dropped == 0 || !due {
            return 0;
        }
        self.last_summary = Some(now);
        std::mem::take(&mut self.dropped)
    }
}

impl Drop for OutputBudget {
    /// The version is gone: whatever is still counted is logged.
    fn drop(&mut self) {
        let dropped = std::mem::take(&mut lock(&self.bucket).dropped);
        self.summary(dropped);
    }
}

/// Which of the guest's streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// stdout.
    Stdout,
    /// stderr.
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// One instance's stdout or stderr, for `WasiCtxBuilder::stdout` / `stderr`.
pub struct GuestOutput(Arc<Sink>);

impl GuestOutput {
    /// A fresh stream of one instance, charged to `budget`.
    pub fn new(budget: Arc<OutputBudget>, stream: Stream) -> GuestOutput {
        GuestOutput(Arc::new(Sink {
            budget,
            stream,
            line: Mutex::new(Line::default()),
        }))
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(Writer(self.0.clone()))
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(Writer(self.0.clone()))
    }
}

/// What the stream handles share: the partial line. Logged when the last
/// handle is dropped, with the instance.
struct Sink {
    budget: Arc<OutputBudget>,
    stream: Stream,
    line: Mutex<Line>,
}

#[derive(Default)]
struct Line {
    buf: Vec<u8>,
    /// This line was cut at `MAX_LINE`; the rest of it is skipped.
    cut: bool,
}

impl Sink {
    fn write(&self, mut bytes: &[u8]) {
        let mut line = lock(&self.line);
        while !bytes.is_empty() {
            let (part, newline) = match bytes.iter().position(|b| *b == b'\n') {
                Some(i) => (&bytes[..i], Some(i)),
                None => (bytes, None),
            };
            if !line.cut {
                let room = MAX_LINE - line.buf.len();
                if part.len() > room {
                    line.buf.extend_from_slice(&part[..room]);
                    let whole = std::mem::take(&mut line.buf);
                    self.emit(&whole, true);
                    line.cut = true;
                } else {
                    line.buf.extend_from_slice(part);
                }
            }
            match newline {
                Some(i) => {
                    if !std::mem::take(&mut line.cut) {
                        let whole = std::mem::take(&mut line.buf);
                        self.emit(&whole, false);
                    }
                    bytes = &bytes[i + 1..];
                }
                None => break,
            }
        }
    }

    /// Logs one line, if the budget allows.
    fn emit(&self, line: &[u8], cut: bool) {
        if !self.budget.admit() {
            return;
        }
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let mut text = escape(line);
        if cut {
            text.push_str(&format!(" [cut at {MAX_LINE} bytes]"));
        }
        tracing::info!(
            target: "membrane::guest",
            component = &*self.budget.component,
            stream = self.stream.name(),
            "{text}"
        );
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let line = std::mem::take(&mut *lock(&self.line));
        if !line.cut && !line.buf.is_empty() {
            self.emit(&line.buf, false);
        }
        self.budget.settle();
    }
}

/// The guest's bytes as text that cannot break out of its log line: invalid
/// UTF-8 becomes U+FFFD; control characters (newlines, carriage returns,
/// ESC) and invisible formatting characters (bidi overrides, line and
/// paragraph separators) are written as Rust escapes, e.g. `\u{1b}`.
pub fn escape(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let invisible = matches!(c,
            '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}');
        if c.is_control() || invisible {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// A handle on a [`Sink`]: the guest's `output-stream`, or an `AsyncWrite`.
/// Writing never blocks: a line is logged (or dropped) as it completes.
struct Writer(Arc<Sink>);

impl OutputStream for Writer {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.0.write(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_PERMIT)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Writer {
    async fn ready(&mut self) {}
}

impl AsyncWrite for Writer {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let n = buf.len().min(WRITE_PERMIT);
        self.0.write(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_could_forge_or_repaint_a_line() {
        assert_eq!(escape(b"plain text, {json: 1}"), "plain text, {json: 1}");
        assert_eq!(escape(b"a\nb\rc\td"), "a\\nb\\rc\\td");
        assert_eq!(escape(b"\x1b[31mred"), "\\u{1b}[31mred");
        assert_eq!(escape("x\u{202e}y\u{2028}z".as_bytes()), "x\\u{202e}y\\u{2028}z");
        assert_eq!(escape(b"bad \xff utf8"), "bad \u{fffd} utf8");
    }

    #[test]
    fn budget_allows_a_burst_then_counts_drops() {
        let budget = OutputBudget::new("c".into());
        let passed = (0..1000).filter(|_| budget.admit()).count();
        assert!((200..=202).contains(&passed), "{passed}");
        assert!(lock(&budget.bucket).dropped >= 798);
        budget.settle();
        assert_eq!(lock(&budget.bucket).dropped, 0);
    }

    #[test]
    fn long_lines_are_cut_once_and_the_rest_skipped() {
        let budget = OutputBudget::new("c".into());
        let sink = Sink {
            budget: budget.clone(),
            stream: Stream::Stdout,
            line: Mutex::new(Line::default()),
        };
        sink.write(&vec![b'x'; MAX_LINE * 3]);
        assert!(lock(&sink.line).cut);
        assert!(lock(&sink.line).buf.is_empty());
        sink.write(b"yy\nnext");
        assert!(!lock(&sink.line).cut);
        assert_eq!(lock(&sink.line).buf, b"next");
        // One line for the cut one, one for `yy`'s line end: none (skipped).
        assert_eq!(lock(&budget.bucket).tokens.round() as i64, (BURST as i64) - 1);
    }
}

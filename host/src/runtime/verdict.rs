//! How a guest's run of one HTTP request ended, and the response body that
//! waits for it: a body ends cleanly only when its guest's run ended well.
//!
//! WASI 0.3 ends a response body when the guest's stream closes, and a
//! stream also closes when its instance is dropped: a guest stopped at its
//! deadline (or failed) half-way through its body would otherwise look to
//! the client as if it had sent all of it. [`Finishing`] holds the body's
//! end until the run's [`Verdict`] is in, and ends it with an error unless
//! the run ended well. WASI 0.2 bodies carry their own end (`finish`), and
//! get the same wrapper so both versions behave the same.

use bytes::Bytes;
use futures::task::AtomicWaker;
use hyper::body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};
use wasmtime_wasi_http::Error;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

const RUNNING: u8 = 0;
const WELL: u8 = 1;
const BADLY: u8 = 2;

/// How a guest's run ended: not yet, well, or badly (failed, or stopped).
#[derive(Debug, Default)]
pub(crate) struct Verdict {
    state: AtomicU8,
    waker: AtomicWaker,
}

impl Verdict {
    /// Records the end of the run (the first record stands) and wakes the
    /// body waiting for it.
    pub(crate) fn settle(&self, well: bool) {
        let state = if well { WELL } else { BADLY };
        let _ = self
            .state
            .compare_exchange(RUNNING, state, Ordering::AcqRel, Ordering::Acquire);
        self.waker.wake();
    }

    /// `Ready(true)` when the run ended well, `Ready(false)` when badly.
    fn poll(&self, cx: &mut Context<'_>) -> Poll<bool> {
        if let Some(ended) = self.ended() {
            return Poll::Ready(ended);
        }
        self.waker.register(cx.waker());
        self.ended().map_or(Poll::Pending, Poll::Ready)
    }

    fn ended(&self) -> Option<bool> {
        match self.state.load(Ordering::Acquire) {
            RUNNING => None,
            state => Some(state == WELL),
        }
    }
}

/// A response body whose end waits for its guest's [`Verdict`].
pub(crate) struct Finishing {
    body: HyperOutgoingBody,
    verdict: Arc<Verdict>,
    /// The body's own end has been seen.
    drained: bool,
}

impl Finishing {
    /// `body`, ending only as `verdict` says.
    pub(crate) fn new(body: HyperOutgoingBody, verdict: Arc<Verdict>) -> Finishing {
        Finishing {
            body,
            verdict,
            drained: false,
        }
    }
}

impl Body for Finishing {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        if !self.drained {
            match std::task::ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                Some(frame) => return Poll::Ready(Some(frame)),
                None => self.drained = true,
            }
        }
        match std::task::ready!(self.verdict.poll(cx)) {
            true => Poll::Ready(None),
            false => Poll::Ready(Some(Err(Error::HttpResponseIncomplete))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream() && self.verdict.ended() == Some(true)
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt as _, Full};

    fn body(text: &'static str) -> HyperOutgoingBody {
        Full::new(Bytes::from_static(text.as_bytes()))
            .map_err(|never| match never {})
            .boxed_unsync()
    }

    #[tokio::test]
    async fn a_body_ends_as_its_run_does() {
        for (well, complete) in [(true, true), (false, false)] {
            let verdict = Arc::new(Verdict::default());
            let mut finishing = Finishing::new(body("all of it"), verdict.clone());
            let first = finishing.frame().await.unwrap().unwrap();
            assert_eq!(first.into_data().unwrap(), "all of it");
            // The body's own end waits for the verdict.
            assert!(futures::poll!(finishing.frame()).is_pending());
            verdict.settle(well);
            verdict.settle(!well); // the first record stands
            let end = finishing.frame().await;
            assert_eq!(end.is_none(), complete, "well: {well}");
        }
    }
}

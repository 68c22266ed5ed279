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
use std::future::Future as _;
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
    /// Set for a body of a shared instance ([`Finishing::shared`]).
    shared: Option<Shared>,
}

/// What a body of a shared instance carries besides its verdict.
struct Shared {
    component: Arc<str>,
    /// The request's deadline: the body is cut there.
    deadline: Pin<Box<tokio::time::Sleep>>,
    /// Dropped with the body: frees the request's place on the instance.
    _held: Box<dyn Send>,
}

impl Finishing {
    /// `body`, ending only as `verdict` says.
    pub(crate) fn new(body: HyperOutgoingBody, verdict: Arc<Verdict>) -> Finishing {
        Finishing {
            body,
            verdict,
            drained: false,
            shared: None,
        }
    }

    /// `body` of one of several requests on one instance of `component`
    /// whose run is `verdict`: its own end stands unless the instance
    /// failed, and it is cut at `deadline`. `held` is dropped with it.
    pub(crate) fn shared(
        body: HyperOutgoingBody,
        verdict: Arc<Verdict>,
        (component, deadline): (Arc<str>, std::time::Instant),
        held: Box<dyn Send>,
    ) -> Finishing {
        Finishing {
            body,
            verdict,
            drained: false,
            shared: Some(Shared {
                component,
                deadline: Box::pin(tokio::time::sleep_until(deadline.into())),
                _held: held,
            }),
        }
    }
}

/// Counts a response whose body was cut after its status went out, by why.
pub(crate) fn count_cut(component: &str, why: &str) {
    crate::metrics::registry()
        .counter(
            "membrane_http_responses_cut_total",
            "HTTP responses whose body the component did not finish after their status was sent, by why: it failed, or reached its deadline.",
            &[("component", component), ("why", why)],
        )
        .inc();
}

impl Body for Finishing {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        if let Some(shared) = this.shared.as_mut() {
            let cut = if !this.drained && shared.deadline.as_mut().poll(cx).is_ready() {
                tracing::warn!(
                    component = &*shared.component,
                    "stopped at its deadline after its response"
                );
                Some("deadline")
            } else {
                if !this.drained {
                    match std::task::ready!(Pin::new(&mut this.body).poll_frame(cx)) {
                        Some(frame) => return Poll::Ready(Some(frame)),
                        None => this.drained = true,
                    }
                }
                (this.verdict.ended() == Some(false)).then_some("fault")
            };
            let Some(why) = cut else {
                return Poll::Ready(None);
            };
            count_cut(&shared.component, why);
            // Counted once: from here on it ends as a failed run's body.
            this.shared = None;
            this.drained = true;
            this.verdict = Arc::new(Verdict::default());
            this.verdict.settle(false);
            return Poll::Ready(Some(Err(Error::HttpResponseIncomplete)));
        }
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
        let settled = match self.shared {
            Some(_) => self.verdict.ended() != Some(false),
            None => self.verdict.ended() == Some(true),
        };
        self.body.is_end_stream() && settled
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

    #[tokio::test]
    async fn a_shared_body_ends_unless_its_instance_failed_and_is_cut_at_its_deadline() {
        let later = std::time::Instant::now() + std::time::Duration::from_secs(60);
        // The instance runs on (pending) or ended well: the body's own end stands.
        for settled in [None, Some(true), Some(false)] {
            let verdict = Arc::new(Verdict::default());
            if let Some(well) = settled {
                verdict.settle(well);
            }
            let (held, dropped) = tokio::sync::oneshot::channel::<()>();
            let mut finishing = Finishing::shared(body("part"), verdict, ("c".into(), later), Box::new(held));
            assert_eq!(finishing.frame().await.unwrap().unwrap().into_data().unwrap(), "part");
            let end = finishing.frame().await;
            assert_eq!(end.is_none(), settled != Some(false), "settled: {settled:?}");
            drop(finishing);
            assert!(dropped.await.is_err(), "what it holds goes with it");
        }
        // A body that has not ended by its deadline is cut there.
        let (_tx, rx) = futures::channel::mpsc::channel::<Result<Frame<Bytes>, Error>>(1);
        let stalled = http_body_util::StreamBody::new(rx).boxed_unsync();
        let soon = std::time::Instant::now() + std::time::Duration::from_millis(50);
        let mut finishing = Finishing::shared(stalled, Arc::default(), ("c".into(), soon), Box::new(()));
        assert!(matches!(
            finishing.frame().await,
            Some(Err(Error::HttpResponseIncomplete))
        ));
    }
}

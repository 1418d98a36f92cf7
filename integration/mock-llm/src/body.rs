//! The response body: a list of frames known up front, written one by one with an
//! optional pause after each (for `x-mock-write-bytes`), and optionally ending in an
//! error so that hyper aborts the connection (for `x-mock-reset-after-chunks`).

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

/// How long the body waits before the reset error, so that hyper flushes what was
/// written before it (the bytes before the reset reach the client).
const FLUSH_BEFORE_RESET: Duration = Duration::from_millis(1);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Reset {
    No,
    /// After the last frame: pause, then fail.
    Armed,
    /// Paused; fail on the next poll.
    Fire,
}

pub struct MockBody {
    frames: VecDeque<Bytes>,
    pause: Option<Duration>,
    sleep: Option<Pin<Box<Sleep>>>,
    reset: Reset,
    /// Bytes left when the length is known up front (sent as `content-length`).
    exact_remaining: Option<u64>,
}

impl MockBody {
    /// A whole body in one frame, with a `content-length`.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        let len = bytes.len() as u64;
        let mut frames = VecDeque::with_capacity(1);
        if !bytes.is_empty() {
            frames.push_back(bytes);
        }
        MockBody {
            frames,
            pause: None,
            sleep: None,
            reset: Reset::No,
            exact_remaining: Some(len),
        }
    }

    /// A body of several frames. `pause` is waited after each frame but the last;
    /// `reset` makes the body fail after its last frame (the connection is aborted, the
    /// client sees a premature close). Without `reset` and with `known_length`, the body
    /// is sent with a `content-length`; otherwise chunked.
    pub fn frames(
        frames: VecDeque<Bytes>,
        pause: Option<Duration>,
        reset: bool,
        known_length: bool,
    ) -> Self {
        let exact_remaining =
            (known_length && !reset).then(|| frames.iter().map(|f| f.len() as u64).sum::<u64>());
        MockBody {
            frames,
            pause,
            sleep: None,
            reset: if reset { Reset::Armed } else { Reset::No },
            exact_remaining,
        }
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        loop {
            if let Some(sleep) = this.sleep.as_mut() {
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.sleep = None;
            }
            if let Some(frame) = this.frames.pop_front() {
                if let Some(pause) = this.pause {
                    if !this.frames.is_empty() {
                        this.sleep = Some(Box::pin(tokio::time::sleep(pause)));
                    }
                }
                if let Some(rem) = this.exact_remaining.as_mut() {
                    *rem = rem.saturating_sub(frame.len() as u64);
                }
                return Poll::Ready(Some(Ok(Frame::data(frame))));
            }
            match this.reset {
                Reset::No => return Poll::Ready(None),
                Reset::Armed => {
                    this.reset = Reset::Fire;
                    this.sleep = Some(Box::pin(tokio::time::sleep(FLUSH_BEFORE_RESET)));
                }
                Reset::Fire => {
                    this.reset = Reset::No;
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::ConnectionReset,
                        "mock-llm: connection reset on request (x-mock-reset-after-chunks)",
                    ))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty() && self.reset == Reset::No
    }

    fn size_hint(&self) -> SizeHint {
        match self.exact_remaining {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

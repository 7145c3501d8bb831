//! A request body must keep coming: the server's 30 s limit covers the request head only,
//! so a body sent a byte every two seconds held its connection for as long as the client
//! liked (issue 27). Every body is read under a deadline that starts at
//! [`BODY_GRACE`] and grows with what arrives ([`BODY_BYTES_PER_SEC`]): a large upload
//! over a slow link goes through, a trickle is cut off and answered 408 `body_timeout`.

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::dev::Payload;
use actix_web::error::PayloadError;
use actix_web::web::Bytes;
use futures_util::Stream;
use tokio::time::{Instant, Sleep};

/// Time any body has, whatever its size.
pub const BODY_GRACE: Duration = Duration::from_secs(30);
/// Each byte received extends the deadline by 1 / this many seconds.
pub const BODY_BYTES_PER_SEC: u64 = 16 * 1024;

/// The message of the error a body past its deadline ends with.
pub const BODY_TIMEOUT_MESSAGE: &str = "the request body arrived too slowly";

/// `payload` under the deadline (`grace` plus the time `bytes_per_sec` gives what came).
pub fn with_deadline(payload: Payload, grace: Duration, bytes_per_sec: u64) -> Payload {
    let start = Instant::now();
    let stream = Deadline {
        inner: payload,
        start,
        grace,
        bytes_per_sec: bytes_per_sec.max(1),
        received: 0,
        sleep: Box::pin(tokio::time::sleep_until(start + grace)),
        expired: false,
    };
    Payload::from(Box::pin(stream) as Pin<Box<dyn Stream<Item = _>>>)
}

struct Deadline {
    inner: Payload,
    start: Instant,
    grace: Duration,
    bytes_per_sec: u64,
    received: u64,
    sleep: Pin<Box<Sleep>>,
    expired: bool,
}

impl Stream for Deadline {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.expired {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                self.received += chunk.len() as u64;
                let earned =
                    Duration::from_secs_f64(self.received as f64 / self.bytes_per_sec as f64);
                let deadline = self.start + self.grace + earned;
                self.sleep.as_mut().reset(deadline);
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Pending => match self.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    self.expired = true;
                    Poll::Ready(Some(Err(PayloadError::Io(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        BODY_TIMEOUT_MESSAGE,
                    )))))
                }
                Poll::Pending => Poll::Pending,
            },
            other => other,
        }
    }
}

/// True when `error` is a body cut off by its deadline.
pub fn is_timeout(error: &PayloadError) -> bool {
    matches!(error, PayloadError::Io(e) if e.kind() == std::io::ErrorKind::TimedOut)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    /// A body that sends `chunk` every `every`, `n` times.
    fn trickle(chunk: &'static [u8], every: Duration, n: usize) -> Payload {
        let s = futures_util::stream::unfold(0usize, move |i| async move {
            if i == n {
                return None;
            }
            tokio::time::sleep(every).await;
            Some((Ok::<_, PayloadError>(Bytes::from_static(chunk)), i + 1))
        });
        Payload::from(Box::pin(s) as Pin<Box<dyn Stream<Item = _>>>)
    }

    async fn read_all(mut p: Payload) -> Result<usize, PayloadError> {
        let mut n = 0;
        while let Some(chunk) = p.next().await {
            n += chunk?.len();
        }
        Ok(n)
    }

    #[tokio::test]
    async fn a_trickle_is_cut_off_and_a_steady_body_is_not() {
        let grace = Duration::from_millis(500);
        // A byte every 200 ms: cut off once the grace (and the little it earned) is over.
        let slow = with_deadline(
            trickle(b"x", Duration::from_millis(200), 1_000),
            grace,
            BODY_BYTES_PER_SEC,
        );
        let started = Instant::now();
        let err = read_all(slow).await.unwrap_err();
        assert!(is_timeout(&err), "{err}");
        let took = started.elapsed();
        assert!(took >= grace && took < grace * 4, "{took:?}");
        // 64 KiB every 100 ms for 2 s (four times the grace): it goes through.
        let steady = with_deadline(
            trickle(&[7u8; 65_536], Duration::from_millis(100), 20),
            grace,
            BODY_BYTES_PER_SEC,
        );
        assert_eq!(read_all(steady).await.unwrap(), 20 * 65_536);
    }
}

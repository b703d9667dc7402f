//! A per-connection timer (see [`Timer`]).

use std::pin::Pin;

/// A per-connection timer that is re-armed only when it fires early or must fire sooner:
/// resetting a tokio timer is a timer-wheel removal and insertion, too much to pay on every
/// request of a keep-alive connection.
pub(crate) struct Timer {
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl Timer {
    pub(crate) fn new() -> Self {
        Self {
            sleep: Box::pin(tokio::time::sleep_until(tokio::time::Instant::now())),
        }
    }

    /// Resolves at `at`.
    pub(crate) async fn until(&mut self, at: tokio::time::Instant) {
        if self.sleep.deadline() > at {
            self.sleep.as_mut().reset(at);
        }
        loop {
            self.sleep.as_mut().await;
            if tokio::time::Instant::now() >= at {
                return;
            }
            self.sleep.as_mut().reset(at);
        }
    }
}

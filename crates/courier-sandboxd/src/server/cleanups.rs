//! Kills whose cleanup runs behind their answer.
//!
//! [`Sandboxd::kill`](super::Sandboxd::kill) answers once the sandbox is unreachable:
//! out of the server's map (the proxy and the list no longer see it), its record
//! removed, every process of it sent SIGKILL. Waiting for the processes to exit,
//! unmounting, removing its cgroups and directories and giving its capacity back run on
//! a blocking thread afterwards. A crash in between is finished by the next start (the
//! runtime's killed marker, see [`crate::runtime::Ending`]).
//!
//! Until its cleanup ends a killed sandbox keeps what a new sandbox could otherwise get:
//! its capacity reservation, its host id range, its id and its layers. A create that
//! does not fit the capacity waits for cleanups in flight before it is refused
//! ([`Cleanups::wait_for_one`]); a shutdown waits for all of them ([`Cleanups::idle`]).

use tokio::sync::watch;

/// The number of cleanups in flight, observable.
#[derive(Debug)]
pub(super) struct Cleanups {
    running: watch::Sender<usize>,
}

impl Default for Cleanups {
    fn default() -> Self {
        Self {
            running: watch::Sender::new(0),
        }
    }
}

/// One cleanup in flight; it ends when dropped (whatever the cleanup's outcome, a panic
/// included).
#[derive(Debug)]
pub(super) struct Running {
    running: watch::Sender<usize>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.running.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// What [`Cleanups::observe`] saw: whether cleanups were in flight, and a receiver that
/// wakes on the next change after that look.
#[derive(Debug)]
pub(super) struct Observed {
    any: bool,
    receiver: watch::Receiver<usize>,
}

impl Cleanups {
    /// Counts one more cleanup in flight until the returned guard is dropped.
    pub(super) fn start(&self) -> Running {
        self.running.send_modify(|n| *n += 1);
        Running {
            running: self.running.clone(),
        }
    }

    /// How many cleanups are in flight.
    #[cfg(test)]
    pub(super) fn count(&self) -> usize {
        *self.running.borrow()
    }

    /// Looks at the cleanups in flight now. Take the look *before* the check that may
    /// need one to end (e.g. a capacity reservation), then pass it to
    /// [`wait_for_one`](Self::wait_for_one): an end between the two is not missed.
    pub(super) fn observe(&self) -> Observed {
        let mut receiver = self.running.subscribe();
        let any = *receiver.borrow_and_update() > 0;
        Observed { any, receiver }
    }

    /// Waits until a cleanup in flight at `observed` has ended (or another started);
    /// `false` at once when none was in flight then (waiting would not free anything).
    pub(super) async fn wait_for_one(observed: Observed) -> bool {
        let Observed { any, mut receiver } = observed;
        if !any {
            return false;
        }
        // The sender lives as long as the server: an error means it is going away.
        receiver.changed().await.is_ok()
    }

    /// Waits until no cleanup is in flight.
    pub(super) async fn idle(&self) {
        let mut receiver = self.running.subscribe();
        // Only an error if the sender is gone, i.e. nothing can be in flight.
        let _ = receiver.wait_for(|n| *n == 0).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_wait_sees_an_end_that_came_after_the_look() {
        let cleanups = Cleanups::default();
        assert!(!Cleanups::wait_for_one(cleanups.observe()).await);
        let running = cleanups.start();
        assert_eq!(cleanups.count(), 1);
        let observed = cleanups.observe();
        // The cleanup ends between the look and the wait: the wait returns at once.
        drop(running);
        assert!(Cleanups::wait_for_one(observed).await);
        assert_eq!(cleanups.count(), 0);
        cleanups.idle().await;
    }

    #[tokio::test]
    async fn idle_waits_for_every_cleanup() {
        let cleanups = std::sync::Arc::new(Cleanups::default());
        let first = cleanups.start();
        let second = cleanups.start();
        let waiter = tokio::spawn({
            let cleanups = cleanups.clone();
            async move { cleanups.idle().await }
        });
        drop(first);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "one cleanup is still in flight");
        drop(second);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("idle once both ended")
            .unwrap();
    }
}

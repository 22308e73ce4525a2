//! The process's health: fatal errors, readiness (caught up with the log), and
//! whether checkpoints are failing.
//!
//! A fatal error is any state the process cannot go on from without risking an
//! acknowledged event: a log write or fsync that failed, a partition that cannot
//! decode its records, a checkpoint seal that failed, checkpoints failing past their
//! deadline, an actor that panicked. [`Health::fatal`] records the first reason and
//! wakes [`Health::wait_fatal`]; the binary then ends with a non-zero code and the
//! restart recovers from the last checkpoint plus the log, exactly as after SIGKILL.

use parking_lot::Mutex;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use tokio::sync::Notify;

#[derive(Default)]
pub struct Health {
    fatal: Mutex<Option<String>>,
    woken: Notify,
    ready: AtomicBool,
    /// Since when checkpoints fail (the first failure after the last success).
    checkpoints_failing_since: Mutex<Option<Instant>>,
}

impl Health {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Records a fatal error (the first reason is kept) and wakes the waiters.
    pub fn fatal(&self, reason: impl Into<String>) {
        let reason = reason.into();
        let mut fatal = self.fatal.lock();
        if fatal.is_none() {
            tracing::error!(%reason, "Fatal: the process ends so that a restart recovers exactly.");
            *fatal = Some(reason);
        }
        drop(fatal);
        self.ready.store(false, Ordering::Release);
        // Every waiter's future, created before it checked, is woken (`notify_waiters`).
        self.woken.notify_waiters();
    }

    /// The fatal error, if one happened.
    pub fn fatal_reason(&self) -> Option<String> {
        self.fatal.lock().clone()
    }

    /// Waits for a fatal error and returns its reason.
    pub async fn wait_fatal(&self) -> String {
        loop {
            let woken = self.woken.notified();
            if let Some(reason) = self.fatal_reason() {
                return reason;
            }
            woken.await;
        }
    }

    /// Caught up with the log as of the start, and nothing fatal happened.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub(crate) fn set_ready(&self) {
        if self.fatal.lock().is_none() {
            self.ready.store(true, Ordering::Release);
            self.woken.notify_waiters();
        }
    }

    /// Waits until the pipeline is ready ([`Self::is_ready`]); the fatal error's reason if
    /// one happens first.
    pub async fn wait_ready(&self) -> Result<(), String> {
        loop {
            // Created before the checks: `notify_waiters` wakes it even if not yet polled.
            let woken = self.woken.notified();
            if let Some(reason) = self.fatal_reason() {
                return Err(reason);
            }
            if self.is_ready() {
                return Ok(());
            }
            woken.await;
        }
    }

    /// The last checkpoint failed: since when (the first failure of the streak).
    pub fn checkpoints_failing_since(&self) -> Option<Instant> {
        *self.checkpoints_failing_since.lock()
    }

    /// Records a checkpoint's outcome; returns how long checkpoints have been failing.
    pub(crate) fn checkpoint_outcome(&self, ok: bool) -> Option<std::time::Duration> {
        let mut since = self.checkpoints_failing_since.lock();
        if ok {
            *since = None;
            None
        } else {
            Some(since.get_or_insert_with(Instant::now).elapsed())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn first_fatal_reason_wins_and_wakes() {
        let health = Health::new();
        health.set_ready();
        assert!(health.is_ready());
        let waiter = {
            let h = health.clone();
            tokio::spawn(async move { h.wait_fatal().await })
        };
        health.fatal("log fsync failed");
        health.fatal("second");
        assert_eq!(waiter.await.unwrap(), "log fsync failed");
        assert!(!health.is_ready());
        health.set_ready();
        assert!(!health.is_ready(), "never ready again after a fatal error");
    }

    // Waiting for readiness ends at ready, or at a fatal error; a waiter for each is woken.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waiters_for_ready_and_fatal_are_all_woken() {
        let health = Health::new();
        let ready = {
            let h = health.clone();
            tokio::spawn(async move { h.wait_ready().await })
        };
        tokio::task::yield_now().await;
        health.set_ready();
        assert_eq!(ready.await.unwrap(), Ok(()));

        let health = Health::new();
        let spawn_ready = || {
            let h = health.clone();
            tokio::spawn(async move { h.wait_ready().await })
        };
        let (first, second) = (spawn_ready(), spawn_ready());
        let fatal = {
            let h = health.clone();
            tokio::spawn(async move { h.wait_fatal().await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        health.fatal("lease lost");
        assert_eq!(first.await.unwrap(), Err("lease lost".to_owned()));
        assert_eq!(second.await.unwrap(), Err("lease lost".to_owned()));
        assert_eq!(fatal.await.unwrap(), "lease lost");
    }

    #[test]
    fn checkpoint_failures_streak() {
        let health = Health::new();
        assert!(health.checkpoint_outcome(false).is_some());
        let first = health.checkpoints_failing_since();
        assert!(health.checkpoint_outcome(false).is_some());
        assert_eq!(health.checkpoints_failing_since(), first);
        assert_eq!(health.checkpoint_outcome(true), None);
        assert_eq!(health.checkpoints_failing_since(), None);
    }
}

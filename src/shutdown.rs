//! A clonable shutdown signal: listeners stop accepting when it fires and drain in-flight
//! requests for a bounded time.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{Notify, watch};

#[derive(Clone, Debug)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
    /// Woken whenever the signal may have fired, for the waiters of [`Shutdown::fired`].
    wake: Arc<Notify>,
}

/// The sending side, owned by `serve`.
#[derive(Debug)]
pub struct ShutdownTrigger {
    /// `None` only while the trigger is dropped (see its `Drop`).
    tx: Option<Arc<watch::Sender<bool>>>,
    wake: Arc<Notify>,
}

pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (_, trigger, signal) = channel_with_sender();
    (trigger, signal)
}

/// A channel, and its sender for a forwarder that must not count as the trigger.
fn channel_with_sender() -> (Arc<watch::Sender<bool>>, ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    let tx = Arc::new(tx);
    let wake = Arc::new(Notify::new());
    (
        tx.clone(),
        ShutdownTrigger {
            tx: Some(tx),
            wake: wake.clone(),
        },
        Shutdown { rx, wake },
    )
}

impl ShutdownTrigger {
    pub fn trigger(&self) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(true);
        }
        self.wake.notify_waiters();
    }
}

impl Drop for ShutdownTrigger {
    /// A dropped trigger counts as fired ([`Shutdown::wait`]) once no sender is left; its
    /// waiters look again. The sender goes first, so that a waiter woken on another thread
    /// cannot find it still alive and go back to sleep for good.
    fn drop(&mut self) {
        drop(self.tx.take());
        self.wake.notify_waiters();
    }
}

impl Shutdown {
    /// A signal that never fires (tests, one-shot commands).
    pub fn never() -> Self {
        let (tx, rx) = watch::channel(false);
        std::mem::forget(tx);
        Self {
            rx,
            wake: Arc::new(Notify::new()),
        }
    }

    /// A signal that fires when this one does, or earlier through the returned trigger: a
    /// background job that a configuration reload replaces stops on its own trigger, and with
    /// everything else on shutdown. Needs a Tokio runtime.
    pub fn child(&self) -> (ShutdownTrigger, Shutdown) {
        let (tx, trigger, signal) = channel_with_sender();
        let wake = trigger.wake.clone();
        let parent = self.fired();
        tokio::spawn(async move {
            tokio::select! {
                () = parent => {
                    let _ = tx.send(true);
                    wake.notify_waiters();
                }
                // The child fired or every receiver is gone: nothing left to forward.
                () = tx.closed() => {}
            }
        });
        (trigger, signal)
    }

    pub fn is_triggered(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves once shutdown was requested (or the trigger was dropped).
    pub async fn wait(&mut self) {
        self.fired().await;
    }

    /// Resolves as [`Shutdown::wait`] does, from a future that owns what it needs: for
    /// waiters that live as long as an idle connection (a `Notify` registration is less than
    /// half the size of a `watch` change future, and each idle connection holds one).
    pub fn fired(&self) -> impl Future<Output = ()> + Send + 'static {
        let rx = self.rx.clone();
        let wake = self.wake.clone();
        async move {
            loop {
                let woken = wake.clone().notified_owned();
                let mut woken = std::pin::pin!(woken);
                // Registered before looking, so a trigger in between is not missed.
                woken.as_mut().enable();
                if *rx.borrow() || rx.has_changed().is_err() {
                    return;
                }
                woken.await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_child_fires_with_its_parent_or_alone() {
        let (parent_trigger, parent) = channel();
        let (alone_trigger, mut alone) = parent.child();
        let (_kept, mut with_parent) = parent.child();
        alone_trigger.trigger();
        alone.wait().await;
        assert!(!parent.is_triggered());
        assert!(!with_parent.is_triggered());
        parent_trigger.trigger();
        with_parent.wait().await;
        assert!(with_parent.is_triggered());
    }

    #[tokio::test]
    async fn fired_resolves_on_trigger_on_a_dropped_trigger_and_with_a_parent() {
        let (trigger, signal) = channel();
        let mut fired = std::pin::pin!(signal.fired());
        assert!(futures_util::poll!(fired.as_mut()).is_pending());
        trigger.trigger();
        fired.await;

        let (trigger, signal) = channel();
        let mut fired = std::pin::pin!(signal.fired());
        assert!(futures_util::poll!(fired.as_mut()).is_pending());
        drop(trigger);
        fired.await;

        let (parent_trigger, parent) = channel();
        let (_kept, child) = parent.child();
        let mut fired = std::pin::pin!(child.fired());
        assert!(futures_util::poll!(fired.as_mut()).is_pending());
        parent_trigger.trigger();
        fired.await;

        // Already fired when the waiter is made.
        let (trigger, signal) = channel();
        trigger.trigger();
        signal.fired().await;
    }
}

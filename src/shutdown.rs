//! A clonable shutdown signal: listeners stop accepting when it fires and drain in-flight
//! requests for a bounded time.

use std::sync::Arc;

use tokio::sync::watch;

#[derive(Clone, Debug)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

/// The sending side, owned by `serve`.
#[derive(Debug)]
pub struct ShutdownTrigger {
    tx: Arc<watch::Sender<bool>>,
}

pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger { tx: Arc::new(tx) }, Shutdown { rx })
}

impl ShutdownTrigger {
    pub fn trigger(&self) {
        let _ = self.tx.send(true);
    }
}

impl Shutdown {
    /// A signal that never fires (tests, one-shot commands).
    pub fn never() -> Self {
        let (tx, rx) = watch::channel(false);
        std::mem::forget(tx);
        Self { rx }
    }

    /// A signal that fires when this one does, or earlier through the returned trigger: a
    /// background job that a configuration reload replaces stops on its own trigger, and with
    /// everything else on shutdown. Needs a Tokio runtime.
    pub fn child(&self) -> (ShutdownTrigger, Shutdown) {
        let (trigger, signal) = channel();
        let tx = trigger.tx.clone();
        let mut parent = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = parent.wait() => {
                    let _ = tx.send(true);
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
        while !*self.rx.borrow_and_update() {
            if self.rx.changed().await.is_err() {
                return;
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
}

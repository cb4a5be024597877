//! State that a configuration reload replaces as a whole.
//!
//! A listener holds a [`Live`] and loads the current value once per request: the request then
//! runs to its end on the configuration it started with, and the next request (also on a
//! kept-alive connection) sees whatever was stored last. Loading is one atomic load plus a
//! reference count increment ([`arc_swap`]); storing never waits for readers.

use std::sync::Arc;

use arc_swap::ArcSwap;

/// The current version of a value that may be replaced at any time.
pub struct Live<T>(Arc<ArcSwap<T>>);

impl<T> Live<T> {
    pub fn new(value: Arc<T>) -> Self {
        Self(Arc::new(ArcSwap::new(value)))
    }

    /// The current value; it stays valid however often it is replaced meanwhile.
    pub fn load(&self) -> Arc<T> {
        self.0.load_full()
    }

    /// Replace the value for every later [`Live::load`].
    pub fn store(&self, value: Arc<T>) {
        self.0.store(value);
    }
}

impl<T> Clone for Live<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T> From<Arc<T>> for Live<T> {
    fn from(value: Arc<T>) -> Self {
        Self::new(value)
    }
}

/// An axum handler that extracts `State<Arc<T>>` from a router whose state is a `Live<T>` gets
/// the value current when the request arrived.
impl<T> axum::extract::FromRef<Live<T>> for Arc<T> {
    fn from_ref(live: &Live<T>) -> Arc<T> {
        live.load()
    }
}

impl<T> std::fmt::Debug for Live<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Live")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loaded_value_outlives_a_store_and_the_next_load_sees_the_new_one() {
        let live = Live::new(Arc::new(1));
        let held = live.load();
        live.clone().store(Arc::new(2));
        assert_eq!(*held, 1);
        assert_eq!(*live.load(), 2);
    }
}

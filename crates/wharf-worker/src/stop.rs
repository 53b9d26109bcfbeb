//! A cloneable stop signal shared by the worker's tasks.

use tokio::sync::watch;

/// Fires once; every clone sees it.
#[derive(Clone)]
pub struct Stop {
    tx: std::sync::Arc<watch::Sender<bool>>,
    rx: watch::Receiver<bool>,
}

impl Stop {
    /// Not yet fired.
    pub fn new() -> Self {
        let (tx, rx) = watch::channel(false);
        Self {
            tx: std::sync::Arc::new(tx),
            rx,
        }
    }

    /// Fires the signal for every clone; calling it again changes nothing.
    pub fn trigger(&self) {
        let _ = self.tx.send(true);
    }

    /// Whether [`Stop::trigger`] has been called, without waiting.
    pub fn is_triggered(&self) -> bool {
        *self.rx.borrow()
    }

    /// A receiver that turns `true` on the trigger, for a loop that selects on `changed()`.
    pub fn receiver(&self) -> watch::Receiver<bool> {
        self.rx.clone()
    }

    /// Resolves once [`Stop::trigger`] has been called.
    pub async fn wait(&self) {
        let mut rx = self.rx.clone();
        let _ = rx.wait_for(|v| *v).await;
    }
}

impl Default for Stop {
    fn default() -> Self {
        Self::new()
    }
}

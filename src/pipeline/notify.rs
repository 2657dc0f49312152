//! A single-threaded "wake everyone waiting" signal for one worker's tasks.
//!
//! Used for shutdown (wake idle connections and the accept loop) and for the connection cap
//! (wake the accept loop when a slot frees). Waiters remove themselves when dropped, so a
//! connection that waits on every keep-alive gap does not grow the waiter list.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// Wakes every task currently waiting in [`LocalNotify::notified`].
#[derive(Default)]
pub struct LocalNotify {
    generation: Cell<u64>,
    waiters: RefCell<Vec<Option<Waker>>>,
    free: RefCell<Vec<usize>>,
}

impl LocalNotify {
    /// Wakes all current waiters.
    pub fn notify_all(&self) {
        self.generation.set(self.generation.get() + 1);
        for waker in self
            .waiters
            .borrow_mut()
            .iter_mut()
            .filter_map(Option::take)
        {
            waker.wake();
        }
    }

    /// Resolves at the next [`notify_all`](Self::notify_all) after this call.
    pub fn notified(&self) -> Notified<'_> {
        Notified {
            notify: self,
            generation: self.generation.get(),
            slot: None,
        }
    }

    fn register(&self, slot: &mut Option<usize>, waker: &Waker) {
        let mut waiters = self.waiters.borrow_mut();
        match *slot {
            Some(i) => waiters[i] = Some(waker.clone()),
            None => {
                let i = match self.free.borrow_mut().pop() {
                    Some(i) => i,
                    None => {
                        waiters.push(None);
                        waiters.len() - 1
                    }
                };
                waiters[i] = Some(waker.clone());
                *slot = Some(i);
            }
        }
    }
}

/// Future returned by [`LocalNotify::notified`].
pub struct Notified<'a> {
    notify: &'a LocalNotify,
    generation: u64,
    slot: Option<usize>,
}

impl Future for Notified<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.notify.generation.get() != this.generation {
            return Poll::Ready(());
        }
        this.notify.register(&mut this.slot, cx.waker());
        Poll::Pending
    }
}

impl Drop for Notified<'_> {
    fn drop(&mut self) {
        if let Some(i) = self.slot.take() {
            self.notify.waiters.borrow_mut()[i] = None;
            self.notify.free.borrow_mut().push(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::task::Wake;

    struct CountWake(std::sync::atomic::AtomicUsize);
    impl Wake for CountWake {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn notify_wakes_waiter_and_completes_it() {
        let notify = LocalNotify::default();
        let counter = Arc::new(CountWake(0.into()));
        let waker = Waker::from(counter.clone());
        let mut cx = Context::from_waker(&waker);
        let mut fut = Box::pin(notify.notified());
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        notify.notify_all();
        assert_eq!(counter.0.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(fut.as_mut().poll(&mut cx).is_ready());
    }

    #[test]
    fn dropped_waiters_free_their_slot() {
        let notify = LocalNotify::default();
        let waker = Waker::from(Arc::new(CountWake(0.into())));
        let mut cx = Context::from_waker(&waker);
        for _ in 0..1000 {
            let mut fut = Box::pin(notify.notified());
            assert!(fut.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(notify.waiters.borrow().len(), 1);
    }
}

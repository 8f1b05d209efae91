//! Wake every task waiting on a shard-local event (data appended, a group changed). glommio has
//! no Notify; this is the close-and-replace semaphore pattern: waiters hold the current semaphore,
//! `notify_all` closes it (waking them all) and puts a fresh one in its place.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use glommio::sync::Semaphore;

pub struct Notify {
    current: RefCell<Rc<Semaphore>>,
}

impl Default for Notify {
    fn default() -> Self {
        Notify { current: RefCell::new(Rc::new(Semaphore::new(0))) }
    }
}

impl Notify {
    /// A ticket for the next notification. Take it *before* checking the condition you wait for,
    /// so a notification between the check and the wait is not lost.
    pub fn ticket(&self) -> Rc<Semaphore> {
        self.current.borrow().clone()
    }

    /// Waits until the ticket's notification or `timeout`; true if notified.
    pub async fn wait(ticket: Rc<Semaphore>, timeout: Duration) -> bool {
        let waited = glommio::timer::timeout(timeout, async {
            // Err(Closed) is the notification; the semaphore never has units to hand out.
            let _ = ticket.acquire(1).await;
            Ok(())
        })
        .await;
        waited.is_ok()
    }

    pub fn notify_all(&self) {
        let old = self.current.replace(Rc::new(Semaphore::new(0)));
        old.close();
    }
}

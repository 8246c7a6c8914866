//! Wait queues owned by limits.
//!
//! A call that finds every instance it could use blocked becomes a [`Waiter`] (one per waiting
//! call, with a ticket giving its place in line) and is queued in the [`WaitList`] of *each*
//! limit that blocks one of its candidates: an instance's or a model's concurrency limit, a
//! rate limit, a breaker's half-open probe slots. Whatever frees capacity (a release, a refund,
//! a probe ending, a reload raising a limit) wakes the oldest waiters of that limit's own list,
//! so a waiter queued through another group, another pool or an engine replaced by a reload is
//! woken all the same: the wake-up follows the limit, not the route.
//!
//! Rules every limit follows (all under the limit's own lock, so a check and the registration
//! it leads to are one step and no release can slip in between):
//! - **First come, first served.** Capacity may be taken only by a caller with no older waiter
//!   queued in front of it ([`WaitList::may_take`]); a newcomer that finds waiters queues behind
//!   them.
//! - **Wake only who can use it.** A release wakes as many of the oldest waiters as it freed
//!   units (one for a slot).
//! - **Pass on what you turn down.** A woken waiter that takes nothing from this limit (it was
//!   served elsewhere, gave up or was cancelled) leaves the list with [`Queue::leave`], which
//!   wakes the next waiter if capacity is still free, so a wake-up is never lost.
//!
//! The waiting side keeps a [`WaitCtx`]: its waiter and every queue it joined. Dropping the
//! context leaves them all, which is what makes waiting cancel-safe.

use std::collections::VecDeque;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use super::sync::Signal;

/// Next ticket to hand out; only the order matters.
static NEXT_TICKET: AtomicU64 = AtomicU64::new(1);

/// One waiting call. Shared by every [`WaitList`] it is queued in.
pub struct Waiter {
    ticket: u64,
    signal: Signal,
}

impl Waiter {
    /// A new waiter at the back of every line it will join.
    pub fn new() -> Arc<Waiter> {
        let ticket = NEXT_TICKET.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Arc::new(Waiter { ticket, signal: Signal::new() })
    }

    /// Its place in line: lower is older.
    pub fn ticket(&self) -> u64 {
        self.ticket
    }

    /// Wake it (a stored wake-up: a waiter that is not asleep yet returns at once from its
    /// next [`Waiter::wait`]).
    pub fn wake(&self) {
        self.signal.raise();
    }

    /// Whether a wake-up is pending.
    pub fn is_woken(&self) -> bool {
        self.signal.is_raised()
    }

    /// Consume a pending wake-up, if any.
    pub fn take_wake(&self) -> bool {
        self.signal.take()
    }

    /// Sleep until woken.
    ///
    /// # Cancel safety
    /// Cancel-safe: a wake-up that arrives while or after this is dropped is kept for the next
    /// wait.
    pub async fn wait(&self) {
        self.signal.wait().await
    }

    /// Block the calling loom model thread until woken.
    #[cfg(echelon_loom)]
    pub(crate) fn block(&self) {
        self.signal.block()
    }
}

impl std::fmt::Debug for Waiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiter").field("ticket", &self.ticket).field("woken", &self.is_woken()).finish()
    }
}

/// The waiters of one limit, oldest first. Kept inside the limit's own lock.
#[derive(Default)]
pub struct WaitList {
    queue: VecDeque<Arc<Waiter>>,
}

impl WaitList {
    /// Waiters queued.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether nobody waits.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Whether `who` (`None`: a newcomer that never queued) may take capacity now: nobody
    /// older than it waits.
    pub fn may_take(&self, who: Option<&Waiter>) -> bool {
        match (self.queue.front(), who) {
            (None, _) => true,
            (Some(front), Some(w)) => front.ticket >= w.ticket,
            (Some(_), None) => false,
        }
    }

    /// Queue `w` at its ticket's place (a waiter that left and comes back keeps its place).
    /// Queuing a waiter twice keeps one entry.
    pub fn enqueue(&mut self, w: &Arc<Waiter>) {
        match self.queue.binary_search_by_key(&w.ticket, |x| x.ticket) {
            Ok(_) => {}
            Err(at) => self.queue.insert(at, w.clone()),
        }
    }

    /// Take the waiter with `ticket` out of the line. Returns whether it was queued.
    pub fn remove(&mut self, ticket: u64) -> bool {
        match self.queue.binary_search_by_key(&ticket, |x| x.ticket) {
            Ok(at) => {
                self.queue.remove(at);
                true
            }
            Err(_) => false,
        }
    }

    /// Whether `ticket` is first in line.
    pub fn is_front(&self, ticket: u64) -> bool {
        self.queue.front().is_some_and(|f| f.ticket == ticket)
    }

    /// Wake the `n` oldest waiters (those already woken count: they are about to take a unit).
    pub fn wake_oldest(&self, n: usize) {
        for w in self.queue.iter().take(n) {
            w.wake();
        }
    }

    /// Wake every waiter (a change that may let all of them through, such as a breaker closing).
    pub fn wake_all(&self) {
        for w in &self.queue {
            w.wake();
        }
    }
}

/// A limit a waiter can be queued in.
pub trait Queue: Send + Sync {
    /// Take the waiter with `ticket` out of the line, waking the next one if capacity it could
    /// have used is free (the pass-on rule).
    fn leave(&self, ticket: u64);
}

/// The waiting side of one acquisition: its waiter (none until it first has to wait) and every
/// queue it joined. Dropping it leaves them all.
///
/// A waiter looks at its candidates again each time it is woken; the queues it should stay in
/// are those that still hold it back. [`WaitCtx::retain_latest`] after each look leaves the
/// others, which passes on the wake-ups it will not use.
#[derive(Default)]
pub struct WaitCtx {
    waiter: Option<Arc<Waiter>>,
    /// Each joined queue with the look (pass number) that last joined it.
    queues: Vec<(Arc<dyn Queue>, u64)>,
    pass: u64,
}

impl WaitCtx {
    /// A context that has not waited yet: limits only check it, they do not queue it.
    pub fn new() -> Self {
        Self::default()
    }

    /// From now on, limits that refuse this caller queue it.
    pub fn start_waiting(&mut self) -> &Arc<Waiter> {
        self.waiter.get_or_insert_with(Waiter::new)
    }

    /// The waiter, once [`WaitCtx::start_waiting`] was called.
    pub fn waiter(&self) -> Option<&Arc<Waiter>> {
        self.waiter.as_ref()
    }

    /// Whether it is waiting (limits queue it when they refuse it).
    pub fn is_waiting(&self) -> bool {
        self.waiter.is_some()
    }

    /// Record that `queue` holds this caller's waiter (called by the limit that queued it).
    pub fn joined(&mut self, queue: Arc<dyn Queue>) {
        let ptr = Arc::as_ptr(&queue) as *const ();
        match self.queues.iter_mut().find(|(q, _)| Arc::as_ptr(q) as *const () == ptr) {
            Some(entry) => entry.1 = self.pass,
            None => self.queues.push((queue, self.pass)),
        }
    }

    /// Queues it is in now.
    pub fn queues_joined(&self) -> usize {
        self.queues.len()
    }

    /// End of a look at the candidates: leave every queue this look did not join again, and
    /// start the next look.
    pub fn retain_latest(&mut self) {
        let pass = self.pass;
        if let Some(w) = &self.waiter {
            let ticket = w.ticket;
            self.queues.retain(|(q, p)| {
                if *p == pass {
                    true
                } else {
                    q.leave(ticket);
                    false
                }
            });
        }
        self.pass += 1;
    }

    /// Leave every queue joined (also done on drop).
    pub fn leave_all(&mut self) {
        if let Some(w) = &self.waiter {
            for (q, _) in self.queues.drain(..) {
                q.leave(w.ticket);
            }
        }
    }
}

impl Drop for WaitCtx {
    fn drop(&mut self) {
        self.leave_all();
    }
}

#[cfg(all(test, not(echelon_loom)))]
mod tests {
    use super::*;

    #[test]
    fn tickets_order_the_line_and_a_returning_waiter_keeps_its_place() {
        let (a, b, c) = (Waiter::new(), Waiter::new(), Waiter::new());
        let mut l = WaitList::default();
        assert!(l.may_take(None), "an empty line lets anyone take");
        l.enqueue(&c);
        l.enqueue(&a);
        l.enqueue(&b);
        l.enqueue(&a);
        assert_eq!(l.len(), 3);
        assert!(l.is_front(a.ticket()));
        assert!(l.may_take(Some(&a)));
        assert!(!l.may_take(Some(&b)), "b is behind a");
        assert!(!l.may_take(None), "a newcomer queues behind everyone");
        assert!(l.remove(a.ticket()));
        assert!(!l.remove(a.ticket()));
        assert!(l.may_take(Some(&b)));
        l.enqueue(&a);
        assert!(l.is_front(a.ticket()), "back at its old place, in front of b");
    }

    #[test]
    fn wake_oldest_wakes_only_the_first_n() {
        let ws: Vec<_> = (0..4).map(|_| Waiter::new()).collect();
        let mut l = WaitList::default();
        for w in &ws {
            l.enqueue(w);
        }
        l.wake_oldest(2);
        assert_eq!(ws.iter().map(|w| w.is_woken()).collect::<Vec<_>>(), [true, true, false, false]);
        assert!(ws[0].take_wake() && !ws[0].take_wake());
        l.wake_all();
        assert!(ws.iter().all(|w| w.is_woken()));
    }

    #[tokio::test]
    async fn a_wake_before_the_wait_is_kept() {
        let w = Waiter::new();
        w.wake();
        tokio::time::timeout(std::time::Duration::from_secs(5), w.wait()).await.expect("stored wake-up");
        assert!(!w.is_woken(), "the wait consumed it");
    }
}

//! How a serving runner stops: one value that SIGTERM, the end of the grace period and the
//! workers' own ends change, and that every waiting thread sees at once (a condition variable,
//! not sleep loops that look every few milliseconds).
//!
//! A stop means: claim nothing new, let running jobs go on. An abort, the end of the grace
//! period, means: stop running jobs' hooks and return the jobs to the queue.
//!
//! Each job has a shutdown of its own, a [child](Shutdown::child) of the runner's: the runner's
//! abort reaches it, and it also rings when the job's hook ends or its lease is lost, so the
//! job's waits wake on events, never on a timer.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
struct State {
    stopping: bool,
    aborted: bool,
    /// Workers that have ended (however they ended).
    finished: usize,
    /// Counts every change and ring: a waiter that saw one value sleeps until it moves.
    generation: u64,
}

/// A runner's shutdown, shared by the signal handler's thread, the workers and the watcher of
/// the grace period.
#[derive(Debug, Default)]
pub struct Shutdown {
    state: Mutex<State>,
    changed: Condvar,
    /// Jobs' shutdowns, aborted with this one.
    children: Mutex<Vec<Weak<Shutdown>>>,
}

impl Shutdown {
    fn state(&self) -> MutexGuard<'_, State> {
        // A thread that panicked while holding it left nothing half-done: the state is flags.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update(&self, f: impl FnOnce(&mut State)) {
        let mut state = self.state();
        f(&mut state);
        state.generation += 1;
        drop(state);
        self.changed.notify_all();
    }

    /// A shutdown for one job: aborted when this one is (or already aborted if it is).
    pub fn child(&self) -> Arc<Shutdown> {
        let child = Arc::new(Shutdown::default());
        let mut children = self.children.lock().unwrap_or_else(|e| e.into_inner());
        children.retain(|c| c.strong_count() > 0);
        children.push(Arc::downgrade(&child));
        drop(children);
        if self.is_aborted() {
            child.abort();
        }
        child
    }

    /// Wakes the waiters of [`wait_change`](Shutdown::wait_change): something they watch
    /// changed (a hook ended, a lease was lost).
    pub fn ring(&self) {
        self.update(|_| {});
    }

    /// The count of changes so far, to pass to [`wait_change`](Shutdown::wait_change).
    pub fn generation(&self) -> u64 {
        self.state().generation
    }

    /// Waits up to `timeout` for a change or ring after `seen`.
    pub fn wait_change(&self, seen: u64, timeout: Duration) {
        let state = self.state();
        let _ = self.changed.wait_timeout_while(state, timeout, |s| s.generation == seen);
    }

    /// Claim nothing new (SIGTERM, SIGINT).
    pub fn stop(&self) {
        self.update(|s| s.stopping = true);
    }

    pub fn is_stopping(&self) -> bool {
        self.state().stopping
    }

    /// Stop what is running too (the grace period is over).
    pub fn abort(&self) {
        self.update(|s| {
            s.stopping = true;
            s.aborted = true;
        });
        let children = std::mem::take(&mut *self.children.lock().unwrap_or_else(|e| e.into_inner()));
        for child in children.iter().filter_map(Weak::upgrade) {
            child.abort();
        }
    }

    pub fn is_aborted(&self) -> bool {
        self.state().aborted
    }

    /// A worker ended.
    pub fn worker_finished(&self) {
        self.update(|s| s.finished += 1);
    }

    /// Waits up to `timeout` for a stop; true when stopping.
    pub fn sleep(&self, timeout: Duration) -> bool {
        let state = self.state();
        let (state, _) =
            self.changed.wait_timeout_while(state, timeout, |s| !s.stopping).unwrap_or_else(|e| e.into_inner());
        state.stopping
    }

    /// Waits until a stop, or until `workers` workers have ended; true when stopping.
    pub fn wait_stop_or_end(&self, workers: usize) -> bool {
        let state = self.state();
        let state =
            self.changed.wait_while(state, |s| !s.stopping && s.finished < workers).unwrap_or_else(|e| e.into_inner());
        state.finished < workers
    }

    /// Waits up to `grace` for `workers` workers to end; true when they all have.
    pub fn wait_end(&self, workers: usize, grace: Duration) -> bool {
        let deadline = Instant::now() + grace;
        let mut state = self.state();
        while state.finished < workers {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = self.changed.wait_timeout(state, left).unwrap_or_else(|e| e.into_inner()).0;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_stop_wakes_every_waiter_at_once() {
        let shutdown = Arc::new(Shutdown::default());
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let s = shutdown.clone();
                std::thread::spawn(move || s.sleep(Duration::from_secs(3600)))
            })
            .collect();
        shutdown.stop();
        for w in waiters {
            assert!(w.join().unwrap(), "woken by the stop, not by the hour passing");
        }
        assert!(!shutdown.is_aborted());
    }

    #[test]
    fn an_abort_reaches_jobs_and_a_ring_wakes_their_waits() {
        let runner = Shutdown::default();
        let job = runner.child();
        let seen = job.generation();
        let waiting = {
            let job = job.clone();
            std::thread::spawn(move || job.wait_change(seen, Duration::from_secs(3600)))
        };
        job.ring();
        waiting.join().unwrap(); // woken by the ring, not by the hour passing
        assert!(!job.is_aborted());
        runner.abort();
        assert!(job.is_aborted(), "the runner's abort reaches its jobs");
        assert!(runner.child().is_aborted(), "a job started after the abort starts aborted");
    }

    #[test]
    fn the_end_of_the_workers_ends_the_wait() {
        let shutdown = Arc::new(Shutdown::default());
        let s = shutdown.clone();
        let watcher = std::thread::spawn(move || s.wait_stop_or_end(2));
        shutdown.worker_finished();
        shutdown.worker_finished();
        assert!(!watcher.join().unwrap(), "ended, not stopped");
        assert!(shutdown.wait_end(2, Duration::ZERO));
        assert!(!Shutdown::default().wait_end(1, Duration::from_millis(1)));
    }
}

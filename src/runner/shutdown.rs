//! How a serving runner stops: one value that SIGTERM, the end of the grace period and the
//! workers' own ends change, and that every waiting thread sees at once (a condition variable,
//! not sleep loops that look every few milliseconds).
//!
//! A stop means: claim nothing new, let running jobs go on. An abort, the end of the grace
//! period, means: stop running jobs' hooks and return the jobs to the queue.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
struct State {
    stopping: bool,
    aborted: bool,
    /// Workers that have ended (however they ended).
    finished: usize,
}

/// A runner's shutdown, shared by the signal handler's thread, the workers and the watcher of
/// the grace period.
#[derive(Debug, Default)]
pub struct Shutdown {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shutdown {
    fn state(&self) -> MutexGuard<'_, State> {
        // A thread that panicked while holding it left nothing half-done: the state is flags.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.state());
        self.changed.notify_all();
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

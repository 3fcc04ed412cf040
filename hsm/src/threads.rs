//! Threads of their own for a token's signatures, one per session of its pool.
//!
//! A PKCS#11 call blocks, so async code cannot make it on the executor. Tokio's
//! blocking pool was the first home: under load it grew a thread per waiting request
//! (over a hundred at 128 connections), each woken for its job, most of them then
//! asleep again on the session pool's condition variable while the token's few
//! sessions were busy, and woken again when one came back. `perf` on the TSA with
//! SoftHSM2 showed the kernel's thread switching at 40% of the server's CPU and the
//! token's own arithmetic at 20%. Here as many threads as the token has sessions take
//! jobs from one queue and go on to the next without sleeping while any is waiting.

use std::{
    collections::VecDeque,
    panic::AssertUnwindSafe,
    sync::{Arc, Condvar, Mutex, MutexGuard},
};

use crate::HsmError;

type Job = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    /// Threads waiting for a job: a new job wakes one only if there is one (a wake
    /// with nobody waiting is a system call for nothing).
    idle: usize,
    stopped: bool,
}

#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A job runs outside the lock and its panic is caught, so the lock cannot be
        // poisoned by one; recover the queue rather than stop signing if it ever is.
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The signing threads of one token. They stop, after the jobs already queued, when
/// this is dropped.
pub(crate) struct SignThreads {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for SignThreads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignThreads").finish_non_exhaustive()
    }
}

impl SignThreads {
    /// Starts `count` threads (at least one) named after `name`.
    pub(crate) fn start(name: &str, count: usize) -> Result<Self, HsmError> {
        let shared = Arc::new(Shared::default());
        for n in 0..count.max(1) {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("{name}-{n}"))
                .spawn(move || work(&shared))
                .map_err(|e| HsmError::Task {
                    detail: format!("starting a signing thread: {e}"),
                })?;
        }
        Ok(Self { shared })
    }

    /// Queues `job` for one of the threads now; the future gives its result, or an
    /// error if it panicked.
    pub(crate) fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> impl Future<Output = Result<T, HsmError>> + Send + 'static {
        let (reply, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            // The caller may have gone away meanwhile; nothing to tell then.
            let _ = reply.send(job());
        });
        {
            let mut queue = self.shared.lock();
            queue.jobs.push_back(job);
            if queue.idle > 0 {
                self.shared.ready.notify_one();
            }
        }
        async move {
            result.await.map_err(|_| HsmError::Task {
                detail: "a signing job failed without an answer (it panicked)".into(),
            })
        }
    }
}

impl Drop for SignThreads {
    fn drop(&mut self) {
        self.shared.lock().stopped = true;
        self.shared.ready.notify_all();
    }
}

fn work(shared: &Shared) {
    loop {
        let job = {
            let mut queue = shared.lock();
            loop {
                if let Some(job) = queue.jobs.pop_front() {
                    break job;
                }
                if queue.stopped {
                    return;
                }
                queue.idle += 1;
                queue = shared
                    .ready
                    .wait(queue)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                queue.idle -= 1;
            }
        };
        // A panicking job drops its reply unsent (its caller gets an error); the
        // thread lives on for the next.
        if std::panic::catch_unwind(AssertUnwindSafe(job)).is_err() {
            tracing::error!("a signing job panicked");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_jobs_on_its_threads_and_survives_a_panic() {
        let threads = SignThreads::start("eid-test-sign", 2).unwrap();
        let name = threads
            .run(|| std::thread::current().name().map(str::to_owned))
            .await
            .unwrap();
        assert!(name.unwrap().starts_with("eid-test-sign-"));
        let failed = threads.run(|| -> u8 { panic!("a job that fails") }).await;
        assert!(matches!(failed, Err(HsmError::Task { .. })));
        // Queued at once, taken by both threads, each answer to its own caller.
        let pending: Vec<_> = (0..64u32).map(|n| threads.run(move || n * 2)).collect();
        let mut results = Vec::new();
        for job in pending {
            results.push(job.await.unwrap());
        }
        assert_eq!(results, (0..64).map(|n| n * 2).collect::<Vec<_>>());
    }
}

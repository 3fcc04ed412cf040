//! A bounded pool of logged-in sessions on one token.
//!
//! A `cryptoki` `Session` is `Send` but not `Sync`, so each caller checks one out for
//! the length of an operation. At most `capacity` sessions exist; further callers wait.
//! Sessions are opened lazily and put back on drop of the checkout guard, unless the
//! operation showed them to be dead, in which case they are closed and forgotten.

use std::sync::{Condvar, Mutex, MutexGuard};

use cryptoki::session::Session;

use super::{CallError, context::Token};
use crate::HsmError;

struct PoolState {
    idle: Vec<Session>,
    /// Sessions that exist: idle plus checked out.
    open: usize,
}

pub(super) struct SessionPool {
    token: Token,
    capacity: usize,
    state: Mutex<PoolState>,
    returned: Condvar,
}

fn poisoned<T>(_: T) -> CallError {
    CallError::Other(HsmError::Task {
        detail: "session pool lock poisoned by an earlier panic".into(),
    })
}

impl SessionPool {
    pub(super) fn new(token: Token, capacity: usize) -> Self {
        Self {
            token,
            capacity: capacity.max(1),
            state: Mutex::new(PoolState {
                idle: Vec::new(),
                open: 0,
            }),
            returned: Condvar::new(),
        }
    }

    pub(super) fn token(&self) -> &Token {
        &self.token
    }

    fn lock(&self) -> Result<MutexGuard<'_, PoolState>, CallError> {
        self.state.lock().map_err(poisoned)
    }

    /// An idle session, a new one if the pool is below capacity, or the next one
    /// returned.
    fn checkout(&self) -> Result<PooledSession<'_>, CallError> {
        let mut state = self.lock()?;
        loop {
            if let Some(session) = state.idle.pop() {
                return Ok(PooledSession {
                    pool: self,
                    session: Some(session),
                });
            }
            if state.open < self.capacity {
                state.open += 1;
                // Open outside the lock: it talks to the token.
                drop(state);
                return match self.token.open_session() {
                    Ok(session) => Ok(PooledSession {
                        pool: self,
                        session: Some(session),
                    }),
                    Err(e) => {
                        self.forget_one();
                        Err(e)
                    }
                };
            }
            state = self.returned.wait(state).map_err(poisoned)?;
        }
    }

    /// One session fewer exists; wake a waiter so it may open a replacement.
    fn forget_one(&self) {
        if let Ok(mut state) = self.state.lock() {
            state.open = state.open.saturating_sub(1);
        }
        self.returned.notify_one();
    }

    /// Closes every idle session: when one session is found dead the others usually
    /// are too (token reset, `C_CloseAllSessions`, logout of the application).
    fn drop_idle(&self) {
        let stale = match self.state.lock() {
            Ok(mut state) => {
                let stale = std::mem::take(&mut state.idle);
                state.open = state.open.saturating_sub(stale.len());
                stale
            }
            Err(_) => Vec::new(),
        };
        // Closing talks to the token: outside the lock.
        drop(stale);
        self.returned.notify_all();
    }

    /// Runs `operation` on a pooled session. If the session turns out to be lost
    /// (handle invalid, closed, logged out, device removed or failing), it is
    /// discarded, the token's slot is looked up again, and `operation` runs once more
    /// on a freshly opened and logged-in session.
    pub(super) fn with_session<T>(
        &self,
        operation: impl FnMut(&Session) -> Result<T, CallError>,
    ) -> Result<T, CallError> {
        self.run(false, operation)
    }

    /// Like [`Self::with_session`], but the session is closed rather than reused if
    /// `operation` fails: for operations that may leave state behind in the session
    /// (a signature initialised but not finished, a context-specific login).
    pub(super) fn with_session_discard_on_error<T>(
        &self,
        operation: impl FnMut(&Session) -> Result<T, CallError>,
    ) -> Result<T, CallError> {
        self.run(true, operation)
    }

    fn run<T>(
        &self,
        discard_on_error: bool,
        mut operation: impl FnMut(&Session) -> Result<T, CallError>,
    ) -> Result<T, CallError> {
        let session = self.checkout()?;
        match session.run(&mut operation) {
            Err(e) if e.is_session_lost() => {
                tracing::warn!(
                    token = %self.token.label(),
                    error = ?e.return_value(),
                    "PKCS#11 session lost; reopening and retrying once"
                );
                session.discard();
                self.drop_idle();
                self.token.refresh_slot()?;
                let session = self.checkout()?;
                let result = session.run(&mut operation);
                if result.is_err() && discard_on_error {
                    session.discard();
                }
                result
            }
            Err(e) if discard_on_error => {
                session.discard();
                Err(e)
            }
            other => other,
        }
    }
}

/// A checked-out session; back to the pool on drop.
struct PooledSession<'a> {
    pool: &'a SessionPool,
    session: Option<Session>,
}

impl PooledSession<'_> {
    fn run<T>(
        &self,
        operation: &mut impl FnMut(&Session) -> Result<T, CallError>,
    ) -> Result<T, CallError> {
        match &self.session {
            Some(session) => operation(session),
            None => Err(CallError::Other(HsmError::Task {
                detail: "pooled session used after being discarded".into(),
            })),
        }
    }

    /// Closes the session instead of returning it.
    fn discard(mut self) {
        drop(self.session.take());
        self.pool.forget_one();
    }
}

impl Drop for PooledSession<'_> {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            match self.pool.state.lock() {
                Ok(mut state) => state.idle.push(session),
                // A poisoned pool is unusable anyway; let the session close.
                Err(_) => drop(session),
            }
            self.pool.returned.notify_one();
        }
    }
}

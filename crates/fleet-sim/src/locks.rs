//! The one way the simulator takes a lock.
//!
//! The partitions, the control API and the feed cache all lock shared state; they share one
//! rule for a poisoned lock, and it lives here, below all of them, so none depends on another
//! just to lock.

use std::sync::{Mutex, MutexGuard};

/// A panic while holding a lock would be a simulator bug; keep serving rather than turn every
/// later request into a panic too.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

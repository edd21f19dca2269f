//! How the crate takes its `std::sync::Mutex`es: [`lock`].
//!
//! Every mutex of the crate (control plane, runtime, egress) guards data that each
//! critical section leaves consistent at every point a panic could occur (a map insert or
//! remove, a record field assigned, a token swapped, a pool entry pushed or popped): none
//! does a multi-step update a panic could leave half done. A panic while one is held is a bug elsewhere, so the data is still good and the
//! server keeps serving rather than turning one panicked task into a panic in every
//! later caller: poisoning is recovered from (`PoisonError::into_inner`).

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex`, recovering the guard if another thread panicked while holding it (see
/// the [module docs](self) for why that is sound here).
pub(crate) fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

//! The lifecycle's tests, by concern, over one shared [`world`].

mod commands;
mod create;
mod follow_up;
mod kill;
mod reconcile;
mod timeouts;
mod world;

//! The pull request module's tests, by concern, over one shared [`world`].

mod git;
mod merge;
mod pipeline;
mod remote;
mod webhook;
mod world;

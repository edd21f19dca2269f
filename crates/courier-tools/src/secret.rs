//! The secret strings plans carry (provider keys, the GitHub token): Courier's one
//! [`Secret`](courier_secret::Secret), re-exported so `courier_tools::Secret` users need
//! no other import. `Debug`, `Display` and `Serialize` show only `****abcd`.

pub use courier_secret::Secret;

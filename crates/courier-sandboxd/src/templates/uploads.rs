//! COPY uploads: the archives clients `PUT` to `/templates/{id}/files/{hash}` for COPY
//! steps, kept in `<data_dir>/templates/<id>/files/<hash>` while a build of that template
//! may still need them, and the caps that keep them from filling the disk.
//!
//! - One upload holds at most
//!   [`ServerLimits::max_upload_bytes`](crate::ServerLimits::max_upload_bytes).
//! - All stored uploads plus those arriving hold at most
//!   [`ServerLimits::max_uploads_total_bytes`](crate::ServerLimits::max_uploads_total_bytes).
//!   Every arriving chunk is counted under one lock against the stored total (measured
//!   when the upload began, plus what other uploads completed since) and every other
//!   arriving upload, so concurrent uploads cannot pass the cap together.
//! - Once a template has no build waiting or running, its uploads are removed (the
//!   builds that needed them are over; a later build uploads again, which the SDKs do
//!   when `GET …/files/{hash}` says the files are not present).
//!
//! Past a cap the upload is refused (413 at the API) and its partial file removed.

use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::ServerLimits;

/// Why an upload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UploadRefused {
    /// The upload itself is too large.
    #[error("uploads are limited to {limit} bytes each (max_upload_bytes); this one passed it")]
    TooLarge {
        /// The limit, bytes.
        limit: u64,
    },
    /// The stored uploads would grow past their total cap.
    #[error(
        "the stored uploads are limited to {limit} bytes in total (max_uploads_total_bytes); \
         {in_use} bytes are stored or arriving, this upload included"
    )]
    TotalTooLarge {
        /// The limit, bytes.
        limit: u64,
        /// What is stored or arriving, bytes.
        in_use: u64,
    },
}

#[derive(Debug, Default)]
struct Counters {
    /// Bytes of uploads still arriving.
    arriving: u64,
    /// Bytes of uploads completed since the server started (only grows).
    completed: u64,
}

/// The server's upload counters. Cheap to clone; clones share them.
#[derive(Debug, Clone, Default)]
pub(crate) struct UploadBudget {
    counters: Arc<Mutex<Counters>>,
}

impl UploadBudget {
    fn counters(&self) -> std::sync::MutexGuard<'_, Counters> {
        // Plain integers: still consistent after a panicking holder.
        crate::lock::lock(&self.counters)
    }

    /// Starts counting one upload. `templates_dir` is `<data_dir>/templates`; its stored
    /// uploads are measured now (blocking: a directory walk).
    pub(crate) fn begin(&self, templates_dir: &Path, limits: &ServerLimits) -> UploadTicket {
        let counters = self.counters();
        // Measured under the lock, so an upload completing meanwhile is either in the
        // measurement or in `completed` after `completed_at_start`, never in both.
        let stored = stored_bytes(templates_dir);
        UploadTicket {
            budget: self.clone(),
            stored_at_start: stored,
            completed_at_start: counters.completed,
            size: 0,
            max_upload: limits.max_upload_bytes,
            max_total: limits.max_uploads_total_bytes,
            done: false,
        }
    }
}

/// One upload being counted; its bytes stop counting as arriving when it is
/// [`complete`](UploadTicket::complete)d or dropped.
#[derive(Debug)]
pub(crate) struct UploadTicket {
    budget: UploadBudget,
    stored_at_start: u64,
    completed_at_start: u64,
    size: u64,
    max_upload: u64,
    max_total: u64,
    done: bool,
}

impl UploadTicket {
    /// Counts `n` more bytes of this upload, or refuses them.
    pub(crate) fn add(&mut self, n: u64) -> Result<(), UploadRefused> {
        if self.size.saturating_add(n) > self.max_upload {
            return Err(UploadRefused::TooLarge {
                limit: self.max_upload,
            });
        }
        let mut counters = self.budget.counters();
        let in_use = self
            .stored_at_start
            .saturating_add(counters.completed - self.completed_at_start)
            .saturating_add(counters.arriving)
            .saturating_add(n);
        if in_use > self.max_total {
            return Err(UploadRefused::TotalTooLarge {
                limit: self.max_total,
                in_use,
            });
        }
        counters.arriving += n;
        self.size += n;
        Ok(())
    }

    /// Moves the upload into place with `store` (a rename) and counts it as stored.
    pub(crate) fn complete<T>(mut self, store: impl FnOnce() -> T) -> T {
        let mut counters = self.budget.counters();
        let stored = store();
        counters.arriving = counters.arriving.saturating_sub(self.size);
        counters.completed += self.size;
        self.done = true;
        stored
    }
}

impl Drop for UploadTicket {
    fn drop(&mut self) {
        if !self.done {
            let mut counters = self.budget.counters();
            counters.arriving = counters.arriving.saturating_sub(self.size);
        }
    }
}

/// Bytes of the stored uploads under `templates_dir` (`<id>/files/<hash>`; not the
/// partial `.….upload` files nor the `.….token` files, which start with a dot).
pub(crate) fn stored_bytes(templates_dir: &Path) -> u64 {
    let Ok(templates) = std::fs::read_dir(templates_dir) else {
        return 0;
    };
    let mut total = 0u64;
    for template in templates.flatten() {
        let Ok(files) = std::fs::read_dir(template.path().join("files")) else {
            continue;
        };
        for file in files.flatten() {
            if file.file_name().as_encoded_bytes().starts_with(b".") {
                continue;
            }
            if let Ok(meta) = file.path().symlink_metadata()
                && meta.is_file()
            {
                total = total.saturating_add(meta.len());
            }
        }
    }
    total
}

/// Removes the stored uploads in `files_dir` (not partial uploads or link tokens).
pub(crate) fn remove_stored(files_dir: &Path) -> usize {
    let Ok(files) = std::fs::read_dir(files_dir) else {
        return 0;
    };
    let mut removed = 0;
    for file in files.flatten() {
        if file.file_name().as_encoded_bytes().starts_with(b".") {
            continue;
        }
        match std::fs::remove_file(file.path()) {
            Ok(()) => removed += 1,
            Err(e) => {
                tracing::warn!(path = %file.path().display(), error = %e, "could not remove an upload")
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    // What an API-key holder (or whoever holds an upload link) tries here: uploading
    // more than the disk should give to uploads, in one large upload or in many
    // concurrent ones. Each test asserts the counters refuse it.

    fn limits(one: u64, total: u64) -> ServerLimits {
        ServerLimits {
            max_upload_bytes: one,
            max_uploads_total_bytes: total,
            ..ServerLimits::default()
        }
    }

    #[test]
    fn one_upload_past_its_cap_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let budget = UploadBudget::default();
        let mut ticket = budget.begin(dir.path(), &limits(10, 100));
        ticket.add(6).unwrap();
        assert_eq!(
            ticket.add(5).unwrap_err(),
            UploadRefused::TooLarge { limit: 10 }
        );
        let message = UploadRefused::TooLarge { limit: 10 }.to_string();
        assert!(message.contains("max_upload_bytes") && message.contains("10 bytes"));
    }

    #[test]
    fn concurrent_and_stored_uploads_share_the_total_cap() {
        let dir = tempfile::tempdir().unwrap();
        let files = dir.path().join("tpl1/files");
        std::fs::create_dir_all(&files).unwrap();
        std::fs::write(files.join("stored"), vec![0u8; 40]).unwrap();
        // Partial uploads and tokens are not stored uploads.
        std::fs::write(files.join(".stored.abc.upload"), vec![0u8; 1000]).unwrap();
        std::fs::write(files.join(".stored.token"), "x").unwrap();
        assert_eq!(stored_bytes(dir.path()), 40);
        let budget = UploadBudget::default();
        let limits = limits(100, 100);
        let mut a = budget.begin(dir.path(), &limits);
        let mut b = budget.begin(dir.path(), &limits);
        a.add(30).unwrap();
        // 40 stored + 30 arriving in `a` + 31 here = 101.
        assert_eq!(
            b.add(31).unwrap_err(),
            UploadRefused::TotalTooLarge {
                limit: 100,
                in_use: 101
            }
        );
        b.add(30).unwrap();
        // `a` completes: its bytes move from arriving to completed, still counted for `b`.
        let path = files.join("a");
        a.complete(|| std::fs::write(&path, vec![0u8; 30]).unwrap());
        assert!(b.add(1).is_err(), "a's stored bytes still count");
        drop(b);
        // A new upload measures the directory: 70 stored.
        let mut c = budget.begin(dir.path(), &limits);
        c.add(30).unwrap();
        assert!(c.add(1).is_err());
        assert_eq!(remove_stored(&files), 2);
        assert_eq!(stored_bytes(dir.path()), 0);
        assert!(files.join(".stored.token").exists());
    }
}

//! A terminal's size, and the process RPC that changes it: a PTY is a process whose
//! handle ([`super::CommandHandle::resize`]) and terminal API ([`super::super::pty`]) both
//! resize it, so the size lives with the processes, below both.

use super::super::rpc::{CallOptions, Envd};
use crate::{
    NotFoundKind, Result,
    proto::process::{self as pb, Pty},
};

/// A terminal size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PtySize {
    /// Columns.
    pub cols: u32,
    /// Rows.
    pub rows: u32,
}

impl PtySize {
    /// A size of `cols` × `rows`.
    ///
    /// ```
    /// let size = courier_e2b::PtySize::new(80, 24);
    /// assert_eq!((size.cols, size.rows), (80, 24));
    /// ```
    pub fn new(cols: u32, rows: u32) -> PtySize {
        PtySize { cols, rows }
    }
}

impl From<PtySize> for Pty {
    fn from(size: PtySize) -> Pty {
        Pty {
            size: Some(pb::pty::Size {
                cols: size.cols,
                rows: size.rows,
            }),
        }
    }
}

pub(crate) async fn resize(envd: &Envd, pid: u32, size: PtySize) -> Result<()> {
    let request = pb::UpdateRequest {
        process: Some(super::selector(pid)),
        pty: Some(size.into()),
    };
    let _: pb::UpdateResponse = envd
        .unary(
            "/process.Process/Update",
            &request,
            &CallOptions::default(),
            NotFoundKind::Process,
        )
        .await?;
    Ok(())
}

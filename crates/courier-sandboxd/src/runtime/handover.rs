//! How a helper receives its task: over a Unix stream socket (its stdin), one message
//! carrying the descriptors it needs, then the task's JSON.
//!
//! Starting the helper (fork, exec, the dynamic loader, the program's start) costs ~2.5 ms,
//! a quarter of a create. Because the task and descriptors come over a socket rather
//! than through `exec`, the runtime can start the next helper before it is needed (it
//! waits, holding nothing of any sandbox) and hand it a create's task in microseconds.
//!
//! The message: a header `task_len: u32, count: u32, targets: [i32; count]` (native
//! endian) with `count` descriptors attached (`SCM_RIGHTS`), then `task_len` bytes of
//! JSON. The helper installs each descriptor at its target number (the console at 1 and
//! 2, [`super::init::GO_FD`] and the others), exactly where a spawn would have put them.

use super::step::StepError;
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};

/// Most descriptors one task carries (console ×2, go, control, lifeline, disk, with room).
const MAX_FDS: usize = 8;

/// Sends `task` with `fds`, each to appear in the helper as its paired number, and
/// closes the sending side (the helper reads the task to its end).
pub(crate) fn send_task(
    mut channel: UnixStream,
    task: &[u8],
    fds: &[(OwnedFd, RawFd)],
) -> io::Result<()> {
    if fds.len() > MAX_FDS {
        return Err(io::Error::other(format!(
            "{} descriptors for a helper; at most {MAX_FDS}",
            fds.len()
        )));
    }
    let task_len = u32::try_from(task.len()).map_err(io::Error::other)?;
    let mut header = Vec::with_capacity(8 + 4 * fds.len());
    header.extend_from_slice(&task_len.to_ne_bytes());
    header.extend_from_slice(&(fds.len() as u32).to_ne_bytes());
    for (_, target) in fds {
        header.extend_from_slice(&target.to_ne_bytes());
    }
    let raw: Vec<RawFd> = fds.iter().map(|(fd, _)| fd.as_raw_fd()).collect();
    let rights = [ControlMessage::ScmRights(&raw)];
    let sent = sendmsg::<()>(
        channel.as_raw_fd(),
        &[IoSlice::new(&header)],
        &rights,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )?;
    // The descriptors went with the first byte; a short send leaves only bytes to write.
    channel.write_all(&header[sent..])?;
    channel.write_all(task)?;
    channel.shutdown(std::net::Shutdown::Write)
}

/// In the helper: receives the task from `channel`, installs its descriptors at their
/// numbers (without close-on-exec, like inherited ones), and returns the task's bytes.
pub(crate) fn receive_task(channel: OwnedFd) -> Result<Vec<u8>, StepError> {
    let mut channel = UnixStream::from(channel);
    let mut first = [0u8; 8];
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let (got, received) = {
        let mut iov = [IoSliceMut::new(&mut first)];
        let msg = recvmsg::<()>(
            channel.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(StepError::os("receive the task"))?;
        let mut received = Vec::new();
        for cmsg in msg.cmsgs().map_err(StepError::os("receive the task"))? {
            if let ControlMessageOwned::ScmRights(fds) = cmsg {
                received.extend(fds.into_iter().map(super::sys::own_received_fd));
            }
        }
        (msg.bytes, received)
    };
    if got == 0 {
        return Err(StepError::refused(
            "the runtime went away before handing over a task",
        ));
    }
    channel
        .read_exact(&mut first[got..])
        .map_err(StepError::os("read the task header"))?;
    let task_len = u32::from_ne_bytes(first[..4].try_into().expect("4 bytes")) as usize;
    let count = u32::from_ne_bytes(first[4..].try_into().expect("4 bytes")) as usize;
    if count != received.len() || count > MAX_FDS {
        return Err(StepError::refused(format!(
            "the task names {count} descriptors but {} came",
            received.len()
        )));
    }
    let mut targets = vec![0u8; 4 * count];
    channel
        .read_exact(&mut targets)
        .map_err(StepError::os("read the task header"))?;
    let targets: Vec<RawFd> = targets
        .chunks_exact(4)
        .map(|b| RawFd::from_ne_bytes(b.try_into().expect("4 bytes")))
        .collect();
    let mut task = vec![0u8; task_len];
    channel
        .read_exact(&mut task)
        .map_err(StepError::os("read the task"))?;
    // Closed before installing: its number may be one of the targets.
    drop(channel);
    install(received, &targets)?;
    Ok(task)
}

/// Puts each of `fds` at its number in `targets`: first all out of the way (a received
/// descriptor may sit on another's target), then each in place.
fn install(fds: Vec<OwnedFd>, targets: &[RawFd]) -> Result<(), StepError> {
    let mut high = Vec::with_capacity(fds.len());
    for fd in fds {
        high.push(
            rustix::io::fcntl_dupfd_cloexec(&fd, 1000)
                .map_err(StepError::os("move a descriptor"))?,
        );
    }
    for (fd, target) in high.iter().zip(targets) {
        super::sys::dup_onto(std::os::fd::AsFd::as_fd(fd), *target)
            .map_err(StepError::os(format!("install descriptor {target}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn a_task_and_its_descriptors_arrive_at_their_numbers() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let (pipe_read, pipe_write) = nix::unistd::pipe().unwrap();
        let task = vec![b'x'; 300_000];
        let sender = std::thread::spawn(move || send_task(ours, &task, &[(pipe_write, 900)]));
        let got = receive_task(OwnedFd::from(theirs)).unwrap();
        sender.join().unwrap().unwrap();
        assert_eq!(got.len(), 300_000);
        // Descriptor 900 is the pipe now: writing to it (reopened through /proc) reaches
        // the read end.
        std::fs::OpenOptions::new()
            .write(true)
            .open("/proc/self/fd/900")
            .unwrap()
            .write_all(b"ok")
            .unwrap();
        let mut buf = [0u8; 2];
        nix::unistd::read(pipe_read.as_fd(), &mut buf).unwrap();
        assert_eq!(&buf, b"ok");
    }

    #[test]
    fn a_runtime_that_goes_away_is_an_error_not_an_empty_task() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        drop(ours);
        let err = receive_task(OwnedFd::from(theirs)).unwrap_err();
        assert!(err.to_string().contains("went away"), "{err}");
    }
}

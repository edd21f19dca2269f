//! The broker protocol: length-prefixed JSON frames on a Unix stream socket.
//!
//! A frame is a 4-byte big-endian length followed by that many bytes of JSON. Both ends
//! set `SO_PASSCRED`, so the kernel attaches the sender's credentials (`SCM_CREDENTIALS`:
//! pid, uid, gid, checked by the kernel) to everything either side writes.
//!
//! The broker speaks first: a `hello` [`Reply`], whose credentials tell the client it is
//! root. The client then sends one [`Request`]; a `run` request carries, as `SCM_RIGHTS`
//! on its first bytes, four descriptors: the command's stdin, stdout, stderr and the
//! directory to start in. Then the client may send [`Control`] frames (signals) and the
//! broker answers: `started` then `exited`, or one `output`, or one `refused`.
//!
//! Nothing in a request says who the caller is: the broker takes that from the
//! credentials on the request's bytes. Unknown fields are ignored, so a request that
//! claims a uid changes nothing.

use std::{
    fmt, io,
    mem::MaybeUninit,
    os::fd::{AsFd, OwnedFd},
};

use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, recvmsg};

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use tokio::io::{AsyncRead, AsyncReadExt as _};

/// The largest frame either side accepts (argument lists and environments are bounded by
/// the kernel's `ARG_MAX`, 2 MiB by default).
pub(crate) const MAX_FRAME: usize = 4 << 20;

/// Descriptors a `run` request passes: stdin, stdout, stderr, working directory.
pub(crate) const RUN_FDS: usize = 4;

/// The protocol version the broker announces in its `hello`.
pub(crate) const PROTOCOL: u32 = 1;

/// Who wrote some bytes, as the kernel attests (`SCM_CREDENTIALS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sender {
    /// Process id (in the receiver's pid namespace).
    pub pid: i32,
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

/// What one `recvmsg` brought.
#[derive(Debug)]
pub(crate) struct Segment {
    /// Bytes read into the buffer (0 at end of stream).
    pub bytes: usize,
    /// Descriptors that came with them, close-on-exec.
    pub fds: Vec<OwnedFd>,
    /// Their writer; `None` when the kernel attached no credentials.
    pub sender: Option<Sender>,
    /// The kernel dropped descriptors that did not fit (`MSG_CTRUNC`).
    pub truncated: bool,
}

/// One `recvmsg` on a socket with `SO_PASSCRED` set. Descriptors arrive close-on-exec
/// (`MSG_CMSG_CLOEXEC`): no command envd starts may inherit another caller's terminal.
/// Linux never returns bytes of two writers with different credentials in one call.
pub(crate) fn recv_segment(socket: impl AsFd, buffer: &mut [u8]) -> io::Result<Segment> {
    let mut space =
        [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(RUN_FDS), ScmCredentials(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let message = recvmsg(
        socket,
        &mut [io::IoSliceMut::new(buffer)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut segment = Segment {
        bytes: message.bytes,
        fds: Vec::new(),
        sender: None,
        truncated: message.flags.contains(ReturnFlags::CTRUNC),
    };
    for ancillary in control.drain() {
        match ancillary {
            RecvAncillaryMessage::ScmRights(rights) => segment.fds.extend(rights),
            RecvAncillaryMessage::ScmCredentials(credentials) => {
                segment.sender = Some(Sender {
                    pid: credentials.pid.as_raw_nonzero().get(),
                    uid: credentials.uid.as_raw(),
                    gid: credentials.gid.as_raw(),
                });
            }
            _ => {}
        }
    }
    Ok(segment)
}

/// What the client asks for.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum Request {
    /// Run a command (`sudo [options] command`, `sudo -i`, `sudo -s`).
    Run(Run),
    /// `sudo -l [command]`: what may the caller run.
    List {
        /// With a command: is this one allowed (answered with its full path).
        #[serde(default)]
        command: Vec<String>,
    },
    /// `sudo -v`: may the caller use sudo at all.
    Validate,
}

/// How the command is started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ShellMode {
    /// The command itself.
    #[default]
    None,
    /// `-s`: the caller's shell, with `-c command` when there is one.
    Shell,
    /// `-i`: the target's login shell, in the target's home.
    Login,
}

/// Which of the caller's environment variables the command keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum PreserveEnv {
    /// sudo's `env_reset`: a small safe set.
    #[default]
    Reset,
    /// `-E`: everything but sudo's `env_delete` list.
    All,
    /// `--preserve-env=A,B`: the safe set plus these.
    Names(Vec<String>),
}

/// A `run` request. `Debug` shows variable names, never their values (they may be
/// tokens).
#[derive(Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct Run {
    /// `-u`: a user name or `#uid`; root when absent.
    pub user: Option<String>,
    /// `-s` / `-i`.
    pub shell: ShellMode,
    /// `-E` / `--preserve-env`.
    pub preserve_env: PreserveEnv,
    /// `-H`: `HOME` of the target even with `-E`.
    pub set_home: bool,
    /// `VAR=value` arguments before the command.
    pub assignments: Vec<(String, String)>,
    /// The command and its arguments (may be empty with `-s` / `-i`).
    pub command: Vec<String>,
    /// The caller's environment, filtered by the broker.
    pub env: Vec<(String, String)>,
}

impl fmt::Debug for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = |vars: &[(String, String)]| -> Vec<String> {
            vars.iter().map(|(name, _)| name.clone()).collect()
        };
        f.debug_struct("Run")
            .field("user", &self.user)
            .field("shell", &self.shell)
            .field("preserve_env", &self.preserve_env)
            .field("set_home", &self.set_home)
            .field("assignments", &names(&self.assignments))
            .field("program", &self.command.first())
            .field("arguments", &self.command.len().saturating_sub(1))
            .field("env", &names(&self.env))
            .finish()
    }
}

/// What the client sends while its command runs.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum Control {
    /// Deliver this signal to the command's process group.
    Signal {
        /// The signal number.
        signal: i32,
    },
}

/// What the broker answers.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum Reply {
    /// The broker's first frame: its credentials prove who listens.
    Hello {
        /// Protocol version ([`PROTOCOL`]).
        protocol: u32,
    },
    /// The command runs, as this process (and process group).
    Started {
        /// Its pid.
        pid: u32,
    },
    /// The command ended: its exit code, or 128 + the signal that killed it.
    Exited {
        /// The code the client exits with.
        code: i32,
    },
    /// `-l` / `-v`: text for the client's stdout and the code to exit with.
    Output {
        /// Printed as is.
        text: String,
        /// Exit code.
        code: i32,
    },
    /// Nothing runs; the message says why (printed after `sudo: `, exit 1).
    Refused {
        /// Why.
        message: String,
    },
}

/// A malformed frame.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    /// The length prefix exceeds [`MAX_FRAME`].
    #[error("frame of {0} bytes is larger than the limit of {MAX_FRAME}")]
    TooLarge(usize),
    /// The JSON does not match the message type.
    #[error("malformed message: {0}")]
    Json(#[from] serde_json::Error),
}

/// `message` as a frame.
pub(crate) fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    // Serializing these plain structs cannot fail (string keys, no maps of other keys).
    let json = serde_json::to_vec(message).unwrap_or_default();
    let length = u32::try_from(json.len()).unwrap_or(u32::MAX);
    let mut frame = Vec::with_capacity(4 + json.len());
    frame.extend_from_slice(&length.to_be_bytes());
    frame.extend_from_slice(&json);
    frame
}

/// Parses one frame's payload.
pub(crate) fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, FrameError> {
    Ok(serde_json::from_slice(payload)?)
}

/// Splits a byte stream into frames; what it has read past a frame stays for the next.
#[derive(Debug, Default)]
pub(crate) struct FrameReader {
    buffer: Vec<u8>,
}

impl FrameReader {
    /// Adds bytes read from the stream.
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next complete frame's payload, if the buffer holds one.
    pub(crate) fn take(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        let Some(prefix) = self.buffer.first_chunk::<4>() else {
            return Ok(None);
        };
        let length = u32::from_be_bytes(*prefix) as usize;
        if length > MAX_FRAME {
            return Err(FrameError::TooLarge(length));
        }
        if self.buffer.len() < 4 + length {
            return Ok(None);
        }
        let payload = self.buffer[4..4 + length].to_vec();
        self.buffer.drain(..4 + length);
        Ok(Some(payload))
    }

    /// Reads until a frame is complete; `None` at a clean end of stream. Cancel-safe: bytes
    /// read before a cancellation stay in the buffer.
    pub(crate) async fn next<R: AsyncRead + Unpin>(
        &mut self,
        stream: &mut R,
    ) -> std::io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(frame) = self.take().map_err(std::io::Error::other)? {
                return Ok(Some(frame));
            }
            let mut chunk = [0u8; 8192];
            let read = stream.read(&mut chunk).await?;
            if read == 0 {
                return if self.buffer.is_empty() {
                    Ok(None)
                } else {
                    Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the connection ended inside a frame",
                    ))
                };
            }
            self.push(&chunk[..read]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_and_join_at_any_boundary() {
        let mut bytes = encode(&Reply::Started { pid: 7 });
        bytes.extend(encode(&Reply::Exited { code: 3 }));
        for cut in 0..bytes.len() {
            let mut reader = FrameReader::default();
            let mut frames = Vec::new();
            for part in [&bytes[..cut], &bytes[cut..]] {
                reader.push(part);
                while let Some(frame) = reader.take().unwrap() {
                    frames.push(decode::<Reply>(&frame).unwrap());
                }
            }
            assert!(matches!(
                frames.as_slice(),
                [Reply::Started { pid: 7 }, Reply::Exited { code: 3 }]
            ));
        }
    }

    #[test]
    fn an_oversized_length_is_refused_before_buffering() {
        // A caller must not make the broker (root) allocate what it announces.
        let mut reader = FrameReader::default();
        reader.push(&u32::MAX.to_be_bytes());
        assert!(matches!(reader.take(), Err(FrameError::TooLarge(_))));
    }

    #[test]
    fn debug_of_a_run_request_hides_values() {
        let run = Run {
            command: vec!["curl".into(), "-H".into(), "Authorization: hunter2".into()],
            env: vec![("API_TOKEN".into(), "sk-secret".into())],
            assignments: vec![("PASSWORD".into(), "hunter2".into())],
            ..Run::default()
        };
        let debug = format!("{run:?}");
        assert!(
            debug.contains("API_TOKEN") && debug.contains("curl"),
            "{debug}"
        );
        assert!(
            !debug.contains("sk-secret") && !debug.contains("hunter2"),
            "{debug}"
        );
    }

    #[test]
    fn a_short_hand_written_request_parses_with_defaults() {
        let request: Request =
            decode(br#"{"type":"run","command":["id","-u"],"uid":0,"user_name":"root"}"#).unwrap();
        let Request::Run(run) = request else {
            panic!("not a run request")
        };
        assert_eq!(run.command, ["id", "-u"]);
        assert_eq!(run.preserve_env, PreserveEnv::Reset);
        assert_eq!(run.user, None);
    }
}

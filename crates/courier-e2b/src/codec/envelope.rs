use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Flag bit: the payload is compressed (never sent by envd or the SDKs; rejected here).
pub const COMPRESSED_FLAG: u8 = 0x01;
/// Flag bit: this envelope is the end-of-stream trailer.
pub const END_STREAM_FLAG: u8 = 0x02;
/// The largest envelope payload accepted unless configured otherwise (16 MiB).
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 16 << 20;

const HEADER_LEN: usize = 5;

/// One Connect stream envelope: a flag byte, a 4-byte big-endian length and the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The flag byte ([`END_STREAM_FLAG`], [`COMPRESSED_FLAG`]).
    pub flags: u8,
    /// The encoded message or trailer.
    pub payload: Bytes,
}

impl Envelope {
    /// An envelope carrying one message.
    pub fn message(payload: Bytes) -> Envelope {
        Envelope { flags: 0, payload }
    }

    /// The end-of-stream envelope carrying a (JSON) trailer.
    pub fn end_stream(payload: Bytes) -> Envelope {
        Envelope {
            flags: END_STREAM_FLAG,
            payload,
        }
    }

    /// Whether this is the end-of-stream trailer.
    pub fn is_end_stream(&self) -> bool {
        self.flags & END_STREAM_FLAG != 0
    }

    /// Appends the wire form to `out`.
    pub fn write_to(&self, out: &mut BytesMut) {
        out.reserve(HEADER_LEN + self.payload.len());
        out.put_u8(self.flags);
        // Payloads are bounded far below 4 GiB by every producer in this crate.
        out.put_u32(u32::try_from(self.payload.len()).unwrap_or(u32::MAX));
        out.put_slice(&self.payload);
    }

    /// The wire form.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(HEADER_LEN + self.payload.len());
        self.write_to(&mut out);
        out.freeze()
    }
}

/// Why a stream of envelopes could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// An envelope announced a payload above the configured limit.
    #[error("envelope of {len} bytes exceeds the {max}-byte message limit")]
    Oversized {
        /// The announced payload length.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// The stream ended in the middle of an envelope.
    #[error("stream truncated: {buffered} bytes of an incomplete envelope left at the end")]
    Truncated {
        /// How many bytes of the partial envelope arrived.
        buffered: usize,
    },
    /// The stream ended without the end-of-stream envelope.
    #[error("stream ended without an end-of-stream envelope")]
    MissingEndOfStream,
    /// The compressed flag was set; no compression was negotiated.
    #[error("envelope is marked compressed but no compression was negotiated")]
    Compressed,
    /// Data followed the end-of-stream envelope.
    #[error("data after the end-of-stream envelope")]
    TrailingData,
}

/// Incremental envelope decoder: push bytes as they arrive (split anywhere), pull whole
/// envelopes out.
///
/// ```
/// use courier_e2b::codec::{Envelope, EnvelopeDecoder};
/// let bytes = Envelope::message("hi".into()).to_bytes();
/// let mut decoder = EnvelopeDecoder::new(1024);
/// decoder.push(&bytes[..3]);
/// assert!(decoder.next_envelope().unwrap().is_none());
/// decoder.push(&bytes[3..]);
/// assert_eq!(&decoder.next_envelope().unwrap().unwrap().payload[..], b"hi");
/// ```
#[derive(Debug)]
pub struct EnvelopeDecoder {
    buffer: BytesMut,
    max_message_size: usize,
    ended: bool,
}

impl EnvelopeDecoder {
    /// A decoder that rejects payloads above `max_message_size` bytes.
    pub fn new(max_message_size: usize) -> EnvelopeDecoder {
        EnvelopeDecoder {
            buffer: BytesMut::new(),
            max_message_size,
            ended: false,
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next whole envelope, `Ok(None)` when more bytes are needed.
    pub fn next_envelope(&mut self) -> Result<Option<Envelope>, FrameError> {
        if self.buffer.len() < HEADER_LEN {
            if self.ended && !self.buffer.is_empty() {
                return Err(FrameError::TrailingData);
            }
            return Ok(None);
        }
        if self.ended {
            return Err(FrameError::TrailingData);
        }
        let flags = self.buffer[0];
        let len = u32::from_be_bytes([
            self.buffer[1],
            self.buffer[2],
            self.buffer[3],
            self.buffer[4],
        ]) as usize;
        if len > self.max_message_size {
            return Err(FrameError::Oversized {
                len,
                max: self.max_message_size,
            });
        }
        if flags & COMPRESSED_FLAG != 0 {
            return Err(FrameError::Compressed);
        }
        if self.buffer.len() < HEADER_LEN + len {
            self.buffer.reserve(HEADER_LEN + len - self.buffer.len());
            return Ok(None);
        }
        self.buffer.advance(HEADER_LEN);
        let payload = self.buffer.split_to(len).freeze();
        let envelope = Envelope { flags, payload };
        if envelope.is_end_stream() {
            self.ended = true;
        }
        Ok(Some(envelope))
    }

    /// Whether the end-of-stream envelope has been read.
    pub fn saw_end_stream(&self) -> bool {
        self.ended
    }

    /// Call when the byte stream ends: errors if it stopped mid-envelope or before the
    /// end-of-stream envelope (when `require_end_stream`).
    pub fn finish(&self, require_end_stream: bool) -> Result<(), FrameError> {
        if !self.buffer.is_empty() {
            return Err(FrameError::Truncated {
                buffered: self.buffer.len(),
            });
        }
        if require_end_stream && !self.ended {
            return Err(FrameError::MissingEndOfStream);
        }
        Ok(())
    }
}

//! A minimal HTTP/1.1 client over `std::net::TcpStream`: JSON requests to loopback
//! servers and one server-sent-event stream per thread. xtask stays free of an async
//! runtime and an HTTP crate; every server here is on 127.0.0.1 and speaks plain HTTP.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// An answer: its status and its whole body.
#[derive(Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The body, decoded from chunked transfer encoding when it was sent so.
    pub body: String,
}

impl Response {
    /// The body as JSON, failing (with `what` and the status) unless the status is 2xx.
    pub fn json(self, what: &str) -> Result<serde_json::Value> {
        if !(200..300).contains(&self.status) {
            bail!("{what}: HTTP {}: {}", self.status, self.body.trim());
        }
        serde_json::from_str(&self.body).with_context(|| format!("{what}: the answer is not JSON"))
    }
}

/// `http://HOST:PORT/path` → (`HOST:PORT`, `/path`).
fn split_url(url: &str) -> Result<(&str, &str)> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("{url}: only http:// URLs are used here"))?;
    Ok(match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    })
}

/// Sends one request (`Connection: close`) and returns the stream positioned after the
/// head, with the status and whether the body is chunked.
fn send(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
    read_timeout: Duration,
) -> Result<(u16, bool, Option<usize>, BufReader<TcpStream>)> {
    let (authority, path) = split_url(url)?;
    let mut stream =
        TcpStream::connect(authority).with_context(|| format!("connecting to {authority}"))?;
    stream.set_read_timeout(Some(read_timeout))?;
    stream.set_nodelay(true)?;
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(body) = body {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    if let Some(body) = body {
        stream.write_all(body.as_bytes())?;
    }
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("{method} {url}: no HTTP status line in {line:?}"))?;
    let (mut chunked, mut length) = (false, None);
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            bail!("{method} {url}: the connection closed inside the answer's head");
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("transfer-encoding") && value.contains("chunked") {
                chunked = true;
            } else if name.eq_ignore_ascii_case("content-length") {
                length = value.parse().ok();
            }
        }
    }
    Ok((status, chunked, length, reader))
}

/// One request with an optional JSON body; the whole answer.
pub fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Result<Response> {
    let (status, chunked, length, reader) =
        send(method, url, headers, body, Duration::from_secs(120))?;
    let mut bytes = Vec::new();
    let mut body_reader: Box<dyn Read> = if chunked {
        Box::new(Chunked::new(reader))
    } else if let Some(length) = length {
        Box::new(reader.take(length as u64))
    } else {
        Box::new(reader)
    };
    body_reader
        .read_to_end(&mut bytes)
        .with_context(|| format!("{method} {url}: reading the answer"))?;
    Ok(Response {
        status,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    })
}

/// One server-sent event as received: its name, its `id:` if it had one, its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// `event:` (`message` when absent, as the SSE spec says).
    pub name: String,
    /// `id:`, when the event carried one.
    pub id: Option<String>,
    /// The `data:` lines joined by `\n`.
    pub data: String,
}

/// Opens `GET url` as an event stream and hands each event to `on_event` until it
/// returns `false` or the server ends the stream. Returns an error for a refused stream,
/// a broken connection, or a stream still open at `deadline`.
pub fn sse(
    url: &str,
    headers: &[(&str, &str)],
    deadline: Instant,
    mut on_event: impl FnMut(SseEvent) -> bool,
) -> Result<()> {
    let mut all = vec![("Accept", "text/event-stream")];
    all.extend_from_slice(headers);
    // Reads wake up this often to look at the deadline; a partial line is kept.
    let poll = Duration::from_secs(1);
    let (status, chunked, _, reader) = send("GET", url, &all, None, poll)?;
    if status != 200 {
        let mut rest = String::new();
        let _ = reader.take(4096).read_to_string(&mut rest);
        bail!("GET {url}: HTTP {status}: {}", rest.trim());
    }
    let mut lines: Box<dyn BufRead> = if chunked {
        Box::new(BufReader::new(Chunked::new(reader)))
    } else {
        Box::new(reader)
    };
    let mut parser = SseParser::default();
    let mut line = String::new();
    loop {
        match lines.read_line(&mut line) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if Instant::now() > deadline {
                    bail!("GET {url}: the stream was still open at the deadline");
                }
                continue;
            }
            Err(e) => {
                return Err(e).with_context(|| format!("GET {url}: reading the event stream"));
            }
        }
        if !line.ends_with('\n') {
            continue; // the rest of the line comes with the next read
        }
        let event = parser.line(&line);
        line.clear();
        if let Some(event) = event
            && !on_event(event)
        {
            return Ok(());
        }
    }
}

/// The SSE line protocol: `field: value` lines, a blank line ends an event, `:` lines
/// are comments (keep-alives).
#[derive(Debug, Default)]
pub struct SseParser {
    name: Option<String>,
    id: Option<String>,
    data: Option<String>,
}

impl SseParser {
    /// Feeds one line (with or without its line break); an event when it completes one.
    pub fn line(&mut self, line: &str) -> Option<SseEvent> {
        let line = line.strip_suffix('\n').unwrap_or(line);
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            let data = self.data.take();
            let (name, id) = (self.name.take(), self.id.take());
            return data.map(|data| SseEvent {
                name: name.unwrap_or_else(|| "message".into()),
                id,
                data,
            });
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => self.name = Some(value.to_owned()),
            "id" => self.id = Some(value.to_owned()),
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            _ => {}
        }
        None
    }
}

/// A reader of a chunked body (RFC 9112 §7.1): yields the chunks' bytes, ends at the
/// last chunk.
/// A read timeout (the caller's poll) may interrupt it anywhere: a partly read size line
/// is kept for the next call.
struct Chunked<R> {
    inner: R,
    left: usize,
    done: bool,
    size: String,
    /// The CRLF after a chunk's data is still to be read.
    trailer: bool,
}

impl<R: BufRead> Chunked<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            left: 0,
            done: false,
            size: String::new(),
            trailer: false,
        }
    }
}

impl<R: BufRead> Read for Chunked<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::io::Error;
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        if self.trailer {
            let mut crlf = String::new();
            self.inner.read_line(&mut crlf)?;
            self.trailer = false;
        }
        if self.left == 0 {
            if self.inner.read_line(&mut self.size)? == 0 {
                return Err(Error::new(
                    ErrorKind::UnexpectedEof,
                    "the connection closed inside a chunked body",
                ));
            }
            if !self.size.ends_with('\n') {
                return Err(Error::new(
                    ErrorKind::WouldBlock,
                    "a chunk size line in parts",
                ));
            }
            let size = std::mem::take(&mut self.size);
            let hex = size.trim().split(';').next().unwrap_or("");
            self.left = usize::from_str_radix(hex, 16).map_err(|_| {
                Error::new(ErrorKind::InvalidData, format!("bad chunk size {size:?}"))
            })?;
            if self.left == 0 {
                self.done = true;
                return Ok(0);
            }
        }
        let want = buf.len().min(self.left);
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(Error::new(
                ErrorKind::UnexpectedEof,
                "the connection closed inside a chunk",
            ));
        }
        self.left -= n;
        // The CRLF after the data is read at the next call: a timeout there must not
        // lose the bytes already given.
        self.trailer = self.left == 0;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_parser_joins_fields_until_a_blank_line_and_skips_comments() {
        let mut p = SseParser::default();
        let text = ": keep-alive\n\nevent: text\nid: 3\ndata: {\"a\":1}\n\ndata: x\ndata: y\n\n";
        let events: Vec<SseEvent> = text
            .split_inclusive('\n')
            .filter_map(|l| p.line(l))
            .collect();
        assert_eq!(
            events,
            vec![
                SseEvent {
                    name: "text".into(),
                    id: Some("3".into()),
                    data: "{\"a\":1}".into()
                },
                SseEvent {
                    name: "message".into(),
                    id: None,
                    data: "x\ny".into()
                },
            ]
        );
    }

    #[test]
    fn chunked_bodies_are_decoded_and_a_cut_one_is_an_error() {
        let mut out = String::new();
        Chunked::new(&b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\n"[..])
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, "hello, world");
        let mut cut = String::new();
        let err = Chunked::new(&b"5\r\nhel"[..])
            .read_to_string(&mut cut)
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
    }
}

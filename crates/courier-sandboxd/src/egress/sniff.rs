//! Which name the first bytes of a connection carry: the server name (SNI) of a TLS
//! ClientHello, or the `Host` of an HTTP/1 request. Pure and bounded: the caller feeds
//! what it has read so far and stops at [`MAX_SNIFF`] bytes.

/// Most bytes read before giving up on finding a name.
pub(crate) const MAX_SNIFF: usize = 16 * 1024;

/// What the bytes so far say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Sniff {
    /// Not enough bytes yet.
    NeedMore,
    /// The name the client asked for (lowercase, no port, no trailing dot).
    Name(String),
    /// No usable name: why.
    NoName(&'static str),
}

/// Sniffs `buf`: TLS when it starts with a handshake record, HTTP/1 otherwise.
pub(crate) fn sniff(buf: &[u8]) -> Sniff {
    match buf.first() {
        None => Sniff::NeedMore,
        Some(0x16) => tls_server_name(buf),
        Some(_) => http_host(buf),
    }
}

fn normalize(name: &str) -> Option<String> {
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    ok.then_some(name)
}

/// A cursor over a byte slice; every read is bounds-checked.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.buf.len() < n {
            return None;
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| usize::from(b[0]))
    }

    fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    }

    /// A block prefixed by its length (`len_bytes` of 1 or 2).
    fn block(&mut self, len_bytes: u8) -> Option<&'a [u8]> {
        let len = if len_bytes == 1 {
            self.u8()?
        } else {
            self.u16()?
        };
        self.take(len)
    }
}

/// The SNI of a TLS ClientHello, which may span several handshake records.
fn tls_server_name(buf: &[u8]) -> Sniff {
    // Gather the handshake bytes of consecutive records.
    let mut handshake = Vec::new();
    let mut records = Reader { buf };
    let hello_len = loop {
        if handshake.len() >= 4 {
            let len = (usize::from(handshake[1]) << 16)
                | (usize::from(handshake[2]) << 8)
                | usize::from(handshake[3]);
            if handshake.len() >= 4 + len {
                break len;
            }
        }
        let Some(header) = records.take(5) else {
            return Sniff::NeedMore;
        };
        if header[0] != 0x16 {
            return Sniff::NoName(
                "TLS record that is not a handshake before the ClientHello ended",
            );
        }
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        let Some(body) = records.take(len) else {
            return Sniff::NeedMore;
        };
        handshake.extend_from_slice(body);
    };
    if handshake[0] != 1 {
        return Sniff::NoName("first TLS handshake message is not a ClientHello");
    }
    let mut hello = Reader {
        buf: &handshake[4..4 + hello_len],
    };
    let parsed = (|| {
        hello.take(2 + 32)?; // version, random
        hello.block(1)?; // session id
        hello.block(2)?; // cipher suites
        hello.block(1)?; // compression methods
        let mut extensions = Reader {
            buf: hello.block(2)?,
        };
        while !extensions.buf.is_empty() {
            let kind = extensions.u16()?;
            let data = extensions.block(2)?;
            if kind != 0 {
                continue;
            }
            let mut list = Reader {
                buf: Reader { buf: data }.block(2)?,
            };
            while !list.buf.is_empty() {
                let name_type = list.u8()?;
                let name = list.block(2)?;
                if name_type == 0 {
                    return Some(Some(name));
                }
            }
        }
        Some(None)
    })();
    match parsed {
        None => Sniff::NoName("malformed TLS ClientHello"),
        Some(None) => Sniff::NoName("TLS ClientHello without a server name (SNI)"),
        Some(Some(name)) => match std::str::from_utf8(name).ok().and_then(normalize) {
            Some(name) => Sniff::Name(name),
            None => Sniff::NoName("TLS server name is not a valid host name"),
        },
    }
}

/// The `Host` of an HTTP/1 request head.
fn http_host(buf: &[u8]) -> Sniff {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() >= MAX_SNIFF {
            Sniff::NoName("HTTP request head too large")
        } else {
            Sniff::NeedMore
        };
    };
    let Ok(head) = std::str::from_utf8(&buf[..end]) else {
        return Sniff::NoName("HTTP request head is not text");
    };
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or("");
    let mut parts = request_line.split(' ');
    let (Some(_method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Sniff::NoName("not an HTTP request");
    };
    if !version.starts_with("HTTP/1.") || parts.next().is_some() {
        return Sniff::NoName("not an HTTP/1 request");
    }
    let mut host = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Sniff::NoName("malformed HTTP header line");
        };
        if name.eq_ignore_ascii_case("host") {
            if host.is_some() {
                return Sniff::NoName("more than one Host header");
            }
            host = Some(value.trim());
        }
    }
    let Some(host) = host.and_then(|h| normalize(strip_port(h))) else {
        return Sniff::NoName("HTTP request without a valid Host header");
    };
    // An absolute-form target names the host too; servers prefer it to Host.
    let authority = target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))
        .map(|rest| rest.split(['/', '?', '#']).next().unwrap_or(""));
    if let Some(authority) = authority {
        let authority = authority.rsplit('@').next().unwrap_or("");
        if normalize(strip_port(authority)).as_deref() != Some(host.as_str()) {
            return Sniff::NoName("request target names another host than Host");
        }
    }
    Sniff::Name(host)
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // An IPv6 literal: never a domain; left as is so that it matches no rule.
        return host;
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello as rustls/curl send it (built by hand: record, handshake, SNI).
    fn client_hello(sni: Option<&str>, record_split: Option<usize>) -> Vec<u8> {
        let mut ext = Vec::new();
        // An unrelated extension first (supported_groups).
        ext.extend_from_slice(&[0x00, 0x0a, 0x00, 0x04, 0x00, 0x02, 0x00, 0x1d]);
        if let Some(name) = sni {
            let n = name.len() as u16;
            ext.extend_from_slice(&[0x00, 0x00]);
            ext.extend_from_slice(&(n + 5).to_be_bytes());
            ext.extend_from_slice(&(n + 3).to_be_bytes());
            ext.push(0);
            ext.extend_from_slice(&n.to_be_bytes());
            ext.extend_from_slice(name.as_bytes());
        }
        let mut body = vec![0x03, 0x03];
        body.extend_from_slice(&[7u8; 32]);
        body.push(32);
        body.extend_from_slice(&[9u8; 32]);
        body.extend_from_slice(&[0x00, 0x02, 0x13, 0x01]);
        body.extend_from_slice(&[0x01, 0x00]);
        body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
        body.extend_from_slice(&ext);
        let mut hs = vec![0x01];
        hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        hs.extend_from_slice(&body);
        let record = |payload: &[u8]| {
            let mut r = vec![0x16, 0x03, 0x01];
            r.extend_from_slice(&(payload.len() as u16).to_be_bytes());
            r.extend_from_slice(payload);
            r
        };
        match record_split {
            None => record(&hs),
            Some(at) => [record(&hs[..at]), record(&hs[at..])].concat(),
        }
    }

    #[test]
    fn finds_the_tls_server_name_even_across_records_and_partial_reads() {
        let hello = client_hello(Some("API.Example.com"), None);
        assert_eq!(sniff(&hello), Sniff::Name("api.example.com".into()));
        for cut in [1, 5, 20, hello.len() - 1] {
            assert_eq!(sniff(&hello[..cut]), Sniff::NeedMore, "{cut}");
        }
        let split = client_hello(Some("allowed.test"), Some(10));
        assert_eq!(sniff(&split), Sniff::Name("allowed.test".into()));
        assert_eq!(sniff(&split[..split.len() - 3]), Sniff::NeedMore);
    }

    #[test]
    fn tls_without_a_usable_name_is_refused() {
        assert!(matches!(sniff(&client_hello(None, None)), Sniff::NoName(_)));
        assert!(matches!(
            sniff(&client_hello(Some("bad name!"), None)),
            Sniff::NoName(_)
        ));
        // Truncated inside the hello (lengths that lie) never panics.
        let mut hello = client_hello(Some("a.test"), None);
        hello[5 + 4 + 2 + 32] = 0xff; // session id length beyond the message
        assert!(matches!(sniff(&hello), Sniff::NoName(_)));
        let not_hello = [0x16, 0x03, 0x01, 0x00, 0x04, 0x02, 0x00, 0x00, 0x00];
        assert!(matches!(sniff(&not_hello), Sniff::NoName(_)));
    }

    #[test]
    fn finds_the_http_host_without_port() {
        let req = b"GET / HTTP/1.1\r\nUser-Agent: curl\r\nHost: Allowed.Test:80\r\n\r\n";
        assert_eq!(sniff(req), Sniff::Name("allowed.test".into()));
        assert_eq!(sniff(&req[..20]), Sniff::NeedMore);
        let abs = b"GET http://allowed.test/x HTTP/1.1\r\nhost: allowed.test\r\n\r\n";
        assert_eq!(sniff(abs), Sniff::Name("allowed.test".into()));
    }

    #[test]
    fn http_that_could_name_another_host_is_refused() {
        for req in [
            &b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n",
            b"GET http://other.test/ HTTP/1.1\r\nHost: allowed.test\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: \r\n\r\n",
        ] {
            assert!(
                matches!(sniff(req), Sniff::NoName(_)),
                "{}",
                String::from_utf8_lossy(req)
            );
        }
        let endless = vec![b'a'; MAX_SNIFF];
        assert!(matches!(sniff(&endless), Sniff::NoName(_)));
    }
}

//! Tokens counted from the provider's own answers, streamed or not.
//!
//! The gateway reads the usage each API reports, whatever the CLI prints:
//!
//! - Anthropic Messages: `message_start.message.usage` (input and cache tokens) and the
//!   last `message_delta.usage.output_tokens` (cumulative); a plain answer's `usage`;
//! - OpenAI Responses: `response.completed` (`response.usage`); a plain answer's `usage`;
//! - chat completions: the chunk carrying `usage` (the gateway asks for it with
//!   `stream_options.include_usage`); a plain answer's `usage`.

use serde_json::Value;

/// Tokens one answer used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenUsage {
    /// Input tokens billed at the full rate.
    pub input: u64,
    /// Output tokens.
    pub output: u64,
    /// Input tokens read from the provider's cache.
    pub cache_read: u64,
    /// Input tokens written to the provider's cache.
    pub cache_write: u64,
}

impl TokenUsage {
    /// Every token counted, for budgets.
    pub fn total(&self) -> u64 {
        self.input + self.output + self.cache_read + self.cache_write
    }
}

/// Which API an answer speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// Anthropic Messages.
    Anthropic,
    /// OpenAI Responses.
    Responses,
    /// Chat completions.
    Chat,
}

impl Api {
    /// The API a request path speaks, if it is one the gateway meters.
    pub fn of_path(path: &str) -> Option<Api> {
        let path = path.trim_end_matches('/');
        if path.ends_with("/messages") {
            Some(Api::Anthropic)
        } else if path.ends_with("/responses") {
            Some(Api::Responses)
        } else if path.ends_with("/chat/completions") {
            Some(Api::Chat)
        } else {
            None
        }
    }
}

fn number(value: &Value, key: &str) -> u64 {
    value.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// Reads usage off an answer's bytes as they pass, without holding the answer back.
#[derive(Debug)]
pub struct UsageTap {
    api: Api,
    /// An SSE answer is read line by line; a JSON one is kept (up to a bound) and parsed
    /// at its end.
    sse: bool,
    pending: Vec<u8>,
    usage: Option<TokenUsage>,
    overflowed: bool,
}

/// The most of a plain (non-streamed) answer kept to read its usage.
const MAX_JSON_ANSWER: usize = 16 << 20;
/// The longest SSE line kept; longer lines (a huge text delta) carry no usage.
const MAX_LINE: usize = 4 << 20;

impl UsageTap {
    /// A tap for an answer of `api` whose `Content-Type` is `content_type`.
    pub fn new(api: Api, content_type: &str) -> Self {
        UsageTap {
            api,
            sse: content_type.starts_with("text/event-stream"),
            pending: Vec::new(),
            usage: None,
            overflowed: false,
        }
    }

    /// Feeds the next bytes of the answer.
    pub fn feed(&mut self, bytes: &[u8]) {
        if !self.sse {
            if self.pending.len() + bytes.len() > MAX_JSON_ANSWER {
                self.overflowed = true;
                self.pending = Vec::new();
            } else if !self.overflowed {
                self.pending.extend_from_slice(bytes);
            }
            return;
        }
        let mut rest = bytes;
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            let (head, tail) = rest.split_at(end);
            if !self.overflowed {
                self.pending.extend_from_slice(head);
                let line = std::mem::take(&mut self.pending);
                self.line(&line);
            }
            self.overflowed = false;
            self.pending.clear();
            rest = &tail[1..];
        }
        if self.pending.len() + rest.len() > MAX_LINE {
            self.overflowed = true;
            self.pending.clear();
        } else if !self.overflowed {
            self.pending.extend_from_slice(rest);
        }
    }

    fn line(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(data) = line.strip_prefix(b"data:") else {
            return;
        };
        let Ok(event) = serde_json::from_slice::<Value>(data) else {
            return;
        };
        self.event(&event);
    }

    fn event(&mut self, event: &Value) {
        match self.api {
            Api::Anthropic => match event.get("type").and_then(Value::as_str) {
                Some("message_start") => {
                    if let Some(usage) = event.pointer("/message/usage") {
                        let mut u = anthropic(usage);
                        // Output so far; the deltas' cumulative figure replaces it.
                        u.output = number(usage, "output_tokens");
                        self.usage = Some(u);
                    }
                }
                Some("message_delta") => {
                    if let Some(usage) = event.get("usage") {
                        let u = self.usage.get_or_insert_with(TokenUsage::default);
                        u.output = number(usage, "output_tokens").max(u.output);
                        // Newer APIs repeat the input figures on the delta.
                        if usage.get("input_tokens").is_some() {
                            let again = anthropic(usage);
                            u.input = u.input.max(again.input);
                            u.cache_read = u.cache_read.max(again.cache_read);
                            u.cache_write = u.cache_write.max(again.cache_write);
                        }
                    }
                }
                _ => {}
            },
            Api::Responses => {
                let kind = event.get("type").and_then(Value::as_str);
                if matches!(kind, Some("response.completed" | "response.incomplete"))
                    && let Some(usage) = event.pointer("/response/usage")
                {
                    self.usage = Some(responses(usage));
                }
            }
            Api::Chat => {
                if let Some(usage) = event.get("usage").filter(|u| u.is_object()) {
                    self.usage = Some(chat(usage));
                }
            }
        }
    }

    /// The answer's usage, once it has ended; `None` when it reported none.
    pub fn finish(mut self) -> Option<TokenUsage> {
        if self.sse {
            if !self.pending.is_empty() && !self.overflowed {
                let line = std::mem::take(&mut self.pending);
                self.line(&line);
            }
            return self.usage;
        }
        if self.overflowed {
            return None;
        }
        let body: Value = serde_json::from_slice(&self.pending).ok()?;
        let usage = body.get("usage")?;
        Some(match self.api {
            Api::Anthropic => anthropic(usage),
            Api::Responses => responses(usage),
            Api::Chat => chat(usage),
        })
    }
}

fn anthropic(usage: &Value) -> TokenUsage {
    TokenUsage {
        input: number(usage, "input_tokens"),
        output: number(usage, "output_tokens"),
        cache_read: number(usage, "cache_read_input_tokens"),
        cache_write: number(usage, "cache_creation_input_tokens"),
    }
}

/// OpenAI counts cached tokens inside `input_tokens`; they are split out here.
fn responses(usage: &Value) -> TokenUsage {
    let input = number(usage, "input_tokens");
    let cached = usage
        .pointer("/input_tokens_details/cached_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(0)
        .min(input);
    TokenUsage {
        input: input - cached,
        output: number(usage, "output_tokens"),
        cache_read: cached,
        cache_write: 0,
    }
}

fn chat(usage: &Value) -> TokenUsage {
    let input = number(usage, "prompt_tokens");
    let cached = usage
        .pointer("/prompt_tokens_details/cached_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(0)
        .min(input);
    TokenUsage {
        input: input - cached,
        output: number(usage, "completion_tokens"),
        cache_read: cached,
        cache_write: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tap(api: Api, sse: &str, chunk: usize) -> Option<TokenUsage> {
        let mut tap = UsageTap::new(api, "text/event-stream; charset=utf-8");
        for piece in sse.as_bytes().chunks(chunk) {
            tap.feed(piece);
        }
        tap.finish()
    }

    #[test]
    fn anthropic_streams_count_input_at_start_and_the_last_output() {
        let sse = "event: message_start\r\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":120,\"cache_read_input_tokens\":30,\"cache_creation_input_tokens\":5,\"output_tokens\":1}}}\r\n\r\n\
                   event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"hi\"}}\n\n\
                   event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":7}}\n\n\
                   event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":42}}\n\n";
        let want = TokenUsage {
            input: 120,
            output: 42,
            cache_read: 30,
            cache_write: 5,
        };
        // However the bytes are cut.
        for chunk in [1, 3, 17, 4096] {
            assert_eq!(tap(Api::Anthropic, sse, chunk), Some(want), "chunk {chunk}");
        }
        assert_eq!(want.total(), 197);
    }

    #[test]
    fn responses_and_chat_streams_take_the_final_usage() {
        let sse = "data: {\"type\":\"response.created\"}\n\ndata: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":100,\"input_tokens_details\":{\"cached_tokens\":40},\"output_tokens\":9}}}\n\n";
        assert_eq!(
            tap(Api::Responses, sse, 5),
            Some(TokenUsage {
                input: 60,
                output: 9,
                cache_read: 40,
                cache_write: 0
            })
        );
        let sse = "data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":11,\"completion_tokens\":3}}\n\ndata: [DONE]\n\n";
        assert_eq!(
            tap(Api::Chat, sse, 2),
            Some(TokenUsage {
                input: 11,
                output: 3,
                cache_read: 0,
                cache_write: 0
            })
        );
        assert_eq!(tap(Api::Chat, "data: {\"choices\":[]}\n\n", 4), None);
    }

    #[test]
    fn plain_answers_are_read_at_their_end() {
        let mut tap = UsageTap::new(Api::Anthropic, "application/json");
        tap.feed(br#"{"usage":{"input_tokens":5,"#);
        tap.feed(br#""output_tokens":6}}"#);
        assert_eq!(
            tap.finish(),
            Some(TokenUsage {
                input: 5,
                output: 6,
                ..Default::default()
            })
        );
        assert_eq!(Api::of_path("/v1/messages"), Some(Api::Anthropic));
        assert_eq!(Api::of_path("/v1/messages/count_tokens"), None);
        assert_eq!(Api::of_path("/api/v1/chat/completions"), Some(Api::Chat));
        assert_eq!(Api::of_path("/v1/responses"), Some(Api::Responses));
    }

    #[test]
    fn an_endless_line_is_dropped_not_kept() {
        let mut tap = UsageTap::new(Api::Chat, "text/event-stream");
        let big = vec![b'a'; MAX_LINE + 10];
        tap.feed(b"data: ");
        tap.feed(&big);
        tap.feed(b"\ndata: {\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\n");
        assert_eq!(
            tap.finish(),
            Some(TokenUsage {
                input: 1,
                output: 2,
                ..Default::default()
            })
        );
    }
}

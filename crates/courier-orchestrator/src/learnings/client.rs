//! A minimal Anthropic Messages API client.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ANTHROPIC_VERSION, LlmConfig};
use crate::{OrchestratorError, Result};

/// A minimal Anthropic Messages API client: one non-streaming request, text answer.
#[derive(Clone)]
pub struct AnthropicClient {
    http: reqwest::Client,
    config: LlmConfig,
}

impl fmt::Debug for AnthropicClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnthropicClient")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct MessagesRequest<'a> {
    model: &'a str,
    max_tokens: u32,
    system: &'a str,
    messages: [ChatMessage<'a>; 1],
}

#[derive(Serialize)]
struct ChatMessage<'a> {
    role: &'static str,
    content: &'a str,
}

#[derive(Deserialize)]
struct MessagesResponse {
    content: Vec<ContentBlock>,
}

#[derive(Deserialize)]
struct ContentBlock {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: String,
}

#[derive(Deserialize)]
struct ErrorResponse {
    error: ErrorBody,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(rename = "type")]
    kind: String,
    message: String,
}

impl AnthropicClient {
    /// A client for `config`.
    pub fn new(config: LlmConfig) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("courier/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(OrchestratorError::Http)?;
        Ok(AnthropicClient { http, config })
    }

    /// Sends one user message under `system` and returns the answer's text.
    pub async fn complete(&self, system: &str, user: &str) -> Result<String> {
        let url = format!("{}/v1/messages", self.config.base_url.trim_end_matches('/'));
        let request = MessagesRequest {
            model: &self.config.model,
            max_tokens: self.config.max_tokens,
            system,
            messages: [ChatMessage {
                role: "user",
                content: user,
            }],
        };
        let transport = |e: reqwest::Error| {
            if e.is_timeout() {
                OrchestratorError::LlmTimeout {
                    after: self.config.timeout,
                }
            } else {
                // Without the URL: it is configuration, and the error is stored.
                OrchestratorError::Http(e.without_url())
            }
        };
        let response = self
            .http
            .post(url)
            .header("x-api-key", self.config.api_key.expose())
            .header("anthropic-version", ANTHROPIC_VERSION)
            .json(&request)
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = response.bytes().await.map_err(transport)?;
        if !status.is_success() {
            let message = match serde_json::from_slice::<ErrorResponse>(&body) {
                Ok(e) => format!("{}: {}", e.error.kind, e.error.message),
                Err(_) => String::from_utf8_lossy(&body).chars().take(300).collect(),
            };
            return Err(OrchestratorError::LlmApi {
                status: status.as_u16(),
                message,
                retry_after,
            });
        }
        let answer: MessagesResponse = serde_json::from_slice(&body).map_err(|e| {
            OrchestratorError::LlmMalformed(format!("not a Messages API response ({e})"))
        })?;
        Ok(answer
            .content
            .into_iter()
            .filter(|b| b.kind == "text")
            .map(|b| b.text)
            .collect())
    }
}

//! The crate's one error type.

use courier_store::{MessageId, Provider, SandboxId, SandboxStatus, StoreError};
use courier_tools::ToolsError;

/// Everything an orchestrator operation can fail with.
///
/// Variants name what a caller can act on: bad input names its field and allowed range, a
/// missing key names the provider and where to set it.
#[derive(Debug, thiserror::Error)]
pub enum OrchestratorError {
    /// A create-request field is missing or out of range.
    #[error("invalid {field}: {message}")]
    InvalidConfig {
        /// The field, e.g. `memory_mb`.
        field: &'static str,
        /// What was wrong and what is allowed.
        message: String,
    },
    /// The selected tool needs a provider key that neither the project nor the user has.
    #[error(
        "{tool} needs {needs} ({provider} key): add one in the project settings or in your user settings"
    )]
    MissingProviderKey {
        /// The tool's display name, e.g. `Claude Code`.
        tool: &'static str,
        /// What would satisfy it, e.g. `an Anthropic API key or an Anthropic OAuth token`.
        needs: String,
        /// The provider whose key is missing.
        provider: Provider,
    },
    /// The master key could not be read, parsed or created.
    #[error("master key: {0}")]
    MasterKey(#[from] MasterKeyError),
    /// A stored key could not be decrypted: a different master key, or a ciphertext that
    /// was altered or moved to another row.
    #[error("stored {provider} key cannot be decrypted (wrong master key or tampered data)")]
    KeyDecryption {
        /// The key's provider.
        provider: Provider,
    },
    /// A stored project env var cannot be decrypted: the master key changed or the data
    /// was altered or moved to another project or name.
    #[error("stored env var {name} cannot be decrypted (wrong master key or tampered data)")]
    EnvVarDecryption {
        /// The variable's name.
        name: String,
    },
    /// The sandbox's template does not exist at the provider (a tool template that was
    /// never built there, or a custom template that is not there).
    #[error("template {template} for {tool} does not exist at the sandbox provider: {hint}")]
    TemplateMissing {
        /// The template asked for.
        template: String,
        /// The tool id, e.g. `claude`.
        tool: &'static str,
        /// How to fix it (the build command and route, or a custom `template_id`).
        hint: String,
    },
    /// The operation is not allowed in the sandbox's current state.
    #[error("sandbox {id} is {status}: cannot {action}")]
    InvalidState {
        /// The sandbox.
        id: SandboxId,
        /// Its status.
        status: SandboxStatus,
        /// What was asked, e.g. `send a message`.
        action: &'static str,
    },
    /// The sandbox ended before its agent answered.
    #[error("sandbox {id} ended ({status}) before its agent answered{}", reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
    AgentGone {
        /// The sandbox.
        id: SandboxId,
        /// Its final status.
        status: SandboxStatus,
        /// Why it ended, when recorded.
        reason: Option<String>,
    },
    /// A setup step failed inside the sandbox.
    #[error("setup step {step} failed: {message}")]
    Setup {
        /// The 1-based step number.
        step: usize,
        /// The command's error output or the provider's error.
        message: String,
    },
    /// A git remote URL does not name a GitHub repository (`owner/repo`).
    #[error("remote {url} does not name a GitHub repository: {message}")]
    RemoteUrl {
        /// The remote URL, with any credentials removed.
        url: String,
        /// What was wrong.
        message: String,
    },
    /// A git command in the sandbox failed or hung (the work stays committed there).
    #[error("git {action} failed: {message}")]
    Git {
        /// What was attempted, e.g. `push`.
        action: &'static str,
        /// git's error output, or the timeout.
        message: String,
    },
    /// The GitHub API refused or failed a request.
    #[error("GitHub API{}: {message}", status.map(|s| format!(" ({s})")).unwrap_or_default())]
    GitHub {
        /// The HTTP status, when GitHub answered.
        status: Option<u16>,
        /// GitHub's message (and its validation errors).
        message: String,
    },
    /// A GitHub webhook delivery was rejected: bad or missing signature, or an unreadable
    /// payload.
    #[error("webhook rejected: {0}")]
    Webhook(#[from] WebhookRejection),
    /// The LLM API answered with an error status.
    #[error("LLM API error ({status}){}: {message}", retry_after.map(|d| format!(", retry after {} s", d.as_secs())).unwrap_or_default())]
    LlmApi {
        /// The HTTP status (429: rate limited, 5xx: the provider failed).
        status: u16,
        /// The provider's error message.
        message: String,
        /// The provider's `retry-after`, when given.
        retry_after: Option<std::time::Duration>,
    },
    /// The LLM API did not answer in time.
    #[error("LLM API timed out after {} ms", after.as_millis())]
    LlmTimeout {
        /// The configured request timeout.
        after: std::time::Duration,
    },
    /// The LLM answered, but not in the required format.
    #[error("LLM answer is malformed: {0}")]
    LlmMalformed(String),
    /// An HTTP request could not be sent or its answer read (the error carries no URL).
    #[error("http: {0}")]
    Http(#[source] reqwest::Error),
    /// An agent's output was published but could not be stored (the store failed, or
    /// the message was finished meanwhile).
    #[error("storing the output of message {message_id} failed: {reason}")]
    OutputWrite {
        /// The message whose output was not stored.
        message_id: MessageId,
        /// What the store said.
        reason: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// courier-tools rejected its input (tool id, names, keys).
    #[error(transparent)]
    Tools(#[from] ToolsError),
    /// The sandbox provider failed.
    #[error("sandbox provider: {0}")]
    Provider(#[from] courier_e2b::Error),
    /// Local file system access failed (the master key file).
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Why the master key is unusable ([`OrchestratorError::MasterKey`]).
#[derive(Debug, thiserror::Error)]
pub enum MasterKeyError {
    /// The key is not base64.
    #[error("{var} is not base64: {source}")]
    NotBase64 {
        /// Where the key is expected: the environment variable's name.
        var: &'static str,
        /// What the decoder found.
        source: base64::DecodeError,
    },
    /// The key is base64, but not of 32 bytes.
    #[error("{var} must be the base64 of 32 bytes, got {bytes} bytes")]
    WrongLength {
        /// Where the key is expected: the environment variable's name.
        var: &'static str,
        /// How many bytes it decodes to.
        bytes: usize,
    },
    /// The key file holds an unusable key.
    #[error("{}: {source}", path.display())]
    InFile {
        /// The key file.
        path: std::path::PathBuf,
        /// What is wrong with its key.
        source: Box<MasterKeyError>,
    },
}

/// Why a GitHub webhook delivery was rejected ([`OrchestratorError::Webhook`]). Every
/// rejection but [`UnreadablePayload`](Self::UnreadablePayload) comes before the payload
/// is read.
#[derive(Debug, thiserror::Error)]
pub enum WebhookRejection {
    /// No webhook secret is configured, so no delivery can be verified.
    #[error("no webhook secret is configured")]
    NoSecret,
    /// The delivery has no `X-Hub-Signature-256` header.
    #[error("missing X-Hub-Signature-256 header")]
    MissingSignature,
    /// The signature does not start with `sha256=`.
    #[error("X-Hub-Signature-256 must start with sha256=")]
    NotSha256,
    /// The signature's digest is not hex.
    #[error("X-Hub-Signature-256 is not hex")]
    NotHex,
    /// The configured secret cannot key an HMAC.
    #[error("unusable webhook secret")]
    UnusableSecret,
    /// The signature is not the payload's under the secret: forged or altered.
    #[error("signature does not match the payload")]
    Mismatch,
    /// The delivery has no `X-GitHub-Event` header.
    #[error("missing X-GitHub-Event header")]
    MissingEvent,
    /// A signed `pull_request` payload that does not read as one.
    #[error("unreadable pull_request payload: {0}")]
    UnreadablePayload(#[source] serde_json::Error),
}

/// Shorthand for results of orchestrator operations.
pub type Result<T, E = OrchestratorError> = std::result::Result<T, E>;

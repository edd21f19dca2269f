//! The key vault: provider keys encrypted with AES-256-GCM under one master key.
//!
//! Each ciphertext is `version (1) ‖ nonce (12) ‖ AES-256-GCM(ciphertext ‖ tag)`, and the
//! associated data binds it to its row (owner kind, owner id, provider), so a ciphertext
//! copied to another user, project or provider fails to decrypt. The plaintext's last four
//! characters are kept beside it for display as `****abcd`.
//!
//! Resolution: for every provider, the project's key wins whenever one exists, even when
//! the user also has one.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use courier_store::{KeyOwner, NewProviderKey, ProjectId, Provider, ProviderKey, Store, UserId};
use courier_tools::{ProviderKeyKind, ProviderKeys, Secret, ToolId, registry};
use zeroize::Zeroizing;

use crate::{MasterKeyError, OrchestratorError, Result};

/// The environment variable holding the master key (base64 of 32 bytes).
pub const MASTER_KEY_ENV: &str = "COURIER_MASTER_KEY";

/// The file in the data directory the master key is generated into when the environment
/// does not set one (mode 0600).
pub const MASTER_KEY_FILE: &str = "master.key";

/// Prefix of Anthropic subscription OAuth tokens; other Anthropic keys are API keys.
pub const ANTHROPIC_OAUTH_PREFIX: &str = "sk-ant-oat";

const FORMAT_VERSION: u8 = 1;
const NONCE_LEN: usize = 12;

/// The 32-byte key every provider key is encrypted under. Wiped from memory on drop; its
/// `Debug` shows nothing.
#[derive(Clone)]
pub struct MasterKey(Zeroizing<[u8; 32]>);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(****)")
    }
}

impl MasterKey {
    /// A fresh random key.
    pub fn generate() -> Self {
        let key = Aes256Gcm::generate_key(OsRng);
        let mut bytes = Zeroizing::new([0u8; 32]);
        bytes.copy_from_slice(&key);
        MasterKey(bytes)
    }

    /// Parses the base64 of exactly 32 bytes (surrounding whitespace ignored).
    pub fn from_base64(text: &str) -> Result<Self> {
        Ok(Self::parse(text)?)
    }

    /// [`from_base64`](Self::from_base64) with the typed reason, for callers that add
    /// where the key came from.
    fn parse(text: &str) -> std::result::Result<Self, MasterKeyError> {
        let decoded = Zeroizing::new(BASE64.decode(text.trim()).map_err(|source| {
            MasterKeyError::NotBase64 {
                var: MASTER_KEY_ENV,
                source,
            }
        })?);
        if decoded.len() != 32 {
            return Err(MasterKeyError::WrongLength {
                var: MASTER_KEY_ENV,
                bytes: decoded.len(),
            });
        }
        let mut bytes = Zeroizing::new([0u8; 32]);
        bytes.copy_from_slice(&decoded);
        Ok(MasterKey(bytes))
    }

    /// The key as base64, for writing it to its file.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(BASE64.encode(*self.0))
    }

    /// The key in force: `env_value` (the value of [`MASTER_KEY_ENV`]) when set and not
    /// blank; else the one in `data_dir`/[`MASTER_KEY_FILE`]; else a new one generated
    /// into that file with mode 0600 (the directory is created when missing).
    pub fn load_or_create(env_value: Option<&str>, data_dir: &Path) -> Result<Self> {
        if let Some(value) = env_value.filter(|v| !v.trim().is_empty()) {
            return Self::from_base64(value);
        }
        let path = Self::file_path(data_dir);
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::parse(&text).map_err(|source| {
                MasterKeyError::InFile {
                    path: path.clone(),
                    source: Box::new(source),
                }
                .into()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(data_dir)?;
                let key = Self::generate();
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                let mut file = options.open(&path)?;
                file.write_all(key.to_base64().as_bytes())?;
                file.sync_all()?;
                Ok(key)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Where [`MasterKey::load_or_create`] keeps the key in `data_dir`.
    pub fn file_path(data_dir: &Path) -> PathBuf {
        data_dir.join(MASTER_KEY_FILE)
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&self.0[..]))
    }
}

/// The associated data binding a ciphertext to its row.
fn associated_data(owner: KeyOwner, provider: Provider) -> Vec<u8> {
    let owner = match owner {
        KeyOwner::User(id) => format!("user:{id}"),
        KeyOwner::Project(id) => format!("project:{id}"),
    };
    format!("courier/provider-key/v1|{owner}|{provider}").into_bytes()
}

/// At most the last four characters of `plaintext`.
pub fn last_four(plaintext: &str) -> String {
    let chars: Vec<char> = plaintext.chars().collect();
    chars[chars.len().saturating_sub(4)..].iter().collect()
}

/// Encrypts and decrypts provider keys, and resolves which key a sandbox gets.
#[derive(Clone)]
pub struct KeyVault {
    master: MasterKey,
    store: Arc<dyn Store>,
}

impl fmt::Debug for KeyVault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyVault").finish_non_exhaustive()
    }
}

/// Where a resolved key came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    /// The project's key (it wins).
    Project,
    /// The user's own key (used when the project has none).
    User,
}

/// A decrypted key and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedKey {
    /// The key (shown as `****abcd`).
    pub secret: Secret,
    /// Project or user.
    pub source: KeySource,
}

impl KeyVault {
    /// A vault over `store` under `master`.
    pub fn new(master: MasterKey, store: Arc<dyn Store>) -> Self {
        KeyVault { master, store }
    }

    /// Encrypts `plaintext` for the row (`owner`, `provider`).
    pub fn seal(&self, owner: KeyOwner, provider: Provider, plaintext: &str) -> NewProviderKey {
        NewProviderKey {
            ciphertext: self.seal_bytes(&associated_data(owner, provider), plaintext),
            last_four: last_four(plaintext),
        }
    }

    /// `version ‖ nonce ‖ AES-256-GCM(plaintext)` bound to `aad`.
    pub(crate) fn seal_bytes(&self, aad: &[u8], plaintext: &str) -> Vec<u8> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let sealed = self
            .master
            .cipher()
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext.as_bytes(),
                    aad,
                },
            )
            // AES-GCM encryption fails only for inputs over 64 GiB.
            .unwrap_or_default();
        let mut ciphertext = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
        ciphertext.push(FORMAT_VERSION);
        ciphertext.extend_from_slice(&nonce);
        ciphertext.extend_from_slice(&sealed);
        ciphertext
    }

    /// Decrypts what [`seal_bytes`](Self::seal_bytes) made for the same `aad`; `None`
    /// when the master key differs or the data was altered or belongs elsewhere.
    pub(crate) fn open_bytes(&self, aad: &[u8], data: &[u8]) -> Option<Secret> {
        if data.len() < 1 + NONCE_LEN || data[0] != FORMAT_VERSION {
            return None;
        }
        let nonce = Nonce::from_slice(&data[1..1 + NONCE_LEN]);
        let plain = Zeroizing::new(
            self.master
                .cipher()
                .decrypt(
                    nonce,
                    Payload {
                        msg: &data[1 + NONCE_LEN..],
                        aad,
                    },
                )
                .ok()?,
        );
        std::str::from_utf8(&plain).ok().map(Secret::new)
    }

    /// The store the vault reads and writes.
    pub(crate) fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    /// Decrypts a stored key; fails when the master key differs or the ciphertext was
    /// altered or belongs to another row.
    pub fn open(&self, key: &ProviderKey) -> Result<Secret> {
        self.open_bytes(&associated_data(key.owner, key.provider), &key.ciphertext)
            .ok_or(OrchestratorError::KeyDecryption {
                provider: key.provider,
            })
    }

    /// Encrypts and stores (or replaces) the owner's key for `provider`.
    pub fn put(&self, owner: KeyOwner, provider: Provider, plaintext: &str) -> PutKey<'_> {
        PutKey {
            vault: self,
            owner,
            provider,
            sealed: self.seal(owner, provider, plaintext),
        }
    }

    /// The owner's decrypted key for `provider`, if any.
    pub async fn get(&self, owner: KeyOwner, provider: Provider) -> Result<Option<Secret>> {
        match self.store.get_provider_key(owner, provider).await? {
            Some(key) => self.open(&key).map(Some),
            None => Ok(None),
        }
    }

    /// The key a sandbox of `project` started by `user` gets for `provider`: the project's
    /// when it has one, else the user's.
    pub async fn resolve(
        &self,
        user: UserId,
        project: ProjectId,
        provider: Provider,
    ) -> Result<Option<ResolvedKey>> {
        if let Some(secret) = self.get(KeyOwner::Project(project), provider).await? {
            return Ok(Some(ResolvedKey {
                secret,
                source: KeySource::Project,
            }));
        }
        Ok(self
            .get(KeyOwner::User(user), provider)
            .await?
            .map(|secret| ResolvedKey {
                secret,
                source: KeySource::User,
            }))
    }

    /// The model provider keys for a sandbox, resolved per provider (project beats user).
    /// An Anthropic key starting with [`ANTHROPIC_OAUTH_PREFIX`] is an OAuth token.
    pub async fn provider_keys(&self, user: UserId, project: ProjectId) -> Result<ProviderKeys> {
        let mut keys = ProviderKeys::default();
        if let Some(k) = self.resolve(user, project, Provider::Anthropic).await? {
            if k.secret.expose().starts_with(ANTHROPIC_OAUTH_PREFIX) {
                keys.anthropic_oauth_token = Some(k.secret);
            } else {
                keys.anthropic_api_key = Some(k.secret);
            }
        }
        keys.openrouter_api_key = self
            .resolve(user, project, Provider::OpenRouter)
            .await?
            .map(|k| k.secret);
        keys.openai_api_key = self
            .resolve(user, project, Provider::OpenAi)
            .await?
            .map(|k| k.secret);
        Ok(keys)
    }
}

/// A sealed key on its way to the store (see [`KeyVault::put`]).
#[must_use = "call `.save().await` to store the key"]
pub struct PutKey<'a> {
    vault: &'a KeyVault,
    owner: KeyOwner,
    provider: Provider,
    sealed: NewProviderKey,
}

impl PutKey<'_> {
    /// Stores the sealed key, replacing the owner's previous one for the provider.
    pub async fn save(self) -> Result<ProviderKey> {
        Ok(self
            .vault
            .store
            .put_provider_key(self.owner, self.provider, self.sealed)
            .await?)
    }
}

/// The store provider a key kind is kept under.
pub const fn provider_of(kind: ProviderKeyKind) -> Provider {
    match kind {
        ProviderKeyKind::AnthropicApiKey | ProviderKeyKind::AnthropicOauthToken => {
            Provider::Anthropic
        }
        ProviderKeyKind::OpenrouterApiKey => Provider::OpenRouter,
        ProviderKeyKind::OpenaiApiKey => Provider::OpenAi,
    }
}

/// Checks that `keys` satisfy `tool` before anything is created.
///
/// # Errors
///
/// [`OrchestratorError::MissingProviderKey`] naming the provider and where to set it.
pub fn check_required(tool: ToolId, keys: &ProviderKeys) -> Result<()> {
    if keys.satisfy(tool) {
        return Ok(());
    }
    let spec = registry::spec(tool);
    let needs = spec
        .required_keys
        .iter()
        .map(|k| k.describe())
        .collect::<Vec<_>>()
        .join(" or ");
    Err(OrchestratorError::MissingProviderKey {
        tool: spec.display_name,
        needs,
        provider: provider_of(spec.required_keys[0]),
    })
}

#[cfg(test)]
mod tests {
    use courier_store::{NewProject, NewUser, SqliteStore};

    use super::*;

    async fn setup() -> (KeyVault, Arc<dyn Store>, UserId, ProjectId) {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await.unwrap());
        let user = store
            .create_user(NewUser {
                email: "ada@example.com".into(),
                name: "Ada".into(),
            })
            .await
            .unwrap();
        let project = store
            .create_project(NewProject {
                user_id: user.id,
                name: "engine".into(),
            })
            .await
            .unwrap();
        (
            KeyVault::new(MasterKey::generate(), store.clone()),
            store,
            user.id,
            project.id,
        )
    }

    #[tokio::test]
    async fn a_key_round_trips_through_the_store_encrypted_with_its_last_four() {
        let (vault, store, user, _) = setup().await;
        let owner = KeyOwner::User(user);
        let stored = vault
            .put(owner, Provider::Anthropic, "sk-ant-api03-secretvalue-wxyz")
            .save()
            .await
            .unwrap();
        assert_eq!(stored.last_four, "wxyz");
        let raw = store
            .get_provider_key(owner, Provider::Anthropic)
            .await
            .unwrap()
            .unwrap();
        assert!(
            !raw.ciphertext.windows(11).any(|w| w == b"secretvalue"),
            "the plaintext must not be stored"
        );
        let secret = vault
            .get(owner, Provider::Anthropic)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(secret.expose(), "sk-ant-api03-secretvalue-wxyz");
    }

    #[tokio::test]
    async fn a_ciphertext_moved_to_another_row_fails_to_decrypt() {
        let (vault, _, user, project) = setup().await;
        let sealed = vault.seal(KeyOwner::User(user), Provider::OpenAi, "sk-openai-1234");
        let moved = ProviderKey {
            id: Default::default(),
            owner: KeyOwner::Project(project),
            provider: Provider::OpenAi,
            ciphertext: sealed.ciphertext.clone(),
            last_four: sealed.last_four.clone(),
            created_at: chrono::Utc::now(),
            updated_at: chrono::Utc::now(),
        };
        assert!(matches!(
            vault.open(&moved),
            Err(OrchestratorError::KeyDecryption { .. })
        ));
        let other_provider = ProviderKey {
            owner: KeyOwner::User(user),
            provider: Provider::OpenRouter,
            ..moved
        };
        assert!(vault.open(&other_provider).is_err());
    }

    #[tokio::test]
    async fn a_tampered_ciphertext_or_another_master_key_fails_to_decrypt() {
        let (vault, store, user, _) = setup().await;
        let owner = KeyOwner::User(user);
        vault
            .put(owner, Provider::GitHub, "ghp_abcdefgh1234")
            .save()
            .await
            .unwrap();
        let mut key = store
            .get_provider_key(owner, Provider::GitHub)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(vault.open(&key).unwrap().expose(), "ghp_abcdefgh1234");

        let other = KeyVault::new(MasterKey::generate(), store.clone());
        assert!(other.open(&key).is_err());

        let last = key.ciphertext.len() - 1;
        key.ciphertext[last] ^= 1;
        assert!(vault.open(&key).is_err());
        key.ciphertext.truncate(5);
        assert!(vault.open(&key).is_err());
    }

    #[tokio::test]
    async fn the_project_key_beats_the_user_key() {
        let (vault, _, user, project) = setup().await;
        vault
            .put(
                KeyOwner::User(user),
                Provider::OpenRouter,
                "sk-or-user-1111",
            )
            .save()
            .await
            .unwrap();
        let k = vault
            .resolve(user, project, Provider::OpenRouter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (k.secret.expose(), k.source),
            ("sk-or-user-1111", KeySource::User)
        );

        vault
            .put(
                KeyOwner::Project(project),
                Provider::OpenRouter,
                "sk-or-proj-2222",
            )
            .save()
            .await
            .unwrap();
        let k = vault
            .resolve(user, project, Provider::OpenRouter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (k.secret.expose(), k.source),
            ("sk-or-proj-2222", KeySource::Project)
        );
        assert!(
            vault
                .resolve(user, project, Provider::OpenAi)
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn an_anthropic_oauth_token_is_told_apart_from_an_api_key() {
        let (vault, _, user, project) = setup().await;
        vault
            .put(
                KeyOwner::User(user),
                Provider::Anthropic,
                "sk-ant-oat01-token-9999",
            )
            .save()
            .await
            .unwrap();
        let keys = vault.provider_keys(user, project).await.unwrap();
        assert!(keys.anthropic_api_key.is_none());
        assert_eq!(
            keys.anthropic_oauth_token.unwrap().expose(),
            "sk-ant-oat01-token-9999"
        );
        check_required(
            ToolId::Claude,
            &vault.provider_keys(user, project).await.unwrap(),
        )
        .unwrap();
    }

    #[test]
    fn a_missing_key_error_names_the_provider_and_where_to_set_it() {
        let err = check_required(ToolId::Codex, &ProviderKeys::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("an OpenAI API key"), "{err}");
        assert!(err.contains("openai"), "{err}");
        assert!(err.contains("project settings"), "{err}");
        assert!(err.contains("user settings"), "{err}");
        let err = check_required(ToolId::Pi, &ProviderKeys::default()).unwrap_err();
        assert!(matches!(
            err,
            OrchestratorError::MissingProviderKey {
                provider: Provider::OpenRouter,
                ..
            }
        ));
        check_required(ToolId::Shell, &ProviderKeys::default()).unwrap();
    }

    #[test]
    fn debug_output_never_shows_a_secret_or_the_master_key() {
        let master = MasterKey::generate();
        let b64 = master.to_base64();
        assert!(!format!("{master:?}").contains(b64.as_str()));
        let keys = ProviderKeys {
            openai_api_key: Some(Secret::new("sk-proj-verysecret-abcd")),
            ..Default::default()
        };
        let shown = format!("{keys:?}");
        assert!(shown.contains("****abcd"), "{shown}");
        assert!(!shown.contains("verysecret"), "{shown}");
        let resolved = ResolvedKey {
            secret: Secret::new("sk-proj-verysecret-abcd"),
            source: KeySource::User,
        };
        assert!(!format!("{resolved:?}").contains("verysecret"));
    }

    #[test]
    fn the_master_key_comes_from_the_environment_when_set() {
        let dir = tempfile::tempdir().unwrap();
        let key = MasterKey::generate();
        let loaded = MasterKey::load_or_create(Some(&key.to_base64()), dir.path()).unwrap();
        assert_eq!(*loaded.0, *key.0);
        assert!(!MasterKey::file_path(dir.path()).exists());
        let err = MasterKey::load_or_create(Some("c2hvcnQ="), dir.path()).unwrap_err();
        assert!(err.to_string().contains("32 bytes"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn the_generated_master_key_file_is_private_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let first = MasterKey::load_or_create(None, &data_dir).unwrap();
        let mode = std::fs::metadata(MasterKey::file_path(&data_dir))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let second = MasterKey::load_or_create(Some("  "), &data_dir).unwrap();
        assert_eq!(*first.0, *second.0);
    }

    #[test]
    fn an_unusable_key_file_is_named_with_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let path = MasterKey::file_path(dir.path());
        std::fs::write(&path, "not base64!").unwrap();
        let err = MasterKey::load_or_create(None, dir.path()).unwrap_err();
        let message = err.to_string();
        match err {
            OrchestratorError::MasterKey(MasterKeyError::InFile {
                path: named,
                source,
            }) => {
                assert_eq!(named, path);
                assert!(
                    matches!(*source, MasterKeyError::NotBase64 { .. }),
                    "{source}"
                );
            }
            other => panic!("expected an unusable key file, got {other:?}"),
        }
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert_eq!(message.matches("master key:").count(), 1, "{message}");
    }

    #[test]
    fn last_four_keeps_at_most_four_characters() {
        assert_eq!(last_four("abcdefgh"), "efgh");
        assert_eq!(last_four("ab"), "ab");
        assert_eq!(last_four("ééééé"), "éééé");
    }
}

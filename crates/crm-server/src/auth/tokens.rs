//! Bearer tokens. A token is `crm_<token id>_<secret>`; only its SHA-256 hash is stored, as a
//! `TokenIssued` event in the `tokens` stream of the log, so issuing and revoking are audited
//! like every other change. The server keeps the table in memory (it is small) and replays
//! the stream on start.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use crm_eventlog::{Direction, EventStore, ExpectedVersion, Metadata, NewEvent};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::policy::{Principal, Role};

/// The stream holding every token event.
pub const TOKENS_STREAM: &str = "tokens";
/// The file a fresh data directory's first administrator token is written to.
pub const BOOTSTRAP_FILE: &str = "bootstrap-admin-token";
/// Default lifetime of an issued token.
pub const DEFAULT_TTL_DAYS: u32 = 90;

/// What the log records about a token: never the token itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub token_id: String,
    pub user_id: String,
    pub role: Role,
    pub region: Option<String>,
    pub label: String,
    /// SHA-256 of the whole token string.
    pub hash: Vec<u8>,
    pub issued_by: String,
    pub issued_at_micros: i64,
    pub expires_at_micros: i64,
    pub revoked_at_micros: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TokenRevoked {
    token_id: String,
    reason: String,
}

/// A freshly issued token: the only time its secret is visible.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub token: String,
    pub record: TokenRecord,
}

/// Why a token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token: send `authorization: Bearer <token>`")]
    Missing,
    #[error("malformed bearer token")]
    Malformed,
    #[error("unknown token")]
    Unknown,
    #[error("token {0} has expired")]
    Expired(String),
    #[error("token {0} has been revoked")]
    Revoked(String),
}

/// Most bytes decoding a token event may claim: token events are a few hundred bytes, and
/// without a limit a damaged length prefix is an allocation that aborts the process.
const DECODE_LIMIT: usize = 1024 * 1024;

/// `config::standard()` with a decoding limit (the encoding is the same).
fn config() -> bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<DECODE_LIMIT>,
> {
    bincode::config::standard().with_limit::<DECODE_LIMIT>()
}

fn hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

fn now_micros() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64)
}

/// Splits `crm_<32 hex id>_<64 hex secret>` into its id.
fn token_id_of(token: &str) -> Option<&str> {
    let rest = token.strip_prefix("crm_")?;
    let (id, secret) = rest.split_once('_')?;
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex(id, 32) && hex(secret, 64)).then_some(id)
}

/// The in-memory token table, backed by the `tokens` stream.
pub struct TokenStore<S> {
    store: S,
    tokens: RwLock<HashMap<String, TokenRecord>>,
}

impl<S: EventStore> TokenStore<S> {
    /// Replays the `tokens` stream.
    pub async fn load(store: S) -> crm_eventlog::Result<Self> {
        let mut tokens = HashMap::new();
        let mut from = Some(0);
        while let Some(v) = from {
            let events = store.read_stream(TOKENS_STREAM, Some(v), Direction::Forwards, 1000).await?;
            from = events.last().map(|e| e.version + 1);
            for e in events {
                apply(&mut tokens, &e);
            }
        }
        Ok(TokenStore { store, tokens: RwLock::new(tokens) })
    }

    /// Issues a token for `user_id` with `role` (and `region`), valid for `ttl_days`.
    pub async fn issue(
        &self,
        actor: &str,
        user_id: &str,
        role: Role,
        region: Option<String>,
        ttl_days: u32,
        label: &str,
    ) -> crm_eventlog::Result<IssuedToken> {
        let token_id = Uuid::now_v7().simple().to_string();
        let secret = format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
        let token = format!("crm_{token_id}_{secret}");
        let now = now_micros();
        let record = TokenRecord {
            token_id: token_id.clone(),
            user_id: user_id.to_owned(),
            role,
            region,
            label: label.to_owned(),
            hash: hash(&token),
            issued_by: actor.to_owned(),
            issued_at_micros: now,
            expires_at_micros: now + i64::from(ttl_days.max(1)) * 86_400_000_000,
            revoked_at_micros: None,
        };
        let payload = bincode::serde::encode_to_vec(&record, config()).expect("encoding into a Vec");
        self.append(actor, "TokenIssued", payload).await?;
        self.tokens.write().expect("tokens lock").insert(token_id, record.clone());
        Ok(IssuedToken { token, record })
    }

    /// Revokes a token; later calls with it are Unauthenticated. Returns false if unknown.
    pub async fn revoke(&self, actor: &str, token_id: &str, reason: &str) -> crm_eventlog::Result<bool> {
        if !self.tokens.read().expect("tokens lock").contains_key(token_id) {
            return Ok(false);
        }
        let event = TokenRevoked { token_id: token_id.to_owned(), reason: reason.to_owned() };
        let payload = bincode::serde::encode_to_vec(&event, config()).expect("encoding into a Vec");
        self.append(actor, "TokenRevoked", payload).await?;
        if let Some(t) = self.tokens.write().expect("tokens lock").get_mut(token_id) {
            t.revoked_at_micros.get_or_insert(now_micros());
        }
        Ok(true)
    }

    /// Every token record (hashes only), newest first.
    pub fn list(&self) -> Vec<TokenRecord> {
        let mut all: Vec<TokenRecord> = self.tokens.read().expect("tokens lock").values().cloned().collect();
        all.sort_by_key(|t| std::cmp::Reverse(t.issued_at_micros));
        all
    }

    /// Checks a bearer token and returns its principal.
    pub fn authenticate(&self, token: &str) -> Result<Principal, AuthError> {
        let id = token_id_of(token).ok_or(AuthError::Malformed)?;
        let tokens = self.tokens.read().expect("tokens lock");
        let record = tokens.get(id).ok_or(AuthError::Unknown)?;
        if !constant_time_eq(&record.hash, &hash(token)) {
            return Err(AuthError::Unknown);
        }
        if record.revoked_at_micros.is_some() {
            return Err(AuthError::Revoked(record.token_id.clone()));
        }
        if record.expires_at_micros <= now_micros() {
            return Err(AuthError::Expired(record.token_id.clone()));
        }
        Ok(Principal {
            token_id: record.token_id.clone(),
            user_id: record.user_id.clone(),
            role: record.role,
            region: record.region.clone(),
        })
    }

    /// On a data directory that has never had a token, issues an administrator token and
    /// writes it to `<data_dir>/bootstrap-admin-token` (mode 0600). Returns the file's path
    /// when it did so; never again afterwards.
    pub async fn bootstrap(&self, data_dir: &Path) -> anyhow::Result<Option<PathBuf>> {
        if !self.tokens.read().expect("tokens lock").is_empty() {
            return Ok(None);
        }
        let issued =
            self.issue("system:bootstrap", "admin", Role::Administrator, None, 3650, "bootstrap administrator").await?;
        let path = data_dir.join(BOOTSTRAP_FILE);
        write_secret(&path, &format!("{}\n", issued.token))?;
        Ok(Some(path))
    }

    async fn append(&self, actor: &str, event_type: &str, payload: Vec<u8>) -> crm_eventlog::Result<()> {
        let event = NewEvent {
            id: Uuid::now_v7(),
            event_type: event_type.to_owned(),
            schema_version: 1,
            metadata: Metadata {
                actor: actor.to_owned(),
                correlation_id: Uuid::now_v7(),
                causation_id: None,
                source: "admin".into(),
            },
            payload,
        };
        self.store.append(TOKENS_STREAM, ExpectedVersion::Any, vec![event]).await.map(|_| ())
    }
}

/// JSON for the security events this module and the auth layer write (token hashes left
/// out), for `EventLog` readers; `None` for every other event.
pub fn render(e: &crm_eventlog::RecordedEvent) -> Option<String> {
    match (e.stream.as_str(), e.event_type.as_str()) {
        (TOKENS_STREAM, "TokenIssued") => {
            let (r, _) = bincode::serde::decode_from_slice::<TokenRecord, _>(&e.payload, config()).ok()?;
            Some(
                serde_json::json!({
                    "token_id": r.token_id, "user_id": r.user_id, "role": r.role.as_str(), "region": r.region,
                    "label": r.label, "issued_by": r.issued_by, "expires_at_unix_micros": r.expires_at_micros,
                })
                .to_string(),
            )
        }
        (TOKENS_STREAM, "TokenRevoked") => {
            let (r, _) = bincode::serde::decode_from_slice::<TokenRevoked, _>(&e.payload, config()).ok()?;
            Some(serde_json::json!({ "token_id": r.token_id, "reason": r.reason }).to_string())
        }
        (super::layer::DENIALS_STREAM, "AccessDenied") => String::from_utf8(e.payload.clone()).ok(),
        _ => None,
    }
}

fn apply(tokens: &mut HashMap<String, TokenRecord>, e: &crm_eventlog::RecordedEvent) {
    match e.event_type.as_str() {
        "TokenIssued" => {
            if let Ok((record, _)) = bincode::serde::decode_from_slice::<TokenRecord, _>(&e.payload, config()) {
                tokens.insert(record.token_id.clone(), record);
            }
        }
        "TokenRevoked" => {
            if let Ok((r, _)) = bincode::serde::decode_from_slice::<TokenRevoked, _>(&e.payload, config()) {
                if let Some(t) = tokens.get_mut(&r.token_id) {
                    t.revoked_at_micros.get_or_insert(e.recorded_at_micros);
                }
            }
        }
        other => tracing::warn!(event_type = other, position = e.position, "unknown event in the tokens stream"),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn write_secret(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_length_prefix_is_a_decode_error_not_an_allocation() {
        let huge: Vec<u8> =
            std::iter::repeat_n([0xFD, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F], 8).flatten().collect();
        assert!(bincode::serde::decode_from_slice::<TokenRecord, _>(&huge, config()).is_err());
        assert!(bincode::serde::decode_from_slice::<TokenRevoked, _>(&huge, config()).is_err());
    }

    #[test]
    fn token_ids_are_parsed_only_from_well_formed_tokens() {
        let id = "0192aabbccddeeff0011223344556677";
        let secret = "ab".repeat(32);
        assert_eq!(token_id_of(&format!("crm_{id}_{secret}")), Some(id));
        for bad in [
            "",
            "crm_",
            "Bearer x",
            &format!("crm_{id}"),
            &format!("crm_{id}_{}", &secret[1..]),
            &format!("xx_{id}_{secret}"),
        ] {
            assert_eq!(token_id_of(bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn issue_authenticate_revoke_and_replay() {
        let dir = tempfile::tempdir().unwrap();
        let log = crm_eventlog::SledEventStore::open(crm_eventlog::Config::new(dir.path().join("log"))).unwrap();
        let tokens = TokenStore::load(log.clone()).await.unwrap();
        let path = tokens.bootstrap(dir.path()).await.unwrap().expect("fresh directory bootstraps");
        let admin = std::fs::read_to_string(&path).unwrap();
        assert_eq!(tokens.authenticate(admin.trim()).unwrap().role, Role::Administrator);
        assert_eq!(tokens.bootstrap(dir.path()).await.unwrap(), None, "only once");

        let rep = tokens.issue("admin", "u-7", Role::SalesRep, Some("华东".into()), 1, "laptop").await.unwrap();
        let p = tokens.authenticate(&rep.token).unwrap();
        assert_eq!((p.user_id.as_str(), p.role, p.region.as_deref()), ("u-7", Role::SalesRep, Some("华东")));
        let mut forged = rep.token.clone();
        forged.pop();
        forged.push(if rep.token.ends_with('0') { '1' } else { '0' });
        assert_eq!(tokens.authenticate(&forged), Err(AuthError::Unknown));
        assert!(tokens.revoke("admin", &rep.record.token_id, "left the company").await.unwrap());
        assert!(matches!(tokens.authenticate(&rep.token), Err(AuthError::Revoked(_))));

        // The log holds hashes only, and a restart replays the same table.
        let secret = rep.token.rsplit('_').next().unwrap().as_bytes();
        for e in log.read_all_blocking(1, 100).unwrap() {
            assert!(!e.payload.windows(8).any(|w| secret.windows(8).any(|t| t == w)), "secret stored");
        }
        // Expiry: the same token with its expiry moved into the past.
        let short = tokens.issue("admin", "u-8", Role::Auditor, None, 1, "").await.unwrap();
        tokens.tokens.write().unwrap().get_mut(&short.record.token_id).unwrap().expires_at_micros = now_micros() - 1;
        assert!(matches!(tokens.authenticate(&short.token), Err(AuthError::Expired(_))));

        let replayed = TokenStore::load(log.clone()).await.unwrap();
        assert!(matches!(replayed.authenticate(&rep.token), Err(AuthError::Revoked(_))));
        assert_eq!(replayed.authenticate(admin.trim()).unwrap().role, Role::Administrator);
        assert_eq!(replayed.list().len(), 3);
    }
}

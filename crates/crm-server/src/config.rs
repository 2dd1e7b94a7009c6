//! Server settings: command-line flags and environment variables, over an optional TOML file,
//! over defaults. `crm-server` with no flags listens on 127.0.0.1:50051 and keeps its data in
//! `./data`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
/// Default data directory, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = "./data";

/// Everything the server needs to start.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Address of the gRPC listener; port 0 picks a free port (printed on stdout).
    pub listen: SocketAddr,
    /// Directory of the event log and read models.
    pub data_dir: PathBuf,
    /// Largest accepted gRPC request, in bytes; larger ones get ResourceExhausted.
    pub max_request_bytes: usize,
    /// Per-token rate and concurrency limits.
    pub limits: crate::auth::Limits,
    /// PEM certificate chain and private key: serve TLS (rustls) when both are set.
    pub tls: Option<Tls>,
    /// Days past `rules.follow_up_reminder_days` after which a follow-up reminder escalates
    /// to the owner's managers (`Query.GetReminders`); at least 1.
    pub escalation_after_days: u32,
    /// Shortest time between two live steps of a read model (all but `duplicates`, which the
    /// duplicate guard waits for and which steps at every head change): the most it adds to
    /// a read model's lag, and what lets it commit many events in one sled batch under load.
    /// See docs/ARCHITECTURE.md, "Projections".
    pub projection_live_interval: std::time::Duration,
    /// Read the event log's stream index, the read models' files and their trees once after
    /// starting, in the background, so that the first minutes after a start do not wait for a
    /// disk read per new stream or read-model page ([`crate::warm`]). On by default.
    pub warm_on_start: bool,
    /// sled's page cache of the event log, in bytes (default 512 MiB). Under a sustained
    /// command load the writer reads the stream index of each stream it has not cached;
    /// index pages outside this cache are read from the file.
    pub log_cache_bytes: u64,
    /// sled's page cache of each read model's database, in bytes (default 1 GiB; seven read
    /// models). A live step's pages outside it are read from the files.
    pub read_model_cache_bytes: u64,
    /// Memory the read models' builds far behind share before they commit, in bytes (default
    /// 2 GiB, estimated). A rebuild, verification or first build keeps what it changes in
    /// memory up to its even share of this among the builds in progress plus its part of
    /// what the others leave unused (all of it when it is the only one, at least a seventh
    /// each for seven first builds); past it, it commits and reads
    /// its tree again. A larger total makes rebuilds faster where memory allows. A read model
    /// following live takes no share and keeps at most 1 GiB (or a build far behind's share,
    /// if smaller) cached between steps.
    pub build_cache_bytes: u64,
}

/// Default of [`Config::log_cache_bytes`], in MiB: the event log's own default.
pub const DEFAULT_LOG_CACHE_MB: u64 = crm_eventlog::DEFAULT_CACHE_BYTES >> 20;
/// Default of [`Config::read_model_cache_bytes`], in MiB: the read models' own default.
pub const DEFAULT_READ_MODEL_CACHE_MB: u64 = crm_projection_runtime::DEFAULT_CACHE_BYTES >> 20;
/// Default of [`Config::build_cache_bytes`], in MiB: the read models' own default.
pub const DEFAULT_BUILD_CACHE_MB: u64 = crm_projection_runtime::DEFAULT_BUILD_CACHE_BYTES >> 20;

/// Default of [`Config::projection_live_interval`].
pub const DEFAULT_PROJECTION_LIVE_INTERVAL_MS: u64 = 20;

/// Default of [`Config::escalation_after_days`].
pub const DEFAULT_ESCALATION_AFTER_DAYS: u32 = 3;

/// TLS files, both PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: DEFAULT_LISTEN.parse().expect("valid default address"),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            max_request_bytes: 4 * 1024 * 1024,
            limits: crate::auth::Limits::default(),
            tls: None,
            escalation_after_days: DEFAULT_ESCALATION_AFTER_DAYS,
            projection_live_interval: std::time::Duration::from_millis(DEFAULT_PROJECTION_LIVE_INTERVAL_MS),
            warm_on_start: true,
            log_cache_bytes: DEFAULT_LOG_CACHE_MB << 20,
            read_model_cache_bytes: DEFAULT_READ_MODEL_CACHE_MB << 20,
            build_cache_bytes: DEFAULT_BUILD_CACHE_MB << 20,
        }
    }
}

/// The optional TOML file; every key may be left out.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub max_request_bytes: Option<usize>,
    /// Sustained requests per second per token.
    pub rate_limit_per_sec: Option<f64>,
    /// Requests above the sustained rate a token may burst.
    pub rate_limit_burst: Option<f64>,
    /// Requests of one token in flight at once.
    pub max_concurrent_per_token: Option<usize>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Days past the follow-up reminder before it escalates to the owner's managers.
    pub escalation_after_days: Option<u32>,
    /// Milliseconds between two live steps of a read model (0: step at every head change).
    pub projection_live_interval_ms: Option<u64>,
    /// Warm the caches after starting (default true).
    pub warm_on_start: Option<bool>,
    /// sled's page cache of the event log, in MiB (default 512, from 16 to 1048576).
    pub log_cache_mb: Option<u64>,
    /// sled's page cache of each read model's database, in MiB (default 1024, from 16 to
    /// 1048576).
    pub read_model_cache_mb: Option<u64>,
    /// Memory the read models' builds far behind share before they commit, in MiB (default
    /// 2048, from 16 to 1048576).
    pub build_cache_mb: Option<u64>,
}

impl FileConfig {
    /// Reads and parses a TOML config file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))
    }
}

impl Config {
    /// Defaults, overridden by the file, overridden by explicit flags.
    pub fn resolve(file: FileConfig, listen: Option<SocketAddr>, data_dir: Option<PathBuf>) -> Self {
        Self::resolve_with_tls(file, listen, data_dir, None, None).expect("a valid file and no TLS flags")
    }

    /// Like [`Config::resolve`], with the TLS flags; errors when only one of cert and key is set.
    pub fn resolve_with_tls(
        file: FileConfig,
        listen: Option<SocketAddr>,
        data_dir: Option<PathBuf>,
        tls_cert: Option<PathBuf>,
        tls_key: Option<PathBuf>,
    ) -> anyhow::Result<Self> {
        let d = Config::default();
        let tls = match (tls_cert.or(file.tls_cert), tls_key.or(file.tls_key)) {
            (Some(cert), Some(key)) => Some(Tls { cert, key }),
            (None, None) => None,
            _ => anyhow::bail!("TLS needs both a certificate (--tls-cert) and a key (--tls-key)"),
        };
        let limits = crate::auth::Limits {
            rate_per_sec: file.rate_limit_per_sec.unwrap_or(d.limits.rate_per_sec),
            burst: file.rate_limit_burst.unwrap_or(d.limits.burst),
            max_concurrent: file.max_concurrent_per_token.unwrap_or(d.limits.max_concurrent),
        };
        let escalation_after_days = file.escalation_after_days.unwrap_or(d.escalation_after_days);
        anyhow::ensure!(escalation_after_days >= 1, "escalation_after_days must be at least 1");
        let interval_ms = file.projection_live_interval_ms.unwrap_or(DEFAULT_PROJECTION_LIVE_INTERVAL_MS);
        anyhow::ensure!(interval_ms <= 1000, "projection_live_interval_ms must be at most 1000 (the lag it adds)");
        let cache_mb = |name: &str, value: Option<u64>, default: u64| -> anyhow::Result<u64> {
            let mb = value.unwrap_or(default);
            anyhow::ensure!((16..=1 << 20).contains(&mb), "{name} = {mb}: must be between 16 and 1048576 (MiB)");
            Ok(mb << 20)
        };
        Ok(Config {
            log_cache_bytes: cache_mb("log_cache_mb", file.log_cache_mb, DEFAULT_LOG_CACHE_MB)?,
            read_model_cache_bytes: cache_mb(
                "read_model_cache_mb",
                file.read_model_cache_mb,
                DEFAULT_READ_MODEL_CACHE_MB,
            )?,
            build_cache_bytes: cache_mb("build_cache_mb", file.build_cache_mb, DEFAULT_BUILD_CACHE_MB)?,
            escalation_after_days,
            projection_live_interval: std::time::Duration::from_millis(interval_ms),
            listen: listen.or(file.listen).unwrap_or(d.listen),
            data_dir: data_dir.or(file.data_dir).unwrap_or(d.data_dir),
            max_request_bytes: file.max_request_bytes.unwrap_or(d.max_request_bytes),
            warm_on_start: file.warm_on_start.unwrap_or(d.warm_on_start),
            limits,
            tls,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_file_which_overrides_defaults() {
        let file: FileConfig = toml::from_str("listen = \"0.0.0.0:6000\"\ndata_dir = \"/srv/crm\"").unwrap();
        let c = Config::resolve(file, None, Some("/tmp/x".into()));
        assert_eq!(c.listen, "0.0.0.0:6000".parse().unwrap());
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(Config::resolve(FileConfig::default(), None, None), Config::default());
    }

    #[test]
    fn escalation_days_come_from_the_file_and_zero_is_refused() {
        let file: FileConfig = toml::from_str("escalation_after_days = 5").unwrap();
        assert_eq!(Config::resolve(file, None, None).escalation_after_days, 5);
        let zero: FileConfig = toml::from_str("escalation_after_days = 0").unwrap();
        let err = Config::resolve_with_tls(zero, None, None, None, None).unwrap_err();
        assert!(err.to_string().contains("escalation_after_days"), "{err}");
    }

    #[test]
    fn the_live_interval_comes_from_the_file_and_is_capped() {
        assert_eq!(Config::default().projection_live_interval, std::time::Duration::from_millis(20));
        let off: FileConfig = toml::from_str("projection_live_interval_ms = 0").unwrap();
        assert!(Config::resolve(off, None, None).projection_live_interval.is_zero());
        let long: FileConfig = toml::from_str("projection_live_interval_ms = 5000").unwrap();
        let err = Config::resolve_with_tls(long, None, None, None, None).unwrap_err();
        assert!(err.to_string().contains("projection_live_interval_ms"), "{err}");
    }

    #[test]
    fn warming_is_on_unless_the_file_turns_it_off() {
        assert!(Config::default().warm_on_start);
        let off: FileConfig = toml::from_str("warm_on_start = false").unwrap();
        assert!(!Config::resolve(off, None, None).warm_on_start);
    }

    #[test]
    fn cache_sizes_come_from_the_file_in_mib_within_bounds() {
        let d = Config::default();
        assert_eq!(
            (d.log_cache_bytes, d.read_model_cache_bytes, d.build_cache_bytes),
            (512 << 20, 1024 << 20, 2048 << 20)
        );
        let file: FileConfig =
            toml::from_str("log_cache_mb = 2048\nread_model_cache_mb = 3072\nbuild_cache_mb = 4096").unwrap();
        let c = Config::resolve(file, None, None);
        assert_eq!(
            (c.log_cache_bytes, c.read_model_cache_bytes, c.build_cache_bytes),
            (2048 << 20, 3072 << 20, 4096 << 20)
        );
        let edges: FileConfig =
            toml::from_str("log_cache_mb = 16\nread_model_cache_mb = 1048576\nbuild_cache_mb = 16").unwrap();
        let c = Config::resolve(edges, None, None);
        assert_eq!((c.log_cache_bytes, c.read_model_cache_bytes, c.build_cache_bytes), (16 << 20, 1 << 40, 16 << 20));
        for bad in
            ["log_cache_mb = 15", "read_model_cache_mb = 0", "read_model_cache_mb = 1048577", "build_cache_mb = 8"]
        {
            let file: FileConfig = toml::from_str(bad).unwrap();
            let e = Config::resolve_with_tls(file, None, None, None, None).unwrap_err().to_string();
            assert!(e.contains(bad) && e.contains("between 16 and 1048576"), "{bad}: {e}");
        }
    }

    #[test]
    fn unknown_keys_in_the_file_are_an_error() {
        assert!(toml::from_str::<FileConfig>("lisen = \"x\"").is_err());
    }
}

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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Address of the gRPC listener; port 0 picks a free port (printed on stdout).
    pub listen: SocketAddr,
    /// Directory of the event log and read models.
    pub data_dir: PathBuf,
    /// Largest accepted gRPC request, in bytes.
    pub max_request_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: DEFAULT_LISTEN.parse().expect("valid default address"),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            max_request_bytes: 4 * 1024 * 1024,
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
        let d = Config::default();
        Config {
            listen: listen.or(file.listen).unwrap_or(d.listen),
            data_dir: data_dir.or(file.data_dir).unwrap_or(d.data_dir),
            max_request_bytes: file.max_request_bytes.unwrap_or(d.max_request_bytes),
        }
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
    fn unknown_keys_in_the_file_are_an_error() {
        assert!(toml::from_str::<FileConfig>("lisen = \"x\"").is_err());
    }
}

//! One module per subcommand.

pub(crate) mod audit;
pub(crate) mod backup;
pub(crate) mod export;
pub(crate) mod history;
pub(crate) mod rebuild;
pub(crate) mod rules;
pub(crate) mod sources;
pub(crate) mod status;
pub(crate) mod tokens;
pub(crate) mod verify;

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

/// Standard output, or a file created at `path`.
pub(crate) fn output(path: Option<&Path>) -> Result<Box<dyn Write>> {
    Ok(match path {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    })
}

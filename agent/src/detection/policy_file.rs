//! Reading a policy file from disk into a validated policy.

use std::path::{Path, PathBuf};

use otwatch_rules::policy::{Policy, PolicyError, Warning};

/// Why a policy file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyLoadError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The policy file.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// The file is not a valid policy.
    #[error(transparent)]
    Invalid(#[from] PolicyError),
}

/// Reads and validates the policy at `path`, with its warnings.
pub fn load(path: &Path) -> Result<(Policy, Vec<Warning>), PolicyLoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| PolicyLoadError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(Policy::parse(&text, &path.display().to_string())?)
}

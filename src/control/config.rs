//! SPDK JSON config files: `{"subsystems": [{"subsystem": "bdev", "config": [{"method",
//! "params"}, ...]}, ...]}`, replayed in order through the RPC methods themselves, so a file
//! can do exactly what a client could and `save_config` output loads back unchanged.

use std::path::Path;

use serde_json::Value;
use thiserror::Error;

use super::methods;
use super::rpc::{call_blocking, Ctx, RpcError};

/// Why a config could not be applied; names the entry so the user can find it.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not JSON or not SPDK's shape.
    #[error("config file {path} is not a valid SPDK JSON config: {reason}")]
    Format {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// One entry failed; nothing after it ran.
    #[error("config entry {index} of subsystem '{subsystem}' ({method}) failed: {error}")]
    Entry {
        /// Subsystem of the entry.
        subsystem: String,
        /// Position in the subsystem's list, from 0.
        index: usize,
        /// The entry's method.
        method: String,
        /// The method's error.
        error: RpcError,
    },
}

/// Reads and applies a config file.
pub fn load_file(ctx: &Ctx, path: &Path) -> Result<(), ConfigError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: shown.clone(),
        source,
    })?;
    let json: Value = serde_json::from_str(&text).map_err(|e| ConfigError::Format {
        path: shown.clone(),
        reason: e.to_string(),
    })?;
    load(ctx, &json).map_err(|e| match e {
        ConfigError::Format { reason, .. } => ConfigError::Format {
            path: shown,
            reason,
        },
        other => other,
    })
}

/// Applies a parsed config, entry by entry, stopping at the first failure.
pub fn load(ctx: &Ctx, json: &Value) -> Result<(), ConfigError> {
    let format = |reason: &str| ConfigError::Format {
        path: "<inline>".into(),
        reason: reason.to_string(),
    };
    let subsystems = json
        .get("subsystems")
        .and_then(Value::as_array)
        .ok_or_else(|| format("missing \"subsystems\" array"))?;
    for sub in subsystems {
        let name = sub
            .get("subsystem")
            .and_then(Value::as_str)
            .ok_or_else(|| format("a subsystem has no \"subsystem\" name"))?;
        let entries = match sub.get("config") {
            None | Some(Value::Null) => continue,
            Some(Value::Array(entries)) => entries,
            Some(_) => {
                return Err(format(&format!(
                    "subsystem '{name}': \"config\" is not an array"
                )))
            }
        };
        for (index, entry) in entries.iter().enumerate() {
            let method_name = entry.get("method").and_then(Value::as_str).unwrap_or("");
            let fail = |error: RpcError| ConfigError::Entry {
                subsystem: name.to_string(),
                index,
                method: method_name.to_string(),
                error,
            };
            let method = methods::find(method_name).ok_or_else(|| {
                fail(RpcError::new(
                    super::rpc::METHOD_NOT_FOUND,
                    format!("Method not found: '{method_name}'"),
                ))
            })?;
            call_blocking(ctx, &method, entry.get("params").cloned()).map_err(fail)?;
        }
    }
    Ok(())
}

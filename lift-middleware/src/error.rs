//! Configuration errors, found once when a layer is built.

/// A layer's configuration is invalid; the field is named.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A value is outside its allowed range.
    #[error("`{field}` is out of range: {reason}")]
    OutOfRange {
        /// The field.
        field: &'static str,
        /// What the range is.
        reason: &'static str,
    },
    /// Settings that contradict each other.
    #[error("`{field}` conflicts with another setting: {reason}")]
    Conflict {
        /// The field.
        field: &'static str,
        /// What it conflicts with.
        reason: &'static str,
    },
}

impl ConfigError {
    /// The field the error names.
    pub fn field(&self) -> &'static str {
        match self {
            ConfigError::OutOfRange { field, .. } | ConfigError::Conflict { field, .. } => field,
        }
    }
}

pub(crate) fn check(
    ok: bool,
    field: &'static str,
    reason: &'static str,
) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError::OutOfRange { field, reason })
    }
}

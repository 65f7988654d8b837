//! Configuration errors.

/// A setting that is out of range, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The field's value is not allowed.
    #[error("invalid `{field}`: {reason}")]
    Invalid {
        /// The setting's name.
        field: &'static str,
        /// Why.
        reason: &'static str,
    },
}

impl ConfigError {
    pub(crate) fn invalid(field: &'static str, reason: &'static str) -> Self {
        ConfigError::Invalid { field, reason }
    }
}

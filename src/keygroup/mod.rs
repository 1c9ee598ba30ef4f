//! Key groups: placeholder, replaced by the real module.

/// Errors of key-group computations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyGroupError {
    /// Placeholder.
    #[error("placeholder")]
    Placeholder,
}

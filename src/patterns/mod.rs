//! YAML pattern packs and the compiled engine. (Owned by the pattern-engine work.)

/// A pattern-file or pattern-compilation error; maps to exit status 2.
#[derive(Debug, thiserror::Error)]
pub enum PatternError {
    #[error("{0}")]
    Invalid(String),
}

//! One error type for the whole core. Messages name the file, field or key and the offending value,
//! because they reach users verbatim (CLI stderr, Python exceptions).

use std::fmt;

/// What went wrong, grouped by who has to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// A file could not be opened, read or written.
    Io,
    /// A file exists but is not valid Parquet/CSV, or lacks a required column.
    Format,
    /// The data is readable but violates the data model (duplicates, non-grid ts, bad OHLC, ...).
    Data,
    /// A configuration value has the wrong type or is out of range.
    Config,
    /// A configuration key that does not exist.
    UnknownKey,
    /// Arguments to an API call are inconsistent (e.g. an empty universe).
    Invalid,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
}

impl Error {
    pub fn io(path: impl fmt::Display, err: impl fmt::Display) -> Self {
        Self { kind: ErrorKind::Io, message: format!("{path}: {err}") }
    }
    pub fn format(message: impl Into<String>) -> Self {
        Self { kind: ErrorKind::Format, message: message.into() }
    }
    pub fn data(message: impl Into<String>) -> Self {
        Self { kind: ErrorKind::Data, message: message.into() }
    }
    pub fn config(message: impl Into<String>) -> Self {
        Self { kind: ErrorKind::Config, message: message.into() }
    }
    pub fn unknown_key(message: impl Into<String>) -> Self {
        Self { kind: ErrorKind::UnknownKey, message: message.into() }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self { kind: ErrorKind::Invalid, message: message.into() }
    }
    /// Prefix the message with where it happened ("reading data/x.parquet: ...").
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

pub type Result<T, E = Error> = std::result::Result<T, E>;

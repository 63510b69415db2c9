//! One error type for the whole core. Messages name the file, field or key and the offending value,
//! because they reach users verbatim (CLI stderr, Python exceptions).
//!
//! Each variant carries what its situation has: the path and the operating-system (or Parquet)
//! error of a failed file operation, the parser's error of a malformed file, the key of an unknown
//! config key, the place an error passed through. The cause is kept as itself, reachable through
//! [`std::error::Error::source`] (to downcast to `std::io::Error`, `ParquetError`, `ArrowError`, or
//! the inner [`Error`] of a [`Error::Context`]). `Display` is self-contained — it already ends with
//! the cause's text, since it is what users read — so a reporter that walks `source()` and prints
//! every link repeats it; print the top error alone.

use std::fmt;
use std::sync::Arc;

/// The cause of an error from outside the core (an `io::Error`, a Parquet or Arrow error, or a
/// bare message turned into an error). Shared, so that [`Error`] stays `Clone`.
pub type Cause = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong, grouped by who has to fix it: the variant of an [`Error`] without its fields
/// (a [`Error::Context`] has the kind of the error it wraps).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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

#[derive(Debug, Clone)]
pub enum Error {
    /// A file could not be opened, read or written. Displays as `{path}: {source}`.
    Io { path: String, source: Cause },
    /// A file exists but is not valid Parquet/CSV, or lacks a required column. Displays as
    /// `{message}`, or `{message}: {source}` when the parser's error is kept.
    Format { message: String, source: Option<Cause> },
    /// The data is readable but violates the data model.
    Data { message: String },
    /// A configuration value has the wrong type or is out of range.
    Config { message: String },
    /// A configuration key that does not exist: `key` is its dotted path as far as it is known
    /// (`strategy.kmax`).
    UnknownKey { key: String, message: String },
    /// Arguments to an API call are inconsistent.
    Invalid { message: String },
    /// `source` happened while doing `context` ([`Error::context`]). Displays as `{context}: {source}`.
    Context { context: String, source: Box<Error> },
}

impl Error {
    /// A failed file operation on `path`; `err` (an `io::Error`, a `ParquetError`, or a message) is
    /// kept as the [`source`](std::error::Error::source).
    pub fn io(path: impl fmt::Display, err: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Error::Io { path: path.to_string(), source: Arc::from(err.into()) }
    }
    pub fn format(message: impl Into<String>) -> Self {
        Error::Format { message: message.into(), source: None }
    }
    /// A format error caused by a parser's `err`: displays as `{message}: {err}`, and `err` is the
    /// [`source`](std::error::Error::source).
    pub fn format_from(message: impl Into<String>, err: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Error::Format { message: message.into(), source: Some(Arc::from(err.into())) }
    }
    pub fn data(message: impl Into<String>) -> Self {
        Error::Data { message: message.into() }
    }
    pub fn config(message: impl Into<String>) -> Self {
        Error::Config { message: message.into() }
    }
    pub fn unknown_key(key: impl Into<String>, message: impl Into<String>) -> Self {
        Error::UnknownKey { key: key.into(), message: message.into() }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::Invalid { message: message.into() }
    }
    /// Say where it happened: displays as `{context}: {self}` ("reading data/x.parquet: ...").
    pub fn context(self, context: impl fmt::Display) -> Self {
        Error::Context { context: context.to_string(), source: Box::new(self) }
    }

    /// The kind of this error, or of the error a [`Error::Context`] wraps.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Io { .. } => ErrorKind::Io,
            Error::Format { .. } => ErrorKind::Format,
            Error::Data { .. } => ErrorKind::Data,
            Error::Config { .. } => ErrorKind::Config,
            Error::UnknownKey { .. } => ErrorKind::UnknownKey,
            Error::Invalid { .. } => ErrorKind::Invalid,
            Error::Context { source, .. } => source.kind(),
        }
    }

    /// The error under every [`Error::Context`]: the one that says what went wrong.
    pub fn innermost(&self) -> &Error {
        match self {
            Error::Context { source, .. } => source.innermost(),
            other => other,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { path, source } => write!(f, "{path}: {source}"),
            Error::Format { message, source: Some(source) } => write!(f, "{message}: {source}"),
            Error::Format { message, source: None }
            | Error::Data { message }
            | Error::Config { message }
            | Error::UnknownKey { message, .. }
            | Error::Invalid { message } => f.write_str(message),
            Error::Context { context, source } => write!(f, "{context}: {source}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source.as_ref()),
            Error::Format { source, .. } => source.as_deref().map(|cause| cause as _),
            Error::Context { source, .. } => Some(source.as_ref()),
            Error::Data { .. } | Error::Config { .. } | Error::UnknownKey { .. } | Error::Invalid { .. } => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    fn not_found() -> Error {
        Error::io("data/x.parquet", std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or directory"))
    }

    #[test]
    fn io_keeps_the_io_error_as_its_source() {
        let err = not_found();
        assert_eq!(err.kind(), ErrorKind::Io);
        assert_eq!(err.to_string(), "data/x.parquet: no such file or directory");
        let io = err.source().and_then(|s| s.downcast_ref::<std::io::Error>()).expect("an io::Error source");
        assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
        // A bare message is a source too (not an io::Error).
        let err = Error::io("x", "disk full");
        assert_eq!(err.to_string(), "x: disk full");
        assert_eq!(err.source().map(|s| s.to_string()).as_deref(), Some("disk full"));
        assert!(err.source().unwrap().downcast_ref::<std::io::Error>().is_none());
    }

    #[test]
    fn context_wraps_the_inner_error_and_keeps_the_text() {
        let err = not_found().context("mark bars").context("override set 2");
        assert_eq!(err.to_string(), "override set 2: mark bars: data/x.parquet: no such file or directory");
        assert_eq!(err.kind(), ErrorKind::Io, "a context has the kind of what it wraps");
        let inner = err.source().and_then(|s| s.downcast_ref::<Error>()).expect("the inner Error");
        assert_eq!(inner.to_string(), "mark bars: data/x.parquet: no such file or directory");
        assert!(matches!(inner, Error::Context { context, .. } if context == "mark bars"));
        assert!(matches!(err.innermost(), Error::Io { path, .. } if path == "data/x.parquet"));
        // The chain ends at the io::Error.
        let last = std::iter::successors(Some(&err as &dyn std::error::Error), |e| (*e).source()).last().unwrap();
        assert!(last.downcast_ref::<std::io::Error>().is_some());
        let config = Error::unknown_key("strategy.kmax", "unknown config key 'strategy.kmax'").context("cfg.yaml");
        assert_eq!(config.kind(), ErrorKind::UnknownKey);
        assert_eq!(config.to_string(), "cfg.yaml: unknown config key 'strategy.kmax'");
        assert!(matches!(config.innermost(), Error::UnknownKey { key, .. } if key == "strategy.kmax"));
    }

    #[test]
    fn message_variants_display_their_message_and_have_no_source() {
        for (err, kind) in [
            (Error::format("f"), ErrorKind::Format),
            (Error::data("d"), ErrorKind::Data),
            (Error::config("c"), ErrorKind::Config),
            (Error::invalid("i"), ErrorKind::Invalid),
        ] {
            assert_eq!(err.kind(), kind);
            assert_eq!(err.to_string().len(), 1);
            assert!(err.source().is_none());
        }
        let parse = "x".parse::<i64>().unwrap_err();
        let err = Error::format_from("a.csv: not a valid CSV file", parse.clone());
        assert_eq!(err.to_string(), format!("a.csv: not a valid CSV file: {parse}"));
        assert_eq!(err.source().and_then(|s| s.downcast_ref::<std::num::ParseIntError>()), Some(&parse));
    }
}

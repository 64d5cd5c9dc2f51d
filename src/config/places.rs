//! Where the nodes of a loaded route file are written, kept with the [`super::Config`] so that
//! a fault a later stage finds in what a node names (a certificate file that cannot be read,
//! an ACME cache directory that cannot be written) is reported at that node's line and column,
//! in the same `file:line:column: key.path: message` form as a [`super::ConfigError`].

use std::fmt;

use super::error::At;
use super::spans::{Position, Spans};
use super::warning::{Concern, Warning};

/// The positions of one loaded file's nodes, by key path.
#[derive(Debug, Clone, Default)]
pub struct Places {
    origin: String,
    spans: Spans,
}

impl Places {
    pub(super) fn new(origin: &str, spans: Spans) -> Places {
        Places {
            origin: origin.to_string(),
            spans,
        }
    }

    /// A warning about the node at `key`, placed at its value `node` below it (the same
    /// path, or one the file may leave out: then the key's own value).
    pub(super) fn warning(&self, key: &str, node: &str, concern: Concern) -> Warning {
        Warning {
            origin: self.origin.clone(),
            at: self.spans.value(node),
            key: self.spans.spelled(key).to_string(),
            concern,
        }
    }

    /// `error`, found about the value at `key` (`routes[2].tls.cert`), placed at that value,
    /// or at the nearest enclosing node when the file leaves the key out (a default applies).
    pub fn locate<E>(&self, key: &str, error: E) -> Located<E> {
        Located {
            origin: self.origin.clone(),
            at: self.spans.value(key),
            key: self.spans.spelled(key).to_string(),
            error,
        }
    }
}

/// An error about a node of the route file, found after the file was loaded; printed as
/// `file:line:column: key.path: error`.
#[derive(Debug)]
pub struct Located<E> {
    /// The file (or other origin) of the text.
    pub origin: String,
    /// Where the node is written.
    pub at: Option<Position>,
    /// The node's key path.
    pub key: String,
    /// What is wrong with what the node names.
    pub error: E,
}

impl<E: fmt::Display> fmt::Display for Located<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}{}: {}",
            self.origin,
            At(self.at),
            self.key,
            self.error
        )
    }
}

impl<E: std::error::Error> std::error::Error for Located<E> {}

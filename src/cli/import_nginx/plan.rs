//! The route file an import produces, as values with the comments that explain each one;
//! [`super::emit`] writes it as YAML.

use super::stream::Unmapped;

/// A comment written above a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Comment {
    /// Where a value came from, or what differs from nginx.
    Note(String),
    /// A directive with no equivalent: `# not mapped: file:line: directive: why`.
    NotMapped(Unmapped),
}

/// A value and the comments written above it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commented<T> {
    /// The value.
    pub value: T,
    /// Its comments, in order.
    pub comments: Vec<Comment>,
}

impl<T> Commented<T> {
    /// `value` with no comment yet.
    pub fn new(value: T) -> Self {
        Commented {
            value,
            comments: Vec::new(),
        }
    }
}

/// Where a route (or `default`, `non_tls`) sends its connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `to:`: addresses tried in order.
    pub to: Vec<String>,
    /// `proxy_protocol: v1` (nginx writes version 1) rather than none.
    pub proxy_protocol: bool,
}

/// One entry of `routes:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// `sni:`: names and `*.suffix` patterns.
    pub sni: Vec<String>,
    /// Where its connections go.
    pub target: Target,
}

/// A whole route file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The nginx file it was imported from, as named on the command line.
    pub source: String,
    /// Comments about the file as a whole (directives outside any value).
    pub comments: Vec<Comment>,
    /// `listen:` addresses (`0.0.0.0:443`, `[::]:443`).
    pub listen: Vec<Commented<String>>,
    /// `accept_proxy_protocol_from:` networks, when nginx listened with `proxy_protocol`.
    pub accept_proxy_protocol_from: Option<Commented<Vec<String>>>,
    /// `timeouts:` keys and values (`connect`, `5s`).
    pub timeouts: Vec<Commented<(&'static str, String)>>,
    /// `routes:`.
    pub routes: Vec<Commented<Route>>,
    /// `default:`.
    pub default: Option<Commented<Target>>,
    /// `non_tls:`.
    pub non_tls: Option<Commented<Target>>,
}

impl Plan {
    /// Every `not mapped` comment in the plan, wherever it is.
    pub fn not_mapped(&self) -> Vec<&Unmapped> {
        let listen = self.listen.iter().flat_map(|l| &l.comments);
        let accept = self
            .accept_proxy_protocol_from
            .iter()
            .flat_map(|a| &a.comments);
        let timeouts = self.timeouts.iter().flat_map(|t| &t.comments);
        let routes = self.routes.iter().flat_map(|r| &r.comments);
        let targets = self
            .default
            .iter()
            .chain(&self.non_tls)
            .flat_map(|t| &t.comments);
        self.comments
            .iter()
            .chain(listen)
            .chain(accept)
            .chain(timeouts)
            .chain(routes)
            .chain(targets)
            .filter_map(|c| match c {
                Comment::NotMapped(u) => Some(u),
                Comment::Note(_) => None,
            })
            .collect()
    }
}

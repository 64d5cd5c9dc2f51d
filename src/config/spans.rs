//! Where each node of the route file starts, by key path (`routes[2].sni[1]`,
//! `timeouts.idle`), so that a rule broken across keys, found after parsing, is still reported
//! at the line and column of the node it is about. serde_yaml_ng builds the model but keeps no
//! positions, so the text is read a second time with yaml-rust2's event parser, which marks
//! every event; that second read happens only when there is an error to place.

use std::collections::{HashMap, HashSet};

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// A place in the route file: 1-based line and column; earlier places order first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

/// The positions of the keys and the values of one route file, by key path in the form
/// serde_yaml_ng's messages use: mapping keys joined with `.`, list items as `[index]`.
#[derive(Debug, Clone, Default)]
pub struct Spans {
    keys: HashMap<String, Position>,
    values: HashMap<String, Position>,
    duplicate: Option<Duplicate>,
}

/// A key given twice in one mapping, which serde_yaml_ng would let pass for a map of names
/// (the second value silently replacing the first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duplicate {
    /// The key path of the key.
    pub key: String,
    /// Where it is first given.
    pub first: Position,
    /// Where it is given again.
    pub again: Position,
}

impl Spans {
    /// Reads the positions from `text`. Text the event parser rejects yields the positions
    /// of the nodes before the fault (serde_yaml_ng reports such text itself).
    pub fn of(text: &str) -> Spans {
        let mut events = Events::default();
        // An error only cuts the event list short; what was read before it still places nodes.
        let _ = Parser::new_from_str(text).load(&mut events, false);
        let mut walk = Walk {
            events: &events.0,
            next: 0,
            spans: Spans::default(),
        };
        while matches!(
            walk.events.get(walk.next),
            Some((
                Event::StreamStart | Event::DocumentStart | Event::Nothing,
                _
            ))
        ) {
            walk.next += 1;
        }
        walk.node(String::new());
        walk.spans
    }

    /// Where the value at `path` starts; for a path the file does not spell out (a list item
    /// written as a single value, a key left out) the nearest enclosing node's position.
    pub fn value(&self, path: &str) -> Option<Position> {
        self.find(path, |p| self.values.get(p))
    }

    /// Where the key naming `path` is written (`bob` in `users: {bob: ...}`); the value's
    /// position when `path` is a list item, and as [`Spans::value`] when absent.
    pub fn key(&self, path: &str) -> Option<Position> {
        self.find(path, |p| self.keys.get(p).or_else(|| self.values.get(p)))
    }

    /// `path` as the file spells it: a list item path (`routes[0].to[0]`) becomes its list's
    /// path when the file gives that key a single value instead of a list.
    pub fn spelled<'a>(&self, path: &'a str) -> &'a str {
        let list = parent(path);
        if path.ends_with(']') && !self.values.contains_key(path) && self.values.contains_key(list)
        {
            list
        } else {
            path
        }
    }

    /// The first key written after every key of the node at `path` (its path and where it
    /// is): the key an indentation slip pushed out of that node, when it is the one the node
    /// misses.
    pub fn key_after(&self, path: &str) -> Option<(&str, Position)> {
        let inside = |key: &str| {
            key.strip_prefix(path).is_some_and(|rest| {
                path.is_empty() || rest.starts_with('.') || rest.starts_with('[')
            })
        };
        let last = self
            .keys
            .iter()
            .filter(|(key, _)| inside(key))
            .map(|(_, at)| *at)
            .max()?;
        self.keys
            .iter()
            .filter(|(_, at)| **at > last)
            .min_by_key(|(_, at)| **at)
            .map(|(key, at)| (key.as_str(), *at))
    }

    /// The first key given twice in one mapping, if any.
    pub fn duplicate(&self) -> Option<&Duplicate> {
        self.duplicate.as_ref()
    }

    fn find<'a>(
        &'a self,
        path: &str,
        lookup: impl Fn(&str) -> Option<&'a Position>,
    ) -> Option<Position> {
        let mut path = path;
        loop {
            if let Some(at) = lookup(path) {
                return Some(*at);
            }
            if path.is_empty() {
                return None;
            }
            path = parent(path);
        }
    }
}

/// `routes[2].sni` for `routes[2].sni[1]`, `routes[2]` for `routes[2].sni`, `` for `routes`.
fn parent(path: &str) -> &str {
    let cut = if path.ends_with(']') {
        path.rfind('[')
    } else {
        path.rfind(['.', '['])
    };
    cut.map_or("", |at| &path[..at])
}

/// `parent.key`, or `key` at the top.
fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// A marker's place as a [`Position`]: yaml-rust2 counts lines from 1 but columns from 0.
fn position(mark: &Marker) -> Position {
    Position {
        line: mark.line(),
        column: mark.col() + 1,
    }
}

/// The event stream with each event's position.
#[derive(Default)]
struct Events(Vec<(Event, Marker)>);

impl MarkedEventReceiver for Events {
    fn on_event(&mut self, event: Event, mark: Marker) {
        self.0.push((event, mark));
    }
}

/// A recursive descent over the events, one node per [`Walk::node`] call.
struct Walk<'a> {
    events: &'a [(Event, Marker)],
    next: usize,
    spans: Spans,
}

impl Walk<'_> {
    /// Consumes the node starting at the next event, recording it and its children.
    fn node(&mut self, path: String) {
        let Some((event, mark)) = self.events.get(self.next) else {
            return;
        };
        self.next += 1;
        if !matches!(
            event,
            Event::Scalar(..)
                | Event::Alias(_)
                | Event::SequenceStart(..)
                | Event::MappingStart(..)
        ) {
            // The end of the stream or of a document, where a node was expected: no node.
            return;
        }
        // yaml-rust2 marks a block mapping at its first key's colon: the mapping starts at
        // that key (a flow mapping's `{` comes before its first key and stays).
        let start = match (event, self.events.get(self.next)) {
            (Event::MappingStart(..), Some((Event::Scalar(..), key)))
                if key.index() < mark.index() =>
            {
                key
            }
            _ => mark,
        };
        self.spans
            .values
            .entry(path.clone())
            .or_insert(position(start));
        match event {
            Event::SequenceStart(..) => {
                let mut index = 0;
                while !self.close(&Event::SequenceEnd) {
                    self.node(format!("{path}[{index}]"));
                    index += 1;
                }
            }
            Event::MappingStart(..) => {
                let mut seen = HashSet::new();
                while !self.close(&Event::MappingEnd) {
                    let Some((key, mark)) = self.events.get(self.next) else {
                        return;
                    };
                    let key_path = match key {
                        Event::Scalar(text, ..) => {
                            self.next += 1;
                            let key_path = join(&path, text);
                            let first = self.spans.keys.get(&key_path).copied();
                            if let (false, Some(first), None) =
                                (seen.insert(text), first, &self.spans.duplicate)
                            {
                                self.spans.duplicate = Some(Duplicate {
                                    key: key_path.clone(),
                                    first,
                                    again: position(mark),
                                });
                            }
                            key_path
                        }
                        // A key that is itself a list or mapping: no key path names it.
                        _ => {
                            self.node(join(&path, "?"));
                            join(&path, "?")
                        }
                    };
                    let at = position(mark);
                    self.spans.keys.entry(key_path.clone()).or_insert(at);
                    self.node(key_path);
                }
            }
            _ => {}
        }
    }

    /// Consumes `end` if it is next; true also when the events ran out (a cut-short stream).
    fn close(&mut self, end: &Event) -> bool {
        match self.events.get(self.next) {
            Some((event, _)) if event == end => {
                self.next += 1;
                true
            }
            Some(_) => false,
            None => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(line: usize, column: usize) -> Option<Position> {
        Some(Position { line, column })
    }

    #[test]
    fn keys_and_values_are_placed_by_path() {
        let text = "\
listen: 127.0.0.1:1
timeouts: { idle: 7d }
routes:
  - sni: [a.example.com, b.example.com]
    to: 127.0.0.1:2
  - sni: c.example.com
    tls:
      cert: /c.pem
mtproto:
  users:
    \"a.b\": 0123
";
        let spans = Spans::of(text);
        assert_eq!(spans.value("listen"), at(1, 9));
        assert_eq!(spans.key("timeouts.idle"), at(2, 13));
        assert_eq!(spans.value("timeouts.idle"), at(2, 19));
        assert_eq!(spans.value("routes[0].sni[1]"), at(4, 26));
        assert_eq!(spans.key("routes[0].sni[1]"), at(4, 26));
        assert_eq!(spans.value("routes[1].tls.cert"), at(8, 13));
        assert_eq!(spans.value("routes[1].tls"), at(8, 7));
        assert_eq!(spans.value("routes[1]"), at(6, 5));
        assert_eq!(spans.value("timeouts"), at(2, 11));
        assert_eq!(spans.key("mtproto.users.a.b"), at(11, 5));
        assert_eq!(spans.spelled("routes[0].sni[1]"), "routes[0].sni[1]");
        assert_eq!(spans.spelled("routes[1].sni[0]"), "routes[1].sni");
        assert_eq!(spans.spelled("routes[1].tls.key"), "routes[1].tls.key");
        // Not spelled out: the nearest enclosing node.
        assert_eq!(spans.value("routes[1].sni[0]"), at(6, 10));
        assert_eq!(
            spans.value("routes[1].tls.key"),
            spans.value("routes[1].tls")
        );
        assert_eq!(spans.value("nowhere"), spans.value(""));
    }

    #[test]
    fn a_key_given_twice_is_found_where_it_repeats() {
        let spans = Spans::of("a: 1\nb:\n  x: 1\n  'x': 2\n  x: 3\n");
        let dup = spans.duplicate().expect("found");
        assert_eq!(
            (dup.key.as_str(), Some(dup.first), Some(dup.again)),
            ("b.x", at(3, 3), at(4, 3))
        );
        assert!(Spans::of("a: {x: 1}\nb: {x: 1}\n").duplicate().is_none());
    }

    #[test]
    fn broken_text_places_what_came_before_the_fault() {
        let spans = Spans::of("listen: 127.0.0.1:1\nroutes: [a\n");
        assert_eq!(spans.value("listen"), at(1, 9));
        assert_eq!(Spans::of("").value("listen"), None);
    }

    #[test]
    fn parents_of_paths() {
        assert_eq!(parent("routes[2].sni[1]"), "routes[2].sni");
        assert_eq!(parent("routes[2].sni"), "routes[2]");
        assert_eq!(parent("routes[2]"), "routes");
        assert_eq!(parent("routes"), "");
        assert_eq!(parent("mtproto.users.bob"), "mtproto.users");
    }
}

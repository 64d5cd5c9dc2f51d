//! Tokens into directives: `name args... ;` or `name args... { directives }`, each with the
//! place it was written, so every later message can point at the nginx line.

use super::lexer::{tokenize, Located, Place, SyntaxError, Token};

/// One nginx directive as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    /// The directive's name (`listen`, `server`, `map`, ...); in a `map` block, the key.
    pub name: String,
    /// The words after the name, unquoted.
    pub args: Vec<String>,
    /// Where the directive starts.
    pub at: Place,
    /// The directives inside `{ }`, for block directives.
    pub block: Option<Vec<Directive>>,
}

impl Directive {
    /// The directive as one line of nginx text (blocks shortened to `{ ... }`), for comments.
    pub fn text(&self) -> String {
        let mut out = quote_word(&self.name);
        for arg in &self.args {
            out.push(' ');
            out.push_str(&quote_word(arg));
        }
        match self.block {
            Some(_) => out.push_str(" { ... }"),
            None => out.push(';'),
        }
        out
    }
}

/// A word as nginx would need it written: quoted when empty or when it holds a separator.
fn quote_word(word: &str) -> String {
    if word.is_empty()
        || word
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, ';' | '{' | '}' | '"' | '\'' | '#'))
    {
        format!("{word:?}")
    } else {
        word.to_string()
    }
}

/// Nesting deeper than this is refused (nginx configurations nest three or four levels).
const MAX_DEPTH: usize = 64;

/// Parses the text of one file into its top-level directives.
pub fn parse(text: &str, file: &str) -> Result<Vec<Directive>, SyntaxError> {
    let tokens = tokenize(text, file)?;
    let mut parser = Parser {
        tokens: tokens.into_iter().peekable(),
        file,
        last_line: text.lines().count().max(1),
    };
    parser.block(0, None)
}

struct Parser<'a, I: Iterator<Item = Located>> {
    tokens: std::iter::Peekable<I>,
    file: &'a str,
    last_line: usize,
}

impl<I: Iterator<Item = Located>> Parser<'_, I> {
    fn error(&self, line: usize, message: impl Into<String>) -> SyntaxError {
        SyntaxError {
            at: Place {
                file: self.file.to_string(),
                line,
            },
            message: message.into(),
        }
    }

    /// Directives up to the `}` that closes the block opened at `opened` (or to the end of
    /// the file at the top level).
    fn block(
        &mut self,
        depth: usize,
        opened: Option<usize>,
    ) -> Result<Vec<Directive>, SyntaxError> {
        let mut directives = Vec::new();
        loop {
            let Some(first) = self.tokens.next() else {
                return match opened {
                    Some(line) => Err(self.error(
                        self.last_line,
                        format!("unexpected end of file, expecting \"}}\" (the block opened at line {line})"),
                    )),
                    None => Ok(directives),
                };
            };
            let name = match first.token {
                Token::Word(name) => name,
                Token::Close if opened.is_some() => return Ok(directives),
                Token::Close => return Err(self.error(first.line, "unexpected \"}\"")),
                Token::Semicolon => return Err(self.error(first.line, "unexpected \";\"")),
                Token::Open => return Err(self.error(first.line, "unexpected \"{\"")),
            };
            let at = Place {
                file: self.file.to_string(),
                line: first.line,
            };
            let mut args = Vec::new();
            let block = loop {
                let Some(next) = self.tokens.next() else {
                    return Err(self.error(
                        self.last_line,
                        format!("unexpected end of file, expecting \";\" or \"{{\" after \"{name}\" (line {})", at.line),
                    ));
                };
                match next.token {
                    Token::Word(word) => args.push(word),
                    Token::Semicolon => break None,
                    Token::Open if depth + 1 >= MAX_DEPTH => {
                        return Err(self.error(next.line, "blocks nested too deeply"))
                    }
                    Token::Open => break Some(self.block(depth + 1, Some(next.line))?),
                    Token::Close => {
                        return Err(self.error(
                            next.line,
                            format!("unexpected \"}}\": \"{name}\" is not terminated by \";\""),
                        ))
                    }
                }
            };
            directives.push(Directive {
                name,
                args,
                at,
                block,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nests_blocks_and_keeps_lines() {
        let tree = parse(
            "stream {\n  server {\n    listen 443;\n  }\n}\nuser nginx;\n",
            "n.conf",
        )
        .unwrap();
        assert_eq!(tree.len(), 2);
        let stream = &tree[0];
        assert_eq!((stream.name.as_str(), stream.at.line), ("stream", 1));
        let server = &stream.block.as_ref().unwrap()[0];
        let listen = &server.block.as_ref().unwrap()[0];
        assert_eq!(listen.args, ["443"]);
        assert_eq!(listen.at.to_string(), "n.conf:3");
        assert_eq!(tree[1].text(), "user nginx;");
    }

    #[test]
    fn unbalanced_or_unterminated_input_is_refused_with_a_line() {
        for (text, want) in [
            (
                "stream {\n listen 443;\n",
                "n.conf:2: unexpected end of file, expecting \"}\"",
            ),
            (
                "listen 443\n",
                "n.conf:1: unexpected end of file, expecting \";\"",
            ),
            ("a;\n}\n", "n.conf:2: unexpected \"}\""),
            (
                "a { b }\n",
                "n.conf:1: unexpected \"}\": \"b\" is not terminated",
            ),
            (";\n", "n.conf:1: unexpected \";\""),
        ] {
            let err = parse(text, "n.conf").unwrap_err().to_string();
            assert!(err.starts_with(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        let text = "a {".repeat(10_000);
        assert!(parse(&text, "n.conf")
            .unwrap_err()
            .message
            .contains("nested too deeply"));
    }

    #[test]
    fn text_quotes_what_needs_quotes() {
        let tree = parse("map \"\" x;\nlog_format a 'b c';\nm $v {\n}\n", "n.conf").unwrap();
        assert_eq!(tree[0].text(), "map \"\" x;");
        assert_eq!(tree[1].text(), "log_format a \"b c\";");
        assert_eq!(tree[2].text(), "m $v { ... }");
    }
}

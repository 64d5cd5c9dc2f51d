//! nginx configuration syntax, token by token, as nginx's own `ngx_conf_read_token` reads it:
//! words separated by whitespace, `"..."` and `'...'` strings with backslash escapes, `;`, `{`
//! and `}`, and `#` comments that start where a token could start.
//!
//! No maintained Rust crate reads nginx configuration (the `nginx-config` crate is unmaintained
//! and models the `http` module only, not `stream`), and the syntax is this small, so it is
//! read here; nothing in it is YAML, TLS or crypto.

use std::fmt;

/// Where something was written: the file as it was named and a 1-based line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// The file, as given on the command line or by `include`.
    pub file: String,
    /// 1-based line number.
    pub line: usize,
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// Input nginx itself would refuse to read, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// Where the problem is.
    pub at: Place,
    /// What is wrong, in nginx's terms.
    pub message: String,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.message)
    }
}

impl std::error::Error for SyntaxError {}

/// One token of the configuration text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    /// A word or a quoted string, unquoted and unescaped.
    Word(String),
    /// `;`: the end of a simple directive.
    Semicolon,
    /// `{`: a block starts.
    Open,
    /// `}`: a block ends.
    Close,
}

/// A token and the line it starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// The token.
    pub token: Token,
    /// 1-based line where it starts.
    pub line: usize,
}

/// Splits `text` (the contents of `file`) into tokens; an unterminated string is an error.
pub fn tokenize(text: &str, file: &str) -> Result<Vec<Located>, SyntaxError> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line = 1;
    let error = |line: usize, message: &str| SyntaxError {
        at: Place {
            file: file.to_string(),
            line,
        },
        message: message.to_string(),
    };
    while let Some(&c) = chars.peek() {
        match c {
            '\n' => {
                line += 1;
                chars.next();
            }
            c if c.is_whitespace() => {
                chars.next();
            }
            '#' => {
                while chars.peek().is_some_and(|&c| c != '\n') {
                    chars.next();
                }
            }
            ';' | '{' | '}' => {
                chars.next();
                let token = match c {
                    ';' => Token::Semicolon,
                    '{' => Token::Open,
                    _ => Token::Close,
                };
                tokens.push(Located { token, line });
            }
            '"' | '\'' => {
                let start = line;
                chars.next();
                let mut word = String::new();
                loop {
                    match chars.next() {
                        None => {
                            return Err(error(start, "unexpected end of file in a quoted string"))
                        }
                        Some(q) if q == c => break,
                        Some('\\') => match chars.next() {
                            None => {
                                return Err(error(
                                    start,
                                    "unexpected end of file in a quoted string",
                                ))
                            }
                            Some('t') => word.push('\t'),
                            Some('r') => word.push('\r'),
                            Some('n') => word.push('\n'),
                            Some(escaped @ ('"' | '\'' | '\\')) => word.push(escaped),
                            Some(other) => {
                                if other == '\n' {
                                    line += 1;
                                }
                                word.push('\\');
                                word.push(other);
                            }
                        },
                        Some(other) => {
                            if other == '\n' {
                                line += 1;
                            }
                            word.push(other);
                        }
                    }
                }
                // nginx wants a separator after a closing quote.
                if chars
                    .peek()
                    .is_some_and(|&n| !(n.is_whitespace() || matches!(n, ';' | '{' | '}')))
                {
                    return Err(error(
                        line,
                        &format!(
                            "unexpected \"{}\" after a quoted string",
                            chars.peek().copied().unwrap_or(' ')
                        ),
                    ));
                }
                tokens.push(Located {
                    token: Token::Word(word),
                    line: start,
                });
            }
            _ => {
                let mut word = String::new();
                while let Some(&n) = chars.peek() {
                    if n.is_whitespace() || matches!(n, ';' | '}') {
                        break;
                    }
                    // `${name}` is a variable inside a word; any other `{` opens a block.
                    if n == '{' && !word.ends_with('$') {
                        break;
                    }
                    chars.next();
                    word.push(n);
                    if n == '{' {
                        while let Some(v) = chars.next_if(|&v| v != '}' && v != '\n') {
                            word.push(v);
                        }
                        if let Some(v) = chars.next_if_eq(&'}') {
                            word.push(v);
                        }
                    }
                }
                tokens.push(Located {
                    token: Token::Word(word),
                    line,
                });
            }
        }
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<Token> {
        tokenize(text, "t.conf")
            .unwrap()
            .into_iter()
            .map(|l| l.token)
            .collect()
    }

    fn w(s: &str) -> Token {
        Token::Word(s.to_string())
    }

    #[test]
    fn splits_words_punctuation_and_comments() {
        assert_eq!(
            words("server { listen 443; # a comment { ; }\n proxy_pass $b;}"),
            vec![
                w("server"),
                Token::Open,
                w("listen"),
                w("443"),
                Token::Semicolon,
                w("proxy_pass"),
                w("$b"),
                Token::Semicolon,
                Token::Close,
            ]
        );
    }

    #[test]
    fn quoted_strings_unescape_and_may_be_empty() {
        assert_eq!(
            words(r#"map "" 'a b' "q\"uote" "x\y";"#),
            vec![
                w("map"),
                w(""),
                w("a b"),
                w("q\"uote"),
                w("x\\y"),
                Token::Semicolon
            ]
        );
    }

    #[test]
    fn a_hash_inside_a_word_is_not_a_comment_and_variables_keep_braces() {
        assert_eq!(
            words("a#b ${var}x;"),
            vec![w("a#b"), w("${var}x"), Token::Semicolon]
        );
    }

    #[test]
    fn lines_are_counted_across_comments_and_strings() {
        let tokens = tokenize("# one\n\"two\nlines\"\nthree;", "t.conf").unwrap();
        assert_eq!(tokens[0].line, 2);
        assert_eq!(tokens[1].line, 4);
    }

    #[test]
    fn an_unterminated_string_is_an_error_with_its_line() {
        let err = tokenize("a;\nb \"open\n", "t.conf").unwrap_err();
        assert_eq!(
            err.to_string(),
            "t.conf:2: unexpected end of file in a quoted string"
        );
    }

    #[test]
    fn text_glued_to_a_closing_quote_is_an_error() {
        assert!(tokenize("a \"b\"c;", "t.conf").is_err());
    }
}

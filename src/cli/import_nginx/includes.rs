//! Reading a configuration file with its `include`s expanded in place, as nginx does: a
//! relative path is taken from the directory of the file given on the command line (nginx's
//! configuration prefix), a glob (`conf.d/*.conf`) takes its matches in name order and may
//! match nothing, a plain path must exist. Blocks that are not imported (`http`, `mail`,
//! `events`) keep their `include`s unread: they may name files of another machine.

use std::path::{Path, PathBuf};

use super::lexer::{Place, SyntaxError};
use super::syntax::{self, Directive};

/// Includes nested deeper than this are refused (a file including itself ends here).
const MAX_INCLUDE_DEPTH: usize = 16;
/// At most this many files are read in all.
const MAX_FILES: usize = 512;
/// A file larger than this is refused before it is read.
const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;

/// Blocks whose contents are reported as not imported, so their `include`s are not followed.
const NOT_IMPORTED_BLOCKS: [&str; 3] = ["http", "mail", "events"];

/// Reads `path` and every file it includes into one directive tree.
pub fn load(path: &Path) -> Result<Vec<Directive>, SyntaxError> {
    let prefix = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut reader = Reader { prefix, files: 0 };
    let shown = path.display().to_string();
    reader.file(path, &shown, None, 0)
}

struct Reader {
    /// Where relative `include` paths start.
    prefix: PathBuf,
    /// Files read so far.
    files: usize,
}

impl Reader {
    fn file(
        &mut self,
        path: &Path,
        shown: &str,
        from: Option<&Place>,
        depth: usize,
    ) -> Result<Vec<Directive>, SyntaxError> {
        let fail = |message: String| SyntaxError {
            at: from.cloned().unwrap_or(Place {
                file: shown.to_string(),
                line: 1,
            }),
            message,
        };
        self.files += 1;
        if self.files > MAX_FILES {
            return Err(fail(format!("more than {MAX_FILES} files included")));
        }
        let size = std::fs::metadata(path)
            .map_err(|e| fail(format!("cannot read {shown}: {e}")))?
            .len();
        if size > MAX_FILE_BYTES {
            return Err(fail(format!(
                "{shown} is {size} bytes, larger than {MAX_FILE_BYTES}: not a configuration file"
            )));
        }
        let text =
            std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read {shown}: {e}")))?;
        let tree = syntax::parse(&text, shown)?;
        self.expand(tree, depth)
    }

    fn expand(
        &mut self,
        tree: Vec<Directive>,
        depth: usize,
    ) -> Result<Vec<Directive>, SyntaxError> {
        let mut out = Vec::with_capacity(tree.len());
        for mut directive in tree {
            if directive.name == "include" && directive.block.is_none() {
                out.extend(self.include(&directive, depth)?);
                continue;
            }
            if !NOT_IMPORTED_BLOCKS.contains(&directive.name.as_str()) {
                if let Some(block) = directive.block.take() {
                    directive.block = Some(self.expand(block, depth)?);
                }
            }
            out.push(directive);
        }
        Ok(out)
    }

    fn include(
        &mut self,
        directive: &Directive,
        depth: usize,
    ) -> Result<Vec<Directive>, SyntaxError> {
        let fail = |message: String| SyntaxError {
            at: directive.at.clone(),
            message,
        };
        let [pattern] = directive.args.as_slice() else {
            return Err(fail("\"include\" takes exactly one path".to_string()));
        };
        if depth + 1 > MAX_INCLUDE_DEPTH {
            return Err(fail(format!(
                "includes nested deeper than {MAX_INCLUDE_DEPTH} (does a file include itself?)"
            )));
        }
        let full = if Path::new(pattern).is_absolute() {
            PathBuf::from(pattern)
        } else {
            self.prefix.join(pattern)
        };
        let mut paths = Vec::new();
        if pattern.contains(['*', '?', '[']) {
            let text = full.to_string_lossy().to_string();
            let matches = glob::glob(&text)
                .map_err(|e| fail(format!("bad include pattern {pattern:?}: {e}")))?;
            for entry in matches {
                let path = entry.map_err(|e| {
                    fail(format!("cannot read {}: {}", e.path().display(), e.error()))
                })?;
                paths.push(path);
            }
            paths.sort();
        } else {
            paths.push(full);
        }
        let mut out = Vec::new();
        for path in paths {
            let shown = path.display().to_string();
            out.extend(self.file(&path, &shown, Some(&directive.at), depth + 1)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn globs_expand_in_name_order_relative_to_the_main_file() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "conf.d/b.conf", "b;\n");
        write(dir.path(), "conf.d/a.conf", "a;\n");
        let main = write(
            dir.path(),
            "nginx.conf",
            "stream {\n include conf.d/*.conf;\n include conf.d/none-*.conf;\n}\n",
        );
        let tree = load(&main).unwrap();
        let names: Vec<&str> = tree[0]
            .block
            .as_ref()
            .unwrap()
            .iter()
            .map(|d| d.name.as_str())
            .collect();
        assert_eq!(names, ["a", "b"]);
        assert!(tree[0].block.as_ref().unwrap()[0]
            .at
            .file
            .ends_with("conf.d/a.conf"));
    }

    #[test]
    fn a_missing_plain_include_names_the_include_line() {
        let dir = tempfile::tempdir().unwrap();
        let main = write(dir.path(), "nginx.conf", "x;\ninclude missing.conf;\n");
        let err = load(&main).unwrap_err();
        assert_eq!(err.at.line, 2);
        assert!(err.message.contains("missing.conf"), "{err}");
    }

    #[test]
    fn a_file_that_includes_itself_stops_with_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let main = write(dir.path(), "loop.conf", "include loop.conf;\n");
        assert!(load(&main).unwrap_err().message.contains("nested deeper"));
    }

    #[test]
    fn includes_inside_http_are_left_unread() {
        let dir = tempfile::tempdir().unwrap();
        let main = write(
            dir.path(),
            "nginx.conf",
            "http {\n include /nonexistent/mime.types;\n}\n",
        );
        let tree = load(&main).unwrap();
        assert_eq!(tree[0].block.as_ref().unwrap()[0].name, "include");
    }
}

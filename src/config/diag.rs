//! Config diagnostics as `file:line:col: message`, like a compiler.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diag {
    pub file: PathBuf,
    /// 1-based; 0 when the problem has no position (a whole-file problem).
    pub line: usize,
    pub col: usize,
    pub message: String,
    pub warning: bool,
}

impl Diag {
    pub fn file(path: &Path, message: String) -> Diag {
        Diag {
            file: path.to_path_buf(),
            line: 0,
            col: 0,
            message,
            warning: false,
        }
    }
}

impl fmt::Display for Diag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.warning { "warning: " } else { "" };
        if self.line == 0 {
            write!(f, "{}: {kind}{}", self.file.display(), self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {kind}{}",
                self.file.display(),
                self.line,
                self.col,
                self.message
            )
        }
    }
}

/// Collects every problem of one config file.
#[derive(Debug, Clone)]
pub struct Diags {
    path: PathBuf,
    /// Byte offset of the start of each line, to turn spans into line:col.
    line_starts: Vec<usize>,
    text_len: usize,
    pub items: Vec<Diag>,
}

impl Diags {
    pub fn new(path: &Path, text: &str) -> Diags {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Diags {
            path: path.to_path_buf(),
            line_starts,
            text_len: text.len(),
            items: vec![],
        }
    }

    pub fn one(d: Diag) -> Diags {
        Diags {
            path: d.file.clone(),
            line_starts: vec![0],
            text_len: 0,
            items: vec![d],
        }
    }

    fn at(&self, span: Option<Range<usize>>, message: String, warning: bool) -> Diag {
        let (line, col) = match span {
            Some(r) => {
                let off = r.start.min(self.text_len);
                let line = self.line_starts.partition_point(|&s| s <= off);
                (line, off - self.line_starts[line - 1] + 1)
            }
            None => (0, 0),
        };
        Diag {
            file: self.path.clone(),
            line,
            col,
            message,
            warning,
        }
    }

    pub fn error(&mut self, span: Option<Range<usize>>, message: impl Into<String>) {
        let d = self.at(span, message.into(), false);
        self.items.push(d);
    }

    pub fn warn(&mut self, span: Option<Range<usize>>, message: impl Into<String>) {
        let d = self.at(span, message.into(), true);
        self.items.push(d);
    }

    pub fn has_errors(&self) -> bool {
        self.items.iter().any(|d| !d.warning)
    }

    pub fn take_warnings(&mut self) -> Vec<Diag> {
        let (w, e) = std::mem::take(&mut self.items)
            .into_iter()
            .partition(|d| d.warning);
        self.items = e;
        w
    }

    pub fn errors(&self) -> impl Iterator<Item = &Diag> {
        self.items.iter().filter(|d| !d.warning)
    }
}

impl fmt::Display for Diags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.items {
            writeln!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diags {}

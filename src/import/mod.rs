//! `hapair import`: turn an existing `haproxy.cfg` (and optionally a `keepalived.conf`) into a
//! hapair TOML config.
//!
//! Nothing is dropped silently. Every directive that hapair cannot express becomes a
//! [`Diag`] that names its file and line. The command prints the diagnostics on stderr, and the
//! output TOML carries them as `# unsupported: ...` comments next to the section they came from.
//!
//! The conversion is pure: it takes the texts and their display names, and returns the TOML and
//! the diagnostics. The mapping is documented in README.md ("Migrating an existing
//! haproxy/keepalived setup").

mod emit;
mod haproxy;
mod keepalived;

use std::fmt;
use std::time::Duration;

pub use emit::Listen;

/// How serious an import diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The directive was dropped (or changed meaning): the operator must look at it.
    Warning,
    /// The directive was converted, but differently than one might assume.
    Note,
}

/// One import diagnostic: `haproxy.cfg:12: warning: ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diag {
    pub file: String,
    /// 1-based line of the directive.
    pub line: usize,
    pub severity: Severity,
    pub message: String,
}

impl fmt::Display for Diag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.severity {
            Severity::Warning => "warning",
            Severity::Note => "note",
        };
        write!(f, "{}:{}: {kind}: {}", self.file, self.line, self.message)
    }
}

/// One input file: its name as the operator gave it (used in diagnostics) and its text.
pub struct Source<'a> {
    pub name: &'a str,
    pub text: &'a str,
}

/// The result of an import.
pub struct Imported {
    /// The hapair config, with `# TODO` and `# unsupported:` comments.
    pub toml: String,
    /// Every diagnostic, in file and line order.
    pub diags: Vec<Diag>,
    /// How many `[[listen]]` sections were written.
    pub listens: usize,
}

/// Converts the given files. Either may be absent; without keepalived the `[node]` and `[pair]`
/// sections are a skeleton with `# TODO` values that still passes `hapair check`.
pub fn import(haproxy: Option<Source<'_>>, keepalived: Option<Source<'_>>) -> Imported {
    let mut diags = Vec::new();
    let listens = match &haproxy {
        Some(src) => haproxy::convert(src, &mut diags),
        None => Vec::new(),
    };
    let pair = keepalived
        .as_ref()
        .map(|src| keepalived::convert(src, &mut diags));
    let sources: Vec<&str> = haproxy.iter().chain(&keepalived).map(|s| s.name).collect();
    diags.sort_by(|a, b| {
        let fa = sources.iter().position(|n| *n == a.file);
        let fb = sources.iter().position(|n| *n == b.file);
        (fa, a.line).cmp(&(fb, b.line))
    });
    // One section line can be reached twice (a backend shared by two binds).
    diags.dedup();
    let toml = emit::document(&sources, &listens, pair.as_ref(), &diags);
    Imported {
        toml,
        listens: listens.len(),
        diags,
    }
}

/// Formats a duration the way the example configs write them: `"5s"`, `"3600s"`, `"100ms"`.
pub(crate) fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// A TOML basic string, escaped.
pub(crate) fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

#[cfg(test)]
mod tests;

/// `hapair import`: read the files, print every diagnostic on stderr, write the TOML to
/// `output` (refusing to overwrite without `force`) or stdout.
pub fn cli(
    haproxy: Option<&std::path::Path>,
    keepalived: Option<&std::path::Path>,
    output: Option<&std::path::Path>,
    force: bool,
) -> std::process::ExitCode {
    use std::process::ExitCode;
    let read = |p: &std::path::Path| {
        std::fs::read_to_string(p)
            .map_err(|e| format!("hapair import: cannot read {}: {e}", p.display()))
    };
    let texts = (
        haproxy
            .map(|p| read(p).map(|t| (p.display().to_string(), t)))
            .transpose(),
        keepalived
            .map(|p| read(p).map(|t| (p.display().to_string(), t)))
            .transpose(),
    );
    let (h, k) = match texts {
        (Ok(h), Ok(k)) => (h, k),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(o) = output {
        if o.exists() && !force {
            eprintln!(
                "hapair import: {} exists; pass --force to overwrite it",
                o.display()
            );
            return ExitCode::FAILURE;
        }
    }
    fn src(x: &Option<(String, String)>) -> Option<Source<'_>> {
        x.as_ref().map(|(n, t)| Source {
            name: n.as_str(),
            text: t.as_str(),
        })
    }
    let out = import(src(&h), src(&k));
    for d in &out.diags {
        eprintln!("{d}");
    }
    let warnings = out
        .diags
        .iter()
        .filter(|d| d.severity == Severity::Warning)
        .count();
    let dest = match output {
        Some(o) => {
            if let Err(e) = std::fs::write(o, &out.toml) {
                eprintln!("hapair import: cannot write {}: {e}", o.display());
                return ExitCode::FAILURE;
            }
            o.display().to_string()
        }
        None => {
            print!("{}", out.toml);
            "stdout".to_string()
        }
    };
    eprintln!(
        "hapair import: wrote {} listen section(s) to {dest}; {warnings} warning(s): what they name was not converted (also in the `# unsupported:` lines). Fill in the `# TODO` values, then run: hapair check -c FILE",
        out.listens
    );
    ExitCode::SUCCESS
}

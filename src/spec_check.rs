//! `timproxy spec-check`: validate artefacts before they reach the proxy, so client and
//! operator teams learn in CI what timproxy would refuse in production.
//!
//! Each file is read, its kind detected from its content (or forced with `--kind`), and
//! checked by the kind's module. Findings are [`Diagnostic`]s with a `line:col` where one can
//! be given (see [`locate`] for how semantic findings are positioned) and a rule id: a TIM
//! requirement number (`A_26262`) when the proxy would reject for that rule, otherwise a short
//! name (`unknown-endpoint`, `permission-config`, …).
//!
//! Kinds:
//! - `openapi`: OpenAPI 3 / Swagger 2 (YAML or JSON); every operation against the endpoint
//!   table and the TIM endpoint blocks;
//! - `endpoints`: lines `METHOD /path` (`#` comments; the v1.11 TSV itself is accepted);
//! - `permission-config`: account-data content or a whole `{type, content}` event;
//! - `config`: a timproxy configuration file, validated exactly as `serve` does;
//! - `federation-list`: registration-service JSON, or a VZD JWS whose payload is checked
//!   (the signature is verified by `fetch-federation`, not here);
//! - `reference-config`: the reference Messenger Proxy's `application.yml`, translated to the
//!   equivalent `timproxy.yaml` (the file's output), one warning per setting without an
//!   equivalent.

pub mod config_file;
pub mod endpoints;
pub mod federation;
pub mod locate;
pub mod parse;
pub mod permission;
pub mod reference;

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use crate::matrix::endpoints::{EndpointTable, TableError};
use crate::policy::permission_config::ConfigKind;

use self::locate::Pos;

/// How bad a finding is. Errors make the run fail (exit 1); warnings are advice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// One finding in one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub path: String,
    /// 1-based; `None` for findings about the whole file.
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub severity: Severity,
    pub message: String,
    /// TIM requirement id or short rule name.
    pub rule: String,
}

impl std::fmt::Display for Diagnostic {
    /// `path:line:col: severity: message [rule]` (compiler style).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.path)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        write!(f, ": {}: {} [{}]", self.severity, self.message, self.rule)
    }
}

/// What a document is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// OpenAPI 3 or Swagger 2 document (YAML or JSON)
    Openapi,
    /// Lines `METHOD /path` (`#` comments)
    Endpoints,
    /// Permission config content or a `{type, content}` account-data event
    PermissionConfig,
    /// timproxy configuration file
    Config,
    /// Federation list (registration-service JSON or VZD JWS)
    FederationList,
    /// Reference Messenger Proxy application.yml: prints the equivalent timproxy.yaml
    ReferenceConfig,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Openapi => "openapi",
            Kind::Endpoints => "endpoints",
            Kind::PermissionConfig => "permission-config",
            Kind::Config => "config",
            Kind::FederationList => "federation-list",
            Kind::ReferenceConfig => "reference-config",
        }
    }
}

/// Findings for one file, collected by the kind checkers.
#[derive(Debug)]
pub struct Sink<'a> {
    path: &'a str,
    diagnostics: Vec<Diagnostic>,
    output: Option<String>,
}

impl<'a> Sink<'a> {
    pub fn new(path: &'a str) -> Self {
        Self {
            path,
            diagnostics: Vec::new(),
            output: None,
        }
    }

    /// The file's path as given.
    pub fn path(&self) -> &str {
        self.path
    }

    /// What the check produced besides findings (a translation).
    pub fn set_output(&mut self, output: String) {
        self.output = Some(output);
    }

    pub fn push(&mut self, severity: Severity, pos: Option<Pos>, rule: &str, message: String) {
        self.diagnostics.push(Diagnostic {
            path: self.path.to_owned(),
            line: pos.map(|p| p.line),
            column: pos.map(|p| p.column),
            severity,
            message,
            rule: rule.to_owned(),
        });
    }

    pub fn error(&mut self, pos: Option<Pos>, rule: &str, message: impl Into<String>) {
        self.push(Severity::Error, pos, rule, message.into());
    }

    pub fn warning(&mut self, pos: Option<Pos>, rule: &str, message: impl Into<String>) {
        self.push(Severity::Warning, pos, rule, message.into());
    }

    pub fn into_diagnostics(self) -> Vec<Diagnostic> {
        self.diagnostics
    }

    /// The findings `check` makes in a file at `path`, as text (for the kind checkers' tests).
    #[cfg(test)]
    pub(crate) fn findings(path: &str, check: impl FnOnce(&mut Sink<'_>)) -> Vec<String> {
        let mut sink = Sink::new(path);
        check(&mut sink);
        sink.into_diagnostics()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    /// Findings in the order of the file (those without a position first).
    pub fn sort_by_position(&mut self) {
        self.diagnostics
            .sort_by_key(|d| (d.line.unwrap_or(0), d.column.unwrap_or(0)));
    }

    pub fn into_parts(self) -> (Vec<Diagnostic>, Option<String>) {
        (self.diagnostics, self.output)
    }
}

/// What the checks compare against.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Force the kind instead of detecting it.
    pub kind: Option<Kind>,
    /// Check endpoints against the Matrix v1.11 table only, not the TIM endpoint blocks.
    pub matrix_only: bool,
    /// Extra `METHOD /path` endpoints the proxy is configured to allow.
    pub extra_endpoints: Vec<String>,
    /// Schema for bare permission-config content (events carry their own type);
    /// `None`: legacy if it has `domainExceptions` and no `serverExceptions`, else Pro.
    pub permission_type: Option<ConfigKind>,
}

/// Setting up the checker failed (the extra endpoints do not parse).
#[derive(Debug, thiserror::Error)]
pub enum SpecCheckError {
    #[error(transparent)]
    Table(#[from] TableError),
}

/// The outcome for one file.
#[derive(Debug, Clone, Serialize)]
pub struct FileReport {
    pub path: String,
    /// `None` when the file could not be read, parsed or recognised.
    pub kind: Option<Kind>,
    /// The file could not be read (exit 2).
    pub unreadable: bool,
    pub diagnostics: Vec<Diagnostic>,
    /// What the check produced besides findings: the translated `timproxy.yaml` of a
    /// reference configuration.
    pub output: Option<String>,
}

impl FileReport {
    pub fn errors(&self) -> usize {
        self.count(Severity::Error)
    }
    pub fn warnings(&self) -> usize {
        self.count(Severity::Warning)
    }
    fn count(&self, severity: Severity) -> usize {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == severity)
            .count()
    }
}

/// Files whose content is looked at when a directory is walked; others are skipped so a
/// repository directory with READMEs and images can be checked as a whole.
const WALKED_EXTENSIONS: [&str; 7] = ["json", "yaml", "yml", "jws", "txt", "tsv", "endpoints"];

/// Validates documents; build once, check many files.
#[derive(Debug)]
pub struct Checker {
    options: Options,
    table: EndpointTable,
}

impl Checker {
    pub fn new(options: Options) -> Result<Self, SpecCheckError> {
        let table = EndpointTable::served(&options.extra_endpoints)?;
        Ok(Self { options, table })
    }

    pub fn options(&self) -> &Options {
        &self.options
    }

    pub fn table(&self) -> &EndpointTable {
        &self.table
    }

    /// Check a file, or every file with a known extension below a directory (sorted, so the
    /// output is stable). Files met while walking whose kind cannot be told are skipped.
    pub fn check_path(&self, path: &Path) -> Vec<FileReport> {
        if path.is_dir() {
            let mut files = Vec::new();
            let mut unreadable = Vec::new();
            walk(path, &mut files, &mut unreadable);
            files.sort();
            let mut reports: Vec<FileReport> = unreadable;
            for file in files {
                let report = self.check_file(&file, false);
                if report.kind.is_some() || !report.diagnostics.is_empty() {
                    reports.push(report);
                }
            }
            reports
        } else {
            vec![self.check_file(path, true)]
        }
    }

    /// `named`: the user named this file, so an unrecognised kind is an error, not a skip.
    fn check_file(&self, path: &Path, named: bool) -> FileReport {
        let display = path.display().to_string();
        match std::fs::read(path) {
            Err(e) => unreadable_report(display, &e.to_string()),
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => self.check_text(&display, &text, named),
                Err(_) => {
                    let mut sink = Sink::new(&display);
                    if named {
                        sink.error(None, "syntax", "not UTF-8 text");
                    }
                    FileReport {
                        path: display.clone(),
                        kind: None,
                        unreadable: false,
                        diagnostics: sink.into_diagnostics(),
                        output: None,
                    }
                }
            },
        }
    }

    /// Check one document's text. `named`: report an unrecognised kind as an error (for files
    /// met while walking a directory, such files are skipped silently).
    pub fn check_text(&self, path: &str, text: &str, named: bool) -> FileReport {
        let mut sink = Sink::new(path);
        let kind = self.detect_and_check(text, named, &mut sink);
        let (diagnostics, output) = sink.into_parts();
        FileReport {
            path: path.to_owned(),
            kind,
            unreadable: false,
            diagnostics,
            output,
        }
    }

    fn detect_and_check(&self, text: &str, named: bool, sink: &mut Sink<'_>) -> Option<Kind> {
        if let Some(kind) = self.options.kind {
            self.check_as(kind, text, sink);
            return Some(kind);
        }
        if federation::looks_like_jws(text) {
            self.check_as(Kind::FederationList, text, sink);
            return Some(Kind::FederationList);
        }
        if endpoints::looks_like_endpoint_list(text) {
            self.check_as(Kind::Endpoints, text, sink);
            return Some(Kind::Endpoints);
        }
        let value = match parse::parse_any(text) {
            Ok(value) => value,
            Err(e) => {
                // A file with a structured extension that does not parse is worth reporting
                // even while walking; prose in a .txt is not.
                if named || parse::looks_like_json(text) || text.trim_start().starts_with("---") {
                    sink.error(e.pos, "syntax", e.message);
                }
                return None;
            }
        };
        match detect(&value) {
            Some(kind) => {
                self.check_as(kind, text, sink);
                Some(kind)
            }
            None => {
                if named {
                    sink.error(
                        None,
                        "unknown-kind",
                        "cannot tell what kind of document this is (use --kind openapi|endpoints|permission-config|config|federation-list|reference-config)",
                    );
                }
                None
            }
        }
    }

    /// Run the checker of `kind` on `text`.
    pub fn check_as(&self, kind: Kind, text: &str, sink: &mut Sink<'_>) {
        match kind {
            Kind::Openapi => endpoints::check_openapi(self, text, sink),
            Kind::Endpoints => endpoints::check_list(self, text, sink),
            Kind::PermissionConfig => permission::check_document(self, text, sink),
            Kind::Config => config_file::check(text, sink),
            Kind::FederationList => federation::check(text, sink),
            Kind::ReferenceConfig => reference::check(text, sink),
        }
    }
}

/// Tell the kind of a parsed document by its members.
pub fn detect(value: &Value) -> Option<Kind> {
    let obj = value.as_object()?;
    if obj.contains_key("openapi") || obj.contains_key("swagger") {
        return Some(Kind::Openapi);
    }
    if obj.contains_key("domainList") {
        return Some(Kind::FederationList);
    }
    if permission::is_event(value)
        || permission::PERMISSION_MEMBERS
            .iter()
            .any(|k| obj.contains_key(*k))
    {
        return Some(Kind::PermissionConfig);
    }
    if !obj.is_empty() && obj.keys().all(|k| config_file::is_section(k)) {
        return Some(Kind::Config);
    }
    if reference::looks_like_reference(value) {
        return Some(Kind::ReferenceConfig);
    }
    None
}

/// Parse a JSON or YAML document for a check: a syntax error is reported (and `None` given
/// back), a JSON text's duplicate keys too; the locator finds positions for later diagnostics.
pub(crate) fn read_document<'t>(
    text: &'t str,
    sink: &mut Sink<'_>,
) -> Option<(serde_json::Value, locate::Locator<'t>)> {
    let value = match parse::parse_any(text) {
        Ok(v) => v,
        Err(e) => {
            sink.error(e.pos, "syntax", e.message);
            return None;
        }
    };
    let loc = locate::Locator::new(text);
    if parse::looks_like_json(text) {
        report_duplicates(text, &loc, sink);
    }
    Some((value, loc))
}

/// Report every duplicate key of a JSON text at its second (third, …) occurrence.
pub(crate) fn report_duplicates(text: &str, loc: &locate::Locator<'_>, sink: &mut Sink<'_>) {
    let mut seen: Vec<(Vec<String>, String)> = Vec::new();
    for dup in parse::duplicate_keys(text) {
        let parent: Vec<&str> = dup
            .parent
            .iter()
            .filter(|k| !k.starts_with('['))
            .map(String::as_str)
            .collect();
        let nth = 1 + seen
            .iter()
            .filter(|(p, k)| *p == dup.parent && *k == dup.key)
            .count();
        let from = if parent.is_empty() {
            Some(0)
        } else {
            loc.find_path(&parent)
        };
        let pos = from
            .and_then(|from| loc.find_key(&dup.key, from, nth))
            .map(|at| loc.pos(at));
        let within = if parent.is_empty() {
            String::new()
        } else {
            format!(" in `{}`", parent.join("."))
        };
        sink.error(
            pos,
            "duplicate-key",
            format!(
                "key `{}` appears more than once{within}; JSON readers keep only one of them",
                dup.key
            ),
        );
        seen.push((dup.parent, dup.key));
    }
}

fn unreadable_report(path: String, reason: &str) -> FileReport {
    let mut sink = Sink::new(&path);
    sink.error(None, "unreadable", format!("cannot read: {reason}"));
    let diagnostics = sink.into_diagnostics();
    FileReport {
        path,
        kind: None,
        unreadable: true,
        diagnostics,
        output: None,
    }
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>, unreadable: &mut Vec<FileReport>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            unreadable.push(unreadable_report(dir.display().to_string(), &e.to_string()));
            return;
        }
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        if path.is_dir() {
            walk(&path, files, unreadable);
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| WALKED_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        {
            files.push(path);
        }
    }
}

/// Totals over a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub files: usize,
    pub errors: usize,
    pub warnings: usize,
    pub unreadable: usize,
}

/// All files of one run.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub files: Vec<FileReport>,
}

/// Exit codes of a run (the CLI's: 0 clean, 1 violations, 2 unreadable).
pub mod exit {
    pub const CLEAN: u8 = 0;
    pub const VIOLATIONS: u8 = 1;
    pub const UNREADABLE: u8 = 2;
}

impl Report {
    pub fn summary(&self) -> Summary {
        Summary {
            files: self.files.len(),
            errors: self.files.iter().map(FileReport::errors).sum(),
            warnings: self.files.iter().map(FileReport::warnings).sum(),
            unreadable: self.files.iter().filter(|f| f.unreadable).count(),
        }
    }

    /// 2 if any file was unreadable, else 1 if any error, else 0 (warnings alone pass).
    pub fn exit_code(&self) -> u8 {
        let summary = self.summary();
        if summary.unreadable > 0 {
            exit::UNREADABLE
        } else if summary.errors > 0 {
            exit::VIOLATIONS
        } else {
            exit::CLEAN
        }
    }

    pub fn diagnostics(&self) -> impl Iterator<Item = &Diagnostic> {
        self.files.iter().flat_map(|f| f.diagnostics.iter())
    }

    /// The files' outputs (translated reference configurations), YAML documents separated by
    /// `---`; `None` when no file produced one.
    pub fn render_outputs(&self) -> Option<String> {
        let outputs: Vec<&str> = self
            .files
            .iter()
            .filter_map(|f| f.output.as_deref())
            .collect();
        (!outputs.is_empty()).then(|| outputs.join("---\n"))
    }

    /// One line per diagnostic.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        for d in self.diagnostics() {
            out.push_str(&d.to_string());
            out.push('\n');
        }
        out
    }

    /// The summary line printed after the diagnostics.
    pub fn summary_line(&self) -> String {
        let s = self.summary();
        let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
        format!(
            "spec-check: {} checked, {}, {}",
            plural(s.files, "file"),
            plural(s.errors, "error"),
            plural(s.warnings, "warning")
        )
    }

    /// One JSON document: `{"files":[…], "diagnostics":[…], "summary":{…}}`.
    pub fn render_json(&self) -> String {
        #[derive(Serialize)]
        struct FileOut<'a> {
            path: &'a str,
            kind: Option<&'static str>,
            errors: usize,
            warnings: usize,
            #[serde(skip_serializing_if = "Option::is_none")]
            output: Option<&'a str>,
        }
        #[derive(Serialize)]
        struct Out<'a> {
            files: Vec<FileOut<'a>>,
            diagnostics: Vec<&'a Diagnostic>,
            summary: Summary,
        }
        let out = Out {
            files: self
                .files
                .iter()
                .map(|f| FileOut {
                    path: &f.path,
                    kind: f.kind.map(Kind::name),
                    errors: f.errors(),
                    warnings: f.warnings(),
                    output: f.output.as_deref(),
                })
                .collect(),
            diagnostics: self.diagnostics().collect(),
            summary: self.summary(),
        };
        serde_json::to_string_pretty(&out).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diagnostics_print_compiler_style() {
        let d = Diagnostic {
            path: "a.yaml".into(),
            line: Some(3),
            column: Some(5),
            severity: Severity::Error,
            message: "bad".into(),
            rule: "A_1".into(),
        };
        assert_eq!(d.to_string(), "a.yaml:3:5: error: bad [A_1]");
        let whole = Diagnostic {
            line: None,
            column: None,
            ..d
        };
        assert_eq!(whole.to_string(), "a.yaml: error: bad [A_1]");
    }

    #[test]
    fn kinds_are_detected_from_members() {
        let j = |s: &str| serde_json::from_str::<Value>(s).unwrap();
        assert_eq!(
            detect(&j(r#"{"openapi":"3.1.0","paths":{}}"#)),
            Some(Kind::Openapi)
        );
        assert_eq!(detect(&j(r#"{"swagger":"2.0"}"#)), Some(Kind::Openapi));
        assert_eq!(
            detect(&j(r#"{"version":1,"domainList":[]}"#)),
            Some(Kind::FederationList)
        );
        assert_eq!(
            detect(&j(r#"{"defaultSetting":"allow all"}"#)),
            Some(Kind::PermissionConfig)
        );
        assert_eq!(
            detect(&j(
                r#"{"type":"de.gematik.tim.account.permissionconfig.pro.v1","content":{}}"#
            )),
            Some(Kind::PermissionConfig)
        );
        assert_eq!(
            detect(&j(r#"{"inbound":{},"policy":{}}"#)),
            Some(Kind::Config)
        );
        assert_eq!(detect(&j(r#"{"services":{}}"#)), None);
        assert_eq!(detect(&j(r#"[1]"#)), None);
    }

    #[test]
    fn exit_code_prefers_unreadable_over_errors_and_ignores_warnings() {
        let file = |sev: Option<Severity>, unreadable: bool| FileReport {
            path: "p".into(),
            kind: None,
            unreadable,
            diagnostics: sev
                .map(|severity| Diagnostic {
                    path: "p".into(),
                    line: None,
                    column: None,
                    severity,
                    message: "m".into(),
                    rule: "r".into(),
                })
                .into_iter()
                .collect(),
            output: None,
        };
        let r = |files| Report { files };
        assert_eq!(r(vec![file(Some(Severity::Warning), false)]).exit_code(), 0);
        assert_eq!(r(vec![file(Some(Severity::Error), false)]).exit_code(), 1);
        assert_eq!(
            r(vec![
                file(Some(Severity::Error), false),
                file(Some(Severity::Error), true)
            ])
            .exit_code(),
            2
        );
        assert_eq!(r(vec![]).exit_code(), 0);
    }
}

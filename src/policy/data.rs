//! Reading the policy tables: tab-separated files next to the rules, compiled into the binary
//! (`blocked_endpoints.tsv`, `rules.tsv`, `coverage.tsv`).
//!
//! A table is `#` comment lines, one header line naming the columns, then one row per line.
//! Cells borrow from the compiled-in text, so rule ids read from a table are `&'static str`
//! like the ones in code. A table that does not parse is a build defect (unit tests load every
//! table); at run time the listener refuses to start rather than run without its rules.

/// A table line that does not fit its header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("src/policy/{file}:{line}: {message}")]
pub struct DataError {
    pub file: &'static str,
    pub line: usize,
    pub message: String,
}

/// One row: its 1-based line number and its cells, as many as the header has columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub line: usize,
    pub cells: Vec<&'static str>,
}

impl Row {
    /// An error about this row.
    pub fn error(&self, file: &'static str, message: impl Into<String>) -> DataError {
        DataError {
            file,
            line: self.line,
            message: message.into(),
        }
    }
}

/// Parse `text` (the file `file`), whose header must be exactly `columns`.
pub fn rows(
    file: &'static str,
    text: &'static str,
    columns: &[&str],
) -> Result<Vec<Row>, DataError> {
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .filter(|(_, l)| !l.starts_with('#') && !l.trim().is_empty());
    let error = |line: usize, message: String| DataError {
        file,
        line,
        message,
    };
    let (header_line, header) = lines
        .next()
        .ok_or_else(|| error(1, "no header line".to_owned()))?;
    if header.split('\t').ne(columns.iter().copied()) {
        return Err(error(
            header_line,
            format!("header must be `{}`", columns.join("\\t")),
        ));
    }
    lines
        .map(|(line, text)| {
            let cells: Vec<&'static str> = text.split('\t').collect();
            if cells.len() != columns.len() {
                return Err(error(
                    line,
                    format!(
                        "expected {} tab-separated cells, found {}",
                        columns.len(),
                        cells.len()
                    ),
                ));
            }
            Ok(Row { line, cells })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_and_blank_lines_are_skipped_and_lines_counted() {
        let rows = rows("t.tsv", "# note\na\tb\n\nx\ty\n", &["a", "b"]).unwrap();
        assert_eq!(
            rows,
            vec![Row {
                line: 4,
                cells: vec!["x", "y"]
            }]
        );
    }

    #[test]
    fn wrong_header_or_cell_count_names_file_and_line() {
        assert_eq!(
            rows("t.tsv", "a\tc\n", &["a", "b"])
                .unwrap_err()
                .to_string(),
            "src/policy/t.tsv:1: header must be `a\\tb`"
        );
        assert_eq!(
            rows("t.tsv", "a\tb\nonly\n", &["a", "b"])
                .unwrap_err()
                .to_string(),
            "src/policy/t.tsv:2: expected 2 tab-separated cells, found 1"
        );
    }
}

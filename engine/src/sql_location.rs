//! Finds the position sqlparser reports in its messages and renders the
//! offending line with a caret, so syntax errors point at the problem.

/// Extracts `(line, column)` from a message that contains
/// `Line: L, Column: C` (sqlparser's wording).
pub(crate) fn locate(message: &str) -> Option<(usize, usize)> {
    let rest = &message[message.find("Line: ")? + "Line: ".len()..];
    let line_end = rest.find(|c: char| !c.is_ascii_digit())?;
    let line = rest[..line_end].parse().ok()?;
    let rest = &rest[rest.find("Column: ")? + "Column: ".len()..];
    let column_end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let column = rest[..column_end].parse().ok()?;
    Some((line, column))
}

/// The 1-based `line` of `sql` followed by a caret under 1-based `column`.
pub(crate) fn snippet(sql: &str, line: usize, column: usize) -> String {
    let Some(text) = sql.lines().nth(line.saturating_sub(1)) else {
        return String::new();
    };
    let pad = " ".repeat(column.saturating_sub(1));
    format!("  {text}\n  {pad}^")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_line_and_column() {
        let message = "SQL error: ParserError(\"Expected: end of statement, found: x at Line: 2, Column: 8\")";
        assert_eq!(locate(message), Some((2, 8)));
        assert_eq!(locate("no position here"), None);
    }

    #[test]
    fn caret_points_at_column() {
        let rendered = snippet("select 1\nselect x y z", 2, 10);
        assert_eq!(rendered, "  select x y z\n           ^");
    }
}

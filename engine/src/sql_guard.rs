//! Checks on SQL text before the SQL parser sees it. SQL arrives from the
//! network, and sqlparser backtracks: its time is exponential in some
//! short inputs (found by fuzzing), so those shapes are refused from the
//! tokens, in linear time, with an error naming where.

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};

use crate::sql_location::snippet;
use crate::{EngineError, Result};

/// Most names joined by `.` in one identifier (`catalog.schema.table.
/// column`, then struct fields). A 24-name chain followed by an unclosed
/// `[` took the parser minutes.
pub const MAX_IDENTIFIER_PARTS: usize = 12;

/// Refuses SQL whose brackets do not pair or whose identifiers are too
/// long. Text that does not tokenize is left to the parser's own error.
pub(crate) fn check_before_parsing(sql: &str) -> Result<()> {
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize_with_location() else {
        return Ok(());
    };
    check_brackets(sql, &tokens)?;
    check_identifier_chains(&tokens)
}

/// Brackets always pair in SQL, so an unpaired one is a syntax error,
/// reported here rather than after the parser tried every reading of the
/// text before it (unclosed `[` and `(` after identifiers: a 252-byte
/// query took seconds, each more doubling it).
fn check_brackets(sql: &str, tokens: &[TokenWithSpan]) -> Result<()> {
    let mut open: Vec<&TokenWithSpan> = Vec::new();
    let unpaired = |token: &TokenWithSpan, message: String| {
        let (line, column) = (
            token.span.start.line as usize,
            token.span.start.column as usize,
        );
        EngineError::SqlSyntax {
            snippet: snippet(sql, line, column),
            message,
            line,
            column,
        }
    };
    for token in tokens {
        let opener = match token.token {
            Token::LParen | Token::LBracket | Token::LBrace => {
                open.push(token);
                continue;
            }
            Token::RParen => Token::LParen,
            Token::RBracket => Token::LBracket,
            Token::RBrace => Token::LBrace,
            _ => continue,
        };
        match open.pop() {
            Some(last) if last.token == opener => {}
            Some(last) => {
                return Err(unpaired(
                    token,
                    format!("'{}' closes '{}'", token.token, last.token),
                ))
            }
            None => return Err(unpaired(token, format!("'{}' closes nothing", token.token))),
        }
    }
    match open.last() {
        Some(last) => Err(unpaired(last, format!("'{}' is never closed", last.token))),
        None => Ok(()),
    }
}

fn check_identifier_chains(tokens: &[TokenWithSpan]) -> Result<()> {
    let (mut parts, mut after_period) = (0usize, false);
    for token in tokens {
        match token.token {
            Token::Whitespace(_) => {}
            Token::Word(_) => {
                parts = if after_period { parts + 1 } else { 1 };
                after_period = false;
                if parts > MAX_IDENTIFIER_PARTS {
                    return Err(EngineError::Plan {
                        message: format!(
                            "an identifier has more than {MAX_IDENTIFIER_PARTS} parts joined \
                             by '.' (line {}); tone refuses such SQL before parsing it",
                            token.span.start.line
                        ),
                    });
                }
            }
            Token::Period => after_period = parts > 0,
            _ => {
                parts = 0;
                after_period = false;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(parts: usize) -> String {
        (0..parts)
            .map(|part| format!("x{part}"))
            .collect::<Vec<_>>()
            .join(".")
    }

    #[test]
    fn long_identifier_chains_are_refused() {
        // The parser would spend hours on this; the check refuses it first.
        let refused =
            check_before_parsing(&format!("select {}[t.b] from t", chain(30))).expect_err("long");
        assert!(
            refused.to_string().contains("more than 12 parts"),
            "{refused}"
        );
        assert!(check_before_parsing(&format!("select {} from t", chain(12))).is_ok());
        assert!(check_before_parsing("select 1.5, a . b, 'x.y.z'").is_ok());
    }

    #[test]
    fn unpaired_brackets_are_syntax_errors_naming_where() {
        let cases = [
            ("select f(a[1]) from t", None),
            ("select {'a': [1, (2)]}, ')(' from t -- ]", None),
            (
                "select a\nfrom t where (b",
                Some((2, 14, "'(' is never closed")),
            ),
            ("select a[1)", Some((1, 11, "')' closes '['"))),
            ("select a)", Some((1, 9, "')' closes nothing"))),
        ];
        for (sql, expected) in cases {
            match (check_before_parsing(sql), expected) {
                (Ok(()), None) => {}
                (
                    Err(EngineError::SqlSyntax {
                        message,
                        line,
                        column,
                        snippet,
                    }),
                    Some((at_line, at_column, says)),
                ) => {
                    assert_eq!((line, column), (at_line, at_column), "{sql}");
                    assert!(message.contains(says), "{sql}: {message}");
                    assert!(!snippet.is_empty(), "{sql}");
                }
                (other, _) => panic!("{sql}: {other:?}"),
            }
        }
    }

    /// The input a fuzz run found slow: refused from its tokens.
    #[test]
    fn nested_unclosed_subscripts_are_refused() {
        let sql = format!(
            "select u.a. s[e(b, {}",
            "u.e.  u.enumb. s[e(eabrenu, ".repeat(8)
        );
        assert!(matches!(
            check_before_parsing(&sql),
            Err(EngineError::SqlSyntax { .. })
        ));
    }
}

//! Where a YAML syntax error really is, and what it is, found from the input.
//!
//! The parser reports where it gave up, which is not always where the mistake is: a tab that
//! starts a line is reported at the value on the line before it (the parser was still reading
//! that scalar), an unclosed `[` where the next `:` appears, an unclosed `{` at the end of the
//! file. Its messages are free text, so nothing here reads them: the input is examined from
//! the reported position instead, and the first cause found wins:
//! 1. a tab where YAML wants spaces (in the indentation, or right after `:`, `-` or `?`), on
//!    the reported line or the next one;
//! 2. a quote opened at the reported position and never closed;
//! 3. a flow collection (`[`, `{`) opened before the reported position and not closed there;
//! 4. a line whose first character is at the reported position: its indentation;
//! 5. anything else, at the reported position.

use super::node::Pos;

/// What a syntax error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    Tab,
    UnclosedQuote(char),
    UnclosedFlow(char),
    /// More flow collections open at once than any configuration needs.
    TooDeep,
    Indentation,
    Other,
}

impl Cause {
    /// The message and the hint a person needs for it.
    pub fn explain(self, detail: &str) -> (String, &'static str) {
        match self {
            Cause::Tab => (
                "a tab where YAML allows only spaces".into(),
                "YAML indentation and the space after `:` or `-` must be spaces: replace the tab with spaces",
            ),
            Cause::UnclosedQuote(q) => (
                format!("this {q} opens a quoted string that is never closed"),
                "close the quote on the same value (and indent any continuation lines)",
            ),
            Cause::UnclosedFlow(open) => (
                format!("this `{open}` is never closed"),
                "close it with the matching bracket, or write the list or mapping in block style",
            ),
            Cause::TooDeep => (
                "nesting too deep (the parser's recursion limit)".into(),
                "configuration files need only a few levels of nesting: flatten this structure",
            ),
            Cause::Indentation => (
                format!("the indentation of this line matches no key above it ({detail})"),
                "indent it like its sibling keys, under its parent key, and quote values that contain `: `",
            ),
            Cause::Other => (format!("YAML syntax error: {detail}"), "fix the YAML syntax at this position"),
        }
    }
}

/// Finds the cause of a syntax error the parser reported at `reported` (1-based) in `text`.
pub fn locate(text: &str, reported: Pos) -> (Cause, Pos) {
    let lines: Vec<&str> = text.split('\n').collect();
    let at = |line: u32| lines.get(line as usize - 1).copied();
    for line in [reported.line, reported.line + 1] {
        if let Some(col) = at(line).and_then(misplaced_tab) {
            return (Cause::Tab, Pos { line, col });
        }
    }
    let here = at(reported.line).and_then(|l| l.chars().nth(reported.col as usize - 1));
    if let Some(q @ ('"' | '\'')) = here {
        return (Cause::UnclosedQuote(q), reported);
    }
    let mut flows = open_flows(text, reported);
    if flows.len() > MAX_FLOW_DEPTH {
        return (Cause::TooDeep, reported);
    }
    if let Some((open, pos)) = flows.pop() {
        return (Cause::UnclosedFlow(open), pos);
    }
    let first = at(reported.line).and_then(|l| l.chars().position(|c| c != ' ')).map(|i| i as u32 + 1);
    if first == Some(reported.col) {
        return (Cause::Indentation, reported);
    }
    (Cause::Other, reported)
}

/// The 1-based column of a tab in the indentation of `line`, or right after an indicator
/// (`key:\tvalue`, `-\titem`), outside quotes and comments.
fn misplaced_tab(line: &str) -> Option<u32> {
    let chars: Vec<char> = line.chars().collect();
    let indent = chars.iter().take_while(|c| **c == ' ' || **c == '\t').count();
    if let Some(i) = chars[..indent].iter().position(|c| *c == '\t') {
        // A line of only whitespace may hold tabs.
        return (indent < chars.len()).then_some(i as u32 + 1);
    }
    let mut quote = None;
    for (i, c) in chars.iter().enumerate() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(*c),
            (Some(q), c) if *c == q => quote = None,
            (None, '#') if i == 0 || chars[i - 1] == ' ' => return None,
            (None, '\t') if i > 0 && matches!(chars[i - 1], ':' | '-' | '?') => return Some(i as u32 + 1),
            _ => {}
        }
    }
    None
}

/// Flow collections open at once beyond which the parser's own limit is the likely cause.
const MAX_FLOW_DEPTH: usize = 64;

/// The `[` and `{` opened before `until` and not closed there, outermost first, skipping
/// quoted strings and comments; a bracket inside a plain scalar (`a[1]`) opens nothing.
fn open_flows(text: &str, until: Pos) -> Vec<(char, Pos)> {
    let mut open: Vec<(char, Pos)> = Vec::new();
    let mut quote: Option<char> = None;
    let mut prev = '\n'; // the last character that is not a space
    for (l, line) in text.split('\n').enumerate() {
        let line_no = l as u32 + 1;
        if line_no > until.line {
            break;
        }
        let chars: Vec<char> = line.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            let pos = Pos { line: line_no, col: i as u32 + 1 };
            if line_no == until.line && pos.col >= until.col {
                break;
            }
            match quote {
                Some('"') if c == '\\' => i += 1,
                Some('\'') if c == '\'' && chars.get(i + 1) == Some(&'\'') => i += 1,
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None => match c {
                    '#' if i == 0 || chars[i - 1] == ' ' => break,
                    '"' | '\'' if matches!(prev, ':' | '-' | ',' | '[' | '{' | '?' | '\n') => quote = Some(c),
                    '[' | '{' if matches!(prev, ':' | '-' | ',' | '[' | '{' | '?' | '\n') => open.push((c, pos)),
                    ']' | '}' if !open.is_empty() => {
                        open.pop();
                    }
                    _ => {}
                },
            }
            if c != ' ' {
                prev = c;
            }
            i += 1;
        }
        if open.is_empty() {
            prev = '\n';
        }
    }
    open
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(line: u32, col: u32) -> Pos {
        Pos { line, col }
    }

    #[test]
    fn tabs_are_found_where_they_are() {
        let text = "mysql:\n    type: mysql:11.4\n\tdisk: 512\n";
        assert_eq!(locate(text, p(2, 11)), (Cause::Tab, p(3, 1)));
        assert_eq!(locate("a:\n    b:\tc\n", p(2, 8)), (Cause::Tab, p(2, 7)));
        assert_eq!(locate("a: \"x\ty\"\nb: [\n", p(3, 1)), (Cause::UnclosedFlow('['), p(2, 4)));
    }

    #[test]
    fn unclosed_quotes_and_brackets_point_at_the_opening() {
        assert_eq!(locate("a:\n    b: \"x\n    c: 1\n", p(2, 8)), (Cause::UnclosedQuote('"'), p(2, 8)));
        assert_eq!(locate("a:\n    b: [x, y\n    c: 1\n", p(3, 6)), (Cause::UnclosedFlow('['), p(2, 8)));
        assert_eq!(locate("a: {b: [1, 2], c: 3\n", p(2, 1)), (Cause::UnclosedFlow('{'), p(1, 4)));
        // Brackets in plain scalars and comments open nothing.
        assert_eq!(locate("a: x[1]\n# [\nb c: d\n", p(3, 3)).0, Cause::Other);
    }

    #[test]
    fn indentation() {
        assert_eq!(locate("a:\n    b: 1\n  c: 2\n", p(3, 3)), (Cause::Indentation, p(3, 3)));
    }
}

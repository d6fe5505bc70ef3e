//! The one renderer of operator commands: a command's value printed as text for people
//! (aligned tables, `key  value` lines, notes on stderr) or, with `--json`, as
//! pretty-printed JSON for scripts. Rendering is pure ([`render`]); only [`print`]
//! writes.

use std::io::Write;

use chrono::{DateTime, Utc};
use serde::Serialize;

/// How a command's value is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Text for people.
    Table,
    /// JSON for scripts (`--json`).
    Json,
}

impl Format {
    /// [`Format::Json`] when `--json` was given.
    pub fn json_if(flag: bool) -> Self {
        if flag { Format::Json } else { Format::Table }
    }
}

/// Text for people: what goes to stdout, and notes for stderr (counts, hints), so that
/// stdout stays the data.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Text {
    /// For stdout.
    pub out: String,
    /// For stderr.
    pub notes: String,
}

impl Text {
    /// Adds a line to stdout.
    pub fn line(&mut self, line: impl AsRef<str>) {
        self.out.push_str(line.as_ref());
        self.out.push('\n');
    }

    /// Adds a line to stderr.
    pub fn note(&mut self, line: impl AsRef<str>) {
        self.notes.push_str(line.as_ref());
        self.notes.push('\n');
    }
}

/// A command's result: serialisable for `--json`, and able to say itself as text.
pub trait View: Serialize {
    /// The text for people.
    fn text(&self) -> Text;
}

/// Plain lines for people (JSON: the array of lines): acknowledgements and lists of
/// labels that have no structure of their own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Lines(pub Vec<String>);

impl Lines {
    /// One line.
    pub fn one(line: impl Into<String>) -> Self {
        Lines(vec![line.into()])
    }
}

impl View for Lines {
    fn text(&self) -> Text {
        let mut text = Text::default();
        for line in &self.0 {
            text.line(line);
        }
        text
    }
}

/// Renders `view` in `format`.
///
/// # Errors
/// A value that does not serialise (not expected of the command views).
pub fn render(view: &impl View, format: Format) -> Result<Text, serde_json::Error> {
    match format {
        Format::Table => Ok(view.text()),
        Format::Json => {
            let mut out = serde_json::to_string_pretty(view)?;
            out.push('\n');
            Ok(Text {
                out,
                notes: String::new(),
            })
        }
    }
}

/// Renders `view` in `format` and prints it: the data to stdout, notes to stderr.
///
/// # Errors
/// A closed stdout or stderr, or a value that does not serialise.
pub fn print(view: &impl View, format: Format) -> anyhow::Result<()> {
    let text = render(view, format)?;
    let mut out = std::io::stdout().lock();
    out.write_all(text.out.as_bytes())?;
    out.flush()?;
    if !text.notes.is_empty() {
        std::io::stderr().write_all(text.notes.as_bytes())?;
    }
    Ok(())
}

/// Rows under headers with aligned columns, two spaces apart (the last column is not
/// padded).
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let last = cells.len() - 1;
        for (i, cell) in cells.iter().enumerate() {
            out.push_str(cell);
            if i < last {
                out.push_str(&" ".repeat(widths[i] - cell.chars().count() + 2));
            }
        }
        out.push('\n');
    };
    line(headers.to_vec(), &mut out);
    for row in rows {
        line(row.iter().map(String::as_str).collect(), &mut out);
    }
    out
}

/// `2026-11-21 10:00:00`: a time for a table cell.
pub fn short_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// The first line of `text`, cut to `max` characters with an ellipsis.
pub fn truncate(text: &str, max: usize) -> String {
    let line = text.lines().next().unwrap_or("");
    if line.chars().count() <= max {
        line.to_owned()
    } else {
        format!(
            "{}…",
            line.chars().take(max.saturating_sub(1)).collect::<String>()
        )
    }
}

/// `-` for a missing value.
pub fn or_dash(value: Option<impl ToString>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Count {
        n: u32,
    }

    impl View for Count {
        fn text(&self) -> Text {
            let mut text = Text::default();
            text.line(format!("counted {}", self.n));
            text.note("a note");
            text
        }
    }

    #[test]
    fn tables_align_columns_two_spaces_apart_and_leave_the_last_unpadded() {
        let t = table(&["A", "LONGER"], &[vec!["xyz".into(), "1".into()]]);
        assert_eq!(t, "A    LONGER\nxyz  1\n");
        let t = table(
            &["ID", "KIND", "ERROR"],
            &[
                vec!["1".into(), "order.process".into(), "boom".into()],
                vec!["22".into(), "noop".into(), "a longer error".into()],
            ],
        );
        assert_eq!(
            t,
            "ID  KIND           ERROR\n1   order.process  boom\n22  noop           a longer error\n"
        );
    }

    #[test]
    fn tables_count_characters_not_bytes() {
        let t = table(&["É", "X"], &[vec!["日本".into(), "1".into()]]);
        assert_eq!(t, "É   X\n日本  1\n");
    }

    #[test]
    fn an_empty_table_is_its_header() {
        assert_eq!(table(&["A", "B"], &[]), "A  B\n");
    }

    #[test]
    fn truncation_keeps_the_first_line_and_marks_the_cut() {
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("exactly10!", 10), "exactly10!");
        assert_eq!(truncate("this is longer", 10), "this is l…");
        assert_eq!(truncate("first\nsecond", 10), "first");
        assert_eq!(truncate("ééééééééééé", 5).chars().count(), 5);
        assert_eq!(truncate("", 5), "");
    }

    #[test]
    fn json_is_pretty_with_a_newline_and_no_notes() {
        let text = render(&Count { n: 3 }, Format::Json).unwrap();
        assert_eq!(text.out, "{\n  \"n\": 3\n}\n");
        assert!(text.notes.is_empty());
    }

    #[test]
    fn text_keeps_data_on_stdout_and_notes_on_stderr() {
        let text = render(&Count { n: 3 }, Format::Table).unwrap();
        assert_eq!(text.out, "counted 3\n");
        assert_eq!(text.notes, "a note\n");
    }

    #[test]
    fn short_times_drop_the_zone_and_fraction() {
        let t: DateTime<Utc> = "2026-11-21T10:00:00.123Z".parse().unwrap();
        assert_eq!(short_time(t), "2026-11-21 10:00:00");
    }
}

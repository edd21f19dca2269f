//! Plain-text tables for people (scripts use `--json`).

/// Renders rows under a header, columns padded to their widest cell.
pub fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(cell);
                out.push_str(&" ".repeat(widths[i] - cell.chars().count() + 2));
            }
        }
        out.trim_end().to_owned()
    };
    let mut out = line(header.to_vec());
    out.push('\n');
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

/// At most `max` characters of one line of `text`, with `…` when cut.
pub fn clip(text: &str, max: usize) -> String {
    let one_line = text.lines().next().unwrap_or_default();
    if one_line.chars().count() <= max && one_line.len() == text.len() {
        return one_line.to_owned();
    }
    let cut: String = one_line.chars().take(max.saturating_sub(1)).collect();
    format!("{cut}…")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up() {
        let t = render(
            &["ID", "STATUS", "PROMPT"],
            &[
                vec!["a".into(), "running".into(), "x".into()],
                vec!["bbbb".into(), "killed".into(), "y".into()],
            ],
        );
        assert_eq!(
            t,
            "ID    STATUS   PROMPT\na     running  x\nbbbb  killed   y\n"
        );
    }

    #[test]
    fn clips_long_and_multiline_text() {
        assert_eq!(clip("short", 10), "short");
        assert_eq!(clip("0123456789abc", 5), "0123…");
        assert_eq!(clip("one\ntwo", 10), "one…");
    }
}

//! The pages and their fenced blocks.

use super::*;

/// A page: its path from the crate root and its text.
pub(crate) struct Page {
    pub(crate) path: String,
    pub(crate) text: String,
}

/// A fenced code block.
#[derive(Clone, Debug)]
pub(crate) struct Block {
    pub(crate) page: String,
    /// 1-based line of the opening fence.
    pub(crate) line: usize,
    /// The info string's first word (`toml` of `toml,invalid`).
    pub(crate) lang: String,
    /// The info string's other words.
    pub(crate) attrs: Vec<String>,
    pub(crate) text: String,
}

impl Block {
    pub(crate) fn at(&self) -> String {
        format!("{}:{}", self.page, self.line)
    }

    pub(crate) fn has(&self, attr: &str) -> bool {
        self.attrs.iter().any(|a| a == attr)
    }
}

pub(crate) fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// README.md and every docs/*.md, in a stable order.
pub(crate) fn pages() -> Vec<Page> {
    let mut paths = vec!["README.md".to_owned()];
    let mut docs: Vec<String> = std::fs::read_dir(root().join("docs"))
        .expect("docs/ exists")
        .map(|e| {
            e.expect("docs/ entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| n.ends_with(".md"))
        .map(|n| format!("docs/{n}"))
        .collect();
    docs.sort();
    paths.extend(docs);
    paths
        .into_iter()
        .map(|path| Page {
            text: std::fs::read_to_string(root().join(&path)).expect("read page"),
            path,
        })
        .collect()
}

/// The fenced blocks of `text`, and the text with every block line blanked (so that line
/// numbers still hold), for inline code and links.
pub(crate) fn split(page: &str, text: &str) -> (Vec<Block>, String) {
    let mut blocks = Vec::new();
    let mut prose = String::new();
    let mut open: Option<Block> = None;
    for (i, line) in text.lines().enumerate() {
        let fence = line.trim_start().starts_with("```");
        match (&mut open, fence) {
            (None, true) => {
                let info = line.trim_start().trim_start_matches('`').trim();
                let mut words = info
                    .split(|c: char| c == ',' || c.is_whitespace())
                    .filter(|w| !w.is_empty())
                    .map(str::to_owned);
                open = Some(Block {
                    page: page.to_owned(),
                    line: i + 1,
                    lang: words.next().unwrap_or_default(),
                    attrs: words.collect(),
                    text: String::new(),
                });
            }
            (Some(_), true) => blocks.extend(open.take()),
            (Some(b), false) => {
                b.text.push_str(line);
                b.text.push('\n');
            }
            (None, false) => prose.push_str(line),
        }
        prose.push('\n');
    }
    assert!(open.is_none(), "{page}: a code block is never closed");
    (blocks, prose)
}

/// Inline code spans of `prose` with their 1-based line.
pub(crate) fn inline_code(prose: &str) -> Vec<(usize, String)> {
    let mut spans = Vec::new();
    let mut rest = prose;
    let mut line = 1;
    while let Some(start) = rest.find('`') {
        line += rest[..start].matches('\n').count();
        let ticks = rest[start..].len() - rest[start..].trim_start_matches('`').len();
        let body = &rest[start + ticks..];
        let close = "`".repeat(ticks);
        let Some(end) = body.find(&close) else { break };
        spans.push((line, body[..end].replace('\n', " ").trim().to_owned()));
        line += body[..end].matches('\n').count();
        rest = &body[end + ticks..];
    }
    spans
}

pub(crate) fn fail_if_any(problems: Vec<String>) {
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

//! The examples of README.md and docs/*.md, checked against the code they describe, so that a
//! page cannot drift from the binary:
//!
//! - ```` ```toml ```` blocks go through `mcp-pqtls check-config`. A block without `mode` is a
//!   fragment: it is checked after a minimal server file ([`SERVER_BASE`]), or a client one
//!   ([`CLIENT_BASE`]) for ```` ```toml,client ````, minus the keys the fragment sets itself.
//!   ```` ```toml,invalid ```` must be refused (exit 64) with every line of the
//!   ```` ```text ```` block that follows it in stderr. ```` ```toml,cargo ```` is a
//!   `Cargo.toml` snippet: it must parse and name only features `Cargo.toml` has.
//! - Each `mcp-pqtls ...` or `cargo run -- ...` line of a ```` ```sh ```` block, and each
//!   inline `` `mcp-pqtls ...` `` command, must name a real subcommand and only flags its
//!   `--help` lists. A `check-config FILE` line is run; a `# -> TEXT` comment after it is its
//!   expected stdout, `...` standing for anything.
//! - ```` ```json ```` blocks parse; a probe report has exactly the fields of
//!   docs/probe-schema.md, at every level the schema's tables describe.
//! - The reference table of docs/configuration.md holds exactly the keys a sidecar file
//!   takes (as check-config lists them), and each flag is in its sidecars' `--help`; the
//!   tables of docs/gate.md hold exactly the keys of `[auth]`, `[[rules]]`, `[[rate-limit]]`
//!   and `[audit]`; every metric a sidecar's `/metrics` serves is in docs/operations.md (with
//!   its type) or, the gate's, in docs/gate.md, and nothing else is; the log lines
//!   docs/operations.md names are ones the code writes.
//! - Relative links, and their `#anchors`, resolve.
//! - Rust blocks live in docs/library.md only, which `cargo test --doc` compiles (src/lib.rs
//!   includes it).
//!
//! Every block must say its language (```` ```text ```` for output and sketches). Each page
//! that shows examples has a minimum count of checked ones ([`MINIMUM_CHECKED`]), so a parser
//! that silently finds nothing fails, and `the_checks_catch_broken_examples` feeds each check
//! a broken example.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_mcp-pqtls");

/// What a server fragment is checked after: the keys a server sidecar requires, with the dev
/// PKI that [`Workdir`] writes.
const SERVER_BASE: &str = r#"mode = "server"
listen = "127.0.0.1:8443"
upstream = "http://127.0.0.1:8000"
cert = "certs/dev/server.pem"
key = "certs/dev/server.key"
"#;

/// What a client fragment (```` ```toml,client ````) is checked after.
const CLIENT_BASE: &str = r#"mode = "client"
listen = "127.0.0.1:8080"
upstream = "https://localhost:8443"
ca = "certs/dev/ca.pem"
"#;

/// Checked examples each page must have at least (by kind), so that a page whose examples
/// stop being found fails instead of passing with nothing checked.
const MINIMUM_CHECKED: &[(&str, &str, usize)] = &[
    ("README.md", "command", 1),
    ("docs/library.md", "rust", 9),
    ("docs/library.md", "cargo", 1),
    ("docs/library.md", "command", 1),
    ("docs/cli.md", "command", 12),
    ("docs/policy.md", "toml", 1),
    ("docs/policy.md", "command", 1),
    ("docs/sidecar.md", "command", 6),
    ("docs/configuration.md", "toml", 4),
    ("docs/gate.md", "toml", 3),
    ("docs/gate.md", "command", 1),
    ("docs/gate.md", "json", 1),
    ("docs/probe.md", "command", 3),
    ("docs/probe.md", "probe-report", 1),
    ("docs/interop.md", "command", 2),
    ("docs/performance.md", "command", 7),
];

// ---------------------------------------------------------------------------------------
// The pages and their blocks.

/// A page: its path from the crate root and its text.
struct Page {
    path: String,
    text: String,
}

/// A fenced code block.
#[derive(Clone, Debug)]
struct Block {
    page: String,
    /// 1-based line of the opening fence.
    line: usize,
    /// The info string's first word (`toml` of `toml,invalid`).
    lang: String,
    /// The info string's other words.
    attrs: Vec<String>,
    text: String,
}

impl Block {
    fn at(&self) -> String {
        format!("{}:{}", self.page, self.line)
    }

    fn has(&self, attr: &str) -> bool {
        self.attrs.iter().any(|a| a == attr)
    }
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// README.md and every docs/*.md, in a stable order.
fn pages() -> Vec<Page> {
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
fn split(page: &str, text: &str) -> (Vec<Block>, String) {
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
fn inline_code(prose: &str) -> Vec<(usize, String)> {
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

fn fail_if_any(problems: Vec<String>) {
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

// ---------------------------------------------------------------------------------------
// The binary: help texts, and a working directory where the examples' paths exist.

/// `mcp-pqtls WORDS... --help`, cached.
fn help(words: &[String]) -> String {
    static CACHE: OnceLock<Mutex<HashMap<Vec<String>, String>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(h) = cache.lock().unwrap().get(words) {
        return h.clone();
    }
    let out = Command::new(BIN)
        .args(words)
        .arg("--help")
        .output()
        .expect("run mcp-pqtls --help");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "mcp-pqtls {words:?} --help failed");
    cache.lock().unwrap().insert(words.to_vec(), text.clone());
    text
}

/// The subcommands a help text lists (its `Commands:` section).
fn subcommands(help: &str) -> BTreeSet<String> {
    help.lines()
        .skip_while(|l| l.trim() != "Commands:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// Whether `help` lists `flag` (`--listen`, `-c`) as a whole word.
fn lists_flag(help: &str, flag: &str) -> bool {
    help.match_indices(flag).any(|(i, _)| {
        let before = help[..i].chars().next_back();
        let after = help[i + flag.len()..].chars().next();
        !before.is_some_and(|c| c.is_alphanumeric() || c == '-')
            && !after.is_some_and(|c| c.is_alphanumeric() || c == '-')
    })
}

/// Problems with one command line as written (the words after `mcp-pqtls`): the subcommand
/// must exist, nested ones too (`certs init`), and every flag must be in its help. Words of
/// a synopsis (`[--ca F \| --insecure]`, `TARGET...`) are taken apart the same way.
fn check_command(words: &[String]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut path: Vec<String> = Vec::new();
    let mut rest = words.iter().map(|w| w.as_str()).peekable();
    loop {
        let commands = subcommands(&help(&path));
        if commands.is_empty() {
            break;
        }
        match rest.peek() {
            Some(w) if !w.starts_with('-') => {
                if !commands.contains(*w) {
                    problems.push(format!(
                        "`mcp-pqtls {}`: no subcommand `{w}` (there are: {})",
                        path.join(" "),
                        commands.into_iter().collect::<Vec<_>>().join(", ")
                    ));
                    return problems;
                }
                path.push((*w).to_owned());
                rest.next();
            }
            // `mcp-pqtls bench` alone names the group of commands.
            _ => break,
        }
    }
    let help = help(&path);
    for word in rest {
        for flag in flags_in(word) {
            if !lists_flag(&help, &flag) {
                problems.push(format!("`mcp-pqtls {}` has no flag {flag}", path.join(" ")));
            }
        }
    }
    problems
}

/// The flags in one word of a command, synopsis or table cell: `--flag`, `--flag=value`,
/// `[--flag`, `` `--flag` ``, `-c`.
fn flags_in(word: &str) -> Vec<String> {
    let word = word.trim_matches(|c| "[]().,`".contains(c));
    let name_end = |s: &str| {
        s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .unwrap_or(s.len())
    };
    if let Some(long) = word.strip_prefix("--") {
        let name = &long[..name_end(long)];
        if name.is_empty() {
            return vec![];
        }
        return vec![format!("--{name}")];
    }
    match word.strip_prefix('-') {
        Some(short) if short.len() == 1 && short.chars().all(|c| c.is_ascii_alphabetic()) => {
            vec![word.to_owned()]
        }
        _ => vec![],
    }
}

/// Splits a shell line into words: quotes kept together and removed, an unquoted `#` word
/// ends the line, `&` and `\` at the end dropped.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut in_word = false;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, '#') if !in_word => break,
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    while words.last().is_some_and(|w| w == "&" || w == "\\") {
        words.pop();
    }
    words
}

/// The lines of a shell block with `\` continuations joined.
fn shell_lines(text: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        match line.trim_end().strip_suffix('\\') {
            Some(head) => {
                pending.push_str(head);
                pending.push(' ');
            }
            None => {
                pending.push_str(line);
                lines.push(std::mem::take(&mut pending));
            }
        }
    }
    if !pending.is_empty() {
        lines.push(pending);
    }
    lines
}

/// The words after `mcp-pqtls` or `cargo run --`, if the line runs our binary.
fn our_command(words: &[String]) -> Option<&[String]> {
    match words {
        [first, rest @ ..] if first == "mcp-pqtls" => Some(rest),
        [cargo, run, dashes, rest @ ..] if cargo == "cargo" && run == "run" && dashes == "--" => {
            Some(rest)
        }
        _ => None,
    }
}

/// A temporary directory laid out as the examples expect when run from the crate root: the
/// dev PKI in certs/dev, the JWKS the gate examples name, and copies of examples/.
struct Workdir {
    dir: tempfile::TempDir,
}

impl Workdir {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        mcp_pqtls::certs::write_dev_pki(
            &dir.path().join("certs/dev"),
            mcp_pqtls::certs::KeyAlg::EcdsaP256,
        )
        .expect("dev PKI");
        let examples = dir.path().join("examples");
        std::fs::create_dir(&examples).unwrap();
        for entry in std::fs::read_dir(root().join("examples")).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml" || e == "json") {
                std::fs::copy(&path, examples.join(path.file_name().unwrap())).unwrap();
            }
        }
        // The gate pages' `jwks-file = "jwks.json"`.
        std::fs::copy(
            root().join("examples/jwks.example.json"),
            dir.path().join("jwks.json"),
        )
        .unwrap();
        Self { dir }
    }

    /// `mcp-pqtls check-config FILE` in this directory, in whichever form the binary takes:
    /// `FILE` (the file's `mode` says which sidecar), or `--config FILE --mode MODE`.
    fn check_config(&self, file: &str, mode: &str) -> Output {
        let mut cmd = Command::new(BIN);
        cmd.current_dir(self.dir.path()).arg("check-config");
        if lists_flag(&help(&["check-config".to_owned()]), "--mode") {
            cmd.args(["--config", file, "--mode", mode]);
        } else {
            cmd.arg(file);
        }
        cmd.env("RUST_LOG", "error")
            .output()
            .expect("run check-config")
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.dir.path().join(name), text).unwrap();
    }
}

// ---------------------------------------------------------------------------------------
// The checks, as functions returning problems (so that the self-test can feed them broken
// examples).

/// The top-level keys a TOML text sets (before its first table header).
fn top_level_keys(toml: &str) -> BTreeSet<String> {
    toml.lines()
        .take_while(|l| !l.trim_start().starts_with('['))
        .filter_map(|l| {
            let (key, _) = l.split_once('=')?;
            let key = key.trim();
            (!key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
                .then(|| key.to_owned())
        })
        .collect()
}

/// The file a TOML block is checked as, and its mode.
fn config_file(block: &Block) -> (String, String) {
    let own = top_level_keys(&block.text);
    if own.contains("mode") {
        let mode = block
            .text
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once('=')?;
                (k.trim() == "mode").then(|| v.trim().trim_matches('"').to_owned())
            })
            .unwrap_or_default();
        return (block.text.clone(), mode);
    }
    let (base, mode) = if block.has("client") {
        (CLIENT_BASE, "client")
    } else {
        (SERVER_BASE, "server")
    };
    let base: String = base
        .lines()
        .filter(|l| !top_level_keys(l).iter().any(|k| own.contains(k)))
        .map(|l| format!("{l}\n"))
        .collect();
    (format!("{base}{}", block.text), mode.to_owned())
}

/// A sidecar config block through check-config; `error` is the text block after an invalid
/// one.
fn check_toml(work: &Workdir, block: &Block, error: Option<&Block>) -> Vec<String> {
    let (text, mode) = config_file(block);
    let file = format!("{mode}.toml");
    work.write(&file, &text);
    let out = work.check_config(&file, &mode);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !block.has("invalid") {
        if out.status.success() && stdout.contains(": ok (") {
            return vec![];
        }
        return vec![format!(
            "{}: check-config refused the example ({}):\n{text}\n{stderr}",
            block.at(),
            out.status
        )];
    }
    let Some(error) = error.filter(|e| e.lang == "text") else {
        return vec![format!(
            "{}: a toml,invalid block must be followed by a text block holding its error",
            block.at()
        )];
    };
    let mut problems = Vec::new();
    if out.status.code() != Some(64) {
        problems.push(format!(
            "{}: an invalid example must be refused with exit 64, got {} ({stdout}{stderr})",
            block.at(),
            out.status
        ));
    }
    for line in error.text.lines().filter(|l| !l.trim().is_empty()) {
        if !stderr.contains(line.trim_end()) {
            problems.push(format!(
                "{}: the error shown at {} says `{line}`, check-config said:\n{stderr}",
                block.at(),
                error.at()
            ));
        }
    }
    problems
}

/// A `Cargo.toml` snippet: it parses, and its `mcp-pqtls` dependency names real features.
fn check_cargo(block: &Block, manifest: &toml::Table) -> Vec<String> {
    let snippet: toml::Table = match toml::from_str(&block.text) {
        Ok(t) => t,
        Err(e) => return vec![format!("{}: not TOML: {e}", block.at())],
    };
    let Some(dep) = snippet
        .get("dependencies")
        .and_then(|d| d.get("mcp-pqtls"))
        .and_then(|d| d.as_table())
    else {
        return vec![format!(
            "{}: no [dependencies] mcp-pqtls table in the snippet",
            block.at()
        )];
    };
    let known = manifest["features"].as_table().expect("[features]");
    let mut problems = Vec::new();
    for feature in dep
        .get("features")
        .and_then(|f| f.as_array())
        .into_iter()
        .flatten()
    {
        let name = feature.as_str().unwrap_or_default();
        if !known.contains_key(name) {
            problems.push(format!("{}: no Cargo feature `{name}`", block.at()));
        }
    }
    problems
}

/// Pieces of `expected` split at `...`, found in `actual` in order.
fn matches_with_ellipsis(expected: &str, actual: &str) -> bool {
    let mut at = 0;
    for piece in expected.split("...").filter(|p| !p.is_empty()) {
        match actual[at..].find(piece) {
            Some(i) => at += i + piece.len(),
            None => return false,
        }
    }
    true
}

/// The commands of a shell block: each checked, and `check-config` lines run.
fn check_shell(work: &Workdir, block: &Block) -> (usize, Vec<String>) {
    let lines = shell_lines(&block.text);
    let mut checked = 0;
    let mut problems = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let words = shell_words(line.trim());
        let Some(args) = our_command(&words) else {
            continue;
        };
        checked += 1;
        problems.extend(
            check_command(args)
                .into_iter()
                .map(|p| format!("{}: {p}", block.at())),
        );
        if let [cmd, file] = args {
            if cmd == "check-config" {
                let mode = if file.contains("client") {
                    "client"
                } else {
                    "server"
                };
                let out = work.check_config(file, mode);
                let stdout = String::from_utf8_lossy(&out.stdout);
                if !out.status.success() {
                    problems.push(format!(
                        "{}: `check-config {file}` failed: {}",
                        block.at(),
                        String::from_utf8_lossy(&out.stderr)
                    ));
                }
                let said = lines
                    .get(i + 1)
                    .and_then(|l| l.trim_start().strip_prefix("# ->"))
                    .map(str::trim);
                if let Some(said) = said {
                    if !matches_with_ellipsis(said, &stdout) {
                        problems.push(format!(
                            "{}: the page says `check-config {file}` prints\n  {said}\nit printed\n  {stdout}",
                            block.at()
                        ));
                    }
                }
            }
        }
    }
    (checked, problems)
}

/// The field names of the schema table under `heading` in docs/probe-schema.md.
fn schema_fields(schema: &str, heading: &str) -> BTreeSet<String> {
    schema_rows(schema, heading).into_keys().collect()
}

/// The rows of the table under `heading`: first-column name -> the rest of the row.
fn schema_rows(schema: &str, heading: &str) -> BTreeMap<String, String> {
    schema
        .lines()
        .skip_while(|l| l.trim() != heading)
        .skip(1)
        .take_while(|l| !l.starts_with("## "))
        .filter_map(|l| {
            let row = l.strip_prefix("| `")?;
            let (name, rest) = row.split_once('`')?;
            Some((name.to_owned(), rest.to_owned()))
        })
        .collect()
}

/// The `{a, b, c}` field lists in a piece of the schema, in order.
fn brace_sets(text: &str) -> Vec<BTreeSet<String>> {
    text.split('{')
        .skip(1)
        .filter_map(|s| s.split_once('}'))
        .map(|(inside, _)| inside.split(',').map(|f| f.trim().to_owned()).collect())
        .collect()
}

/// The backticked names in `text` outside parentheses.
fn backticked_outside_parens(text: &str) -> BTreeSet<String> {
    let mut depth = 0;
    let mut outside = String::new();
    for c in text.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            c if depth == 0 => outside.push(c),
            _ => {}
        }
    }
    outside
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// What docs/probe-schema.md says each level of a report holds.
struct ProbeSchema {
    top: BTreeSet<String>,
    group: BTreeSet<String>,
    trial: BTreeSet<String>,
    server_preference: BTreeSet<String>,
    certificate: BTreeSet<String>,
    chain_entry: BTreeSet<String>,
    cipher_suite: BTreeSet<String>,
    wire: BTreeSet<String>,
    wire_entry: BTreeSet<String>,
    requirement: BTreeSet<String>,
}

impl ProbeSchema {
    fn read() -> Self {
        let schema = std::fs::read_to_string(root().join("docs/probe-schema.md")).unwrap();
        let top = schema_rows(&schema, "## Top level");
        let certificate = schema_rows(&schema, "## `certificate`");
        let trials = schema
            .lines()
            .skip_while(|l| l.trim() != "## Trials")
            .nth(2)
            .unwrap_or_default()
            .to_owned();
        let sets = |row: &str| brace_sets(top.get(row).map_or("", |s| s.as_str()));
        let wire = sets("wire");
        let first = |v: &[BTreeSet<String>], i: usize| v.get(i).cloned().unwrap_or_default();
        Self {
            top: top.keys().cloned().collect(),
            group: schema_fields(&schema, "## `groups[]`"),
            trial: first(&brace_sets(&trials), 0),
            server_preference: schema_fields(&schema, "## `server_preference`"),
            certificate: certificate.keys().cloned().collect(),
            chain_entry: backticked_outside_parens(
                certificate.get("chain").map_or("", |s| s.as_str()),
            ),
            cipher_suite: first(&sets("cipher_suites"), 0),
            wire: first(&wire, 0),
            wire_entry: first(&wire, 1),
            requirement: first(&sets("requirements"), 0),
        }
    }

    /// Where `report` has other fields than the schema says.
    fn check(&self, report: &Value) -> Vec<String> {
        let mut problems = Vec::new();
        let mut same = |what: &str, value: &Value, fields: &BTreeSet<String>| {
            let Some(obj) = value.as_object() else {
                if !value.is_null() {
                    problems.push(format!("{what} is not an object"));
                }
                return;
            };
            let keys: BTreeSet<String> = obj.keys().cloned().collect();
            if &keys != fields {
                let extra: Vec<_> = keys.difference(fields).collect();
                let missing: Vec<_> = fields.difference(&keys).collect();
                problems.push(format!(
                    "{what}: fields not in docs/probe-schema.md {extra:?}, missing {missing:?}"
                ));
            }
        };
        let items = |v: &Value| v.as_array().cloned().unwrap_or_default();
        same("the report", report, &self.top);
        for g in items(&report["groups"]) {
            same("groups[]", &g, &self.group);
        }
        same("upgrade", &report["upgrade"], &self.trial);
        same("classical", &report["classical"], &self.trial);
        same(
            "server_preference",
            &report["server_preference"],
            &self.server_preference,
        );
        for t in items(&report["server_preference"]["trials"]) {
            same("server_preference.trials[]", &t, &self.trial);
        }
        same("certificate", &report["certificate"], &self.certificate);
        for c in items(&report["certificate"]["chain"]) {
            same("certificate.chain[]", &c, &self.chain_entry);
        }
        for s in items(&report["cipher_suites"]) {
            same("cipher_suites[]", &s, &self.cipher_suite);
        }
        same("wire", &report["wire"], &self.wire);
        same("wire.pq", &report["wire"]["pq"], &self.wire_entry);
        same(
            "wire.classical",
            &report["wire"]["classical"],
            &self.wire_entry,
        );
        for r in items(&report["requirements"]) {
            same("requirements[]", &r, &self.requirement);
        }
        problems
    }
}

/// A JSON block: it parses; a probe report matches the schema. Returns whether it was a
/// probe report.
fn check_json(schema: &ProbeSchema, block: &Block) -> (bool, Vec<String>) {
    let value: Value = match serde_json::from_str(&block.text) {
        Ok(v) => v,
        Err(e) => return (false, vec![format!("{}: not JSON: {e}", block.at())]),
    };
    if value["schema"] != "mcp-pqtls.probe/v1" {
        return (false, vec![]);
    }
    let problems = schema
        .check(&value)
        .into_iter()
        .map(|p| format!("{}: {p}", block.at()))
        .collect();
    (true, problems)
}

/// GitHub's anchors of a page's headings.
fn anchors(text: &str) -> BTreeSet<String> {
    let (_, prose) = split("", text);
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = BTreeSet::new();
    for line in prose.lines() {
        let Some(heading) = line.strip_prefix('#') else {
            continue;
        };
        let heading = heading.trim_start_matches('#');
        if !heading.starts_with(' ') {
            continue;
        }
        let slug: String = heading
            .trim()
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let n = seen.entry(slug.clone()).or_insert(0);
        out.insert(if *n == 0 { slug } else { format!("{slug}-{n}") });
        *n += 1;
    }
    out
}

/// The `[text](target)` links of a page's prose (inline code removed first).
fn links(prose: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (i, line) in prose.lines().enumerate() {
        let mut plain = String::new();
        for (j, part) in line.split('`').enumerate() {
            if j % 2 == 0 {
                plain.push_str(part);
            }
        }
        let mut rest = plain.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            out.push((i + 1, after[..end].to_owned()));
            rest = &after[end..];
        }
    }
    out
}

/// A page's relative links: the file exists, the anchor is one of its headings.
fn check_links(page: &str, text: &str) -> Vec<String> {
    let (_, prose) = split(page, text);
    let dir = Path::new(page).parent().unwrap_or(Path::new(""));
    let mut problems = Vec::new();
    for (line, target) in links(&prose) {
        if target.contains("://") || target.starts_with("mailto:") {
            continue;
        }
        let (file, anchor) = match target.split_once('#') {
            Some((f, a)) => (f, Some(a)),
            None => (target.as_str(), None),
        };
        let (path, target_text): (PathBuf, String) = if file.is_empty() {
            (PathBuf::from(page), text.to_owned())
        } else {
            let path = dir.join(file);
            let full = root().join(&path);
            if !full.exists() {
                problems.push(format!("{page}:{line}: link to {target}: no such file"));
                continue;
            }
            let text = std::fs::read_to_string(&full).unwrap_or_default();
            (path, text)
        };
        if let Some(anchor) = anchor {
            if !anchors(&target_text).contains(anchor) {
                problems.push(format!(
                    "{page}:{line}: link to {target}: no heading #{anchor} in {}",
                    path.display()
                ));
            }
        }
    }
    problems
}

/// The keys a sidecar file takes, as check-config lists them when refusing an unknown one.
fn known_keys(work: &Workdir) -> BTreeSet<String> {
    keys_refused_with(work, "mode = \"server\"\nno-such-key = 1\n")
}

/// The keys a gate section (`[auth]`, `[[rules]]`...) takes, listed the same way.
fn known_section_keys(work: &Workdir, header: &str) -> BTreeSet<String> {
    keys_refused_with(work, &format!("{SERVER_BASE}{header}\nno-such-key = 1\n"))
}

/// The list of known keys in check-config's refusal of `file`.
fn keys_refused_with(work: &Workdir, file: &str) -> BTreeSet<String> {
    work.write("server.toml", file);
    let out = work.check_config("server.toml", "server");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let list = stderr
        .split_once("expected one of")
        .map_or("", |(_, list)| list);
    list.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// The table of docs/configuration.md against the binary: its keys are exactly the keys a
/// file takes, and each flag is one the sidecar of its modes lists in `--help`.
fn check_reference(text: &str, known: &BTreeSet<String>) -> (usize, Vec<String>) {
    let page = "docs/configuration.md";
    let mut problems = Vec::new();
    let mut documented = BTreeSet::new();
    let mut flags = 0;
    let rows = text
        .lines()
        .enumerate()
        .skip_while(|(_, l)| l.trim() != "## Keys and flags")
        .take_while(|(_, l)| !l.starts_with("## Values"))
        .filter(|(_, l)| l.starts_with("| ") && !l.starts_with("| key ") && !l.starts_with("|---"));
    for (i, row) in rows {
        let cells: Vec<&str> = row.split(" | ").collect();
        let [keys, flag_cell, modes, ..] = cells[..] else {
            problems.push(format!(
                "{page}:{}: not a row of key | flag | modes | ...",
                i + 1
            ));
            continue;
        };
        for key in keys.trim_start_matches("| ").split('`').skip(1).step_by(2) {
            documented.insert(key.trim_matches(|c| c == '[' || c == ']').to_owned());
        }
        let sidecars: &[&str] = match modes {
            "both" => &["server", "client"],
            m if m.starts_with("server") => &["server"],
            m if m.starts_with("client") => &["client"],
            other => {
                problems.push(format!("{page}:{}: modes `{other}`?", i + 1));
                continue;
            }
        };
        for flag in flag_cell.split_whitespace().flat_map(flags_in) {
            flags += 1;
            for sidecar in sidecars {
                if !lists_flag(&help(&[sidecar.to_string()]), &flag) {
                    problems.push(format!(
                        "{page}:{}: `mcp-pqtls {sidecar}` has no flag {flag}",
                        i + 1
                    ));
                }
            }
        }
    }
    for key in known.difference(&documented) {
        problems.push(format!("{page}: key `{key}` is not in the reference table"));
    }
    for key in documented.difference(known) {
        problems.push(format!(
            "{page}: the table documents `{key}`, which no sidecar file takes"
        ));
    }
    (flags, problems)
}

/// A gate section's key table in docs/gate.md (under `heading`, up to the next `## `) against
/// the keys the section takes.
fn check_section_table(text: &str, heading: &str, known: &BTreeSet<String>) -> Vec<String> {
    let documented: BTreeSet<String> = text
        .lines()
        .skip_while(|l| l.trim() != heading)
        .skip(1)
        .take_while(|l| !l.starts_with("## "))
        .filter(|l| l.starts_with("| `"))
        .filter_map(|l| l.split(" | ").next())
        .flat_map(|cell| {
            cell.split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    let mut problems = Vec::new();
    for key in known.difference(&documented) {
        problems.push(format!(
            "docs/gate.md {heading}: key `{key}` is not in its table"
        ));
    }
    for key in documented.difference(known) {
        problems.push(format!(
            "docs/gate.md {heading}: the table documents `{key}`, which the section does not take"
        ));
    }
    problems
}

// ---------------------------------------------------------------------------------------
// The tests.

/// Counts of checked examples per (page, kind), filled by the tests that check them.
fn count(counts: &mut BTreeMap<(String, String), usize>, page: &str, kind: &str, n: usize) {
    *counts
        .entry((page.to_owned(), kind.to_owned()))
        .or_default() += n;
}

#[test]
fn every_example_of_every_page_is_checked() {
    let work = Workdir::new();
    let manifest: toml::Table =
        toml::from_str(&std::fs::read_to_string(root().join("Cargo.toml")).unwrap()).unwrap();
    let schema = ProbeSchema::read();
    let mut counts = BTreeMap::new();
    let mut problems = Vec::new();

    for page in pages() {
        let (blocks, prose) = split(&page.path, &page.text);
        for (i, block) in blocks.iter().enumerate() {
            match block.lang.as_str() {
                "toml" if block.has("cargo") => {
                    problems.extend(check_cargo(block, &manifest));
                    count(&mut counts, &page.path, "cargo", 1);
                }
                "toml" => {
                    problems.extend(check_toml(&work, block, blocks.get(i + 1)));
                    count(&mut counts, &page.path, "toml", 1);
                }
                "sh" => {
                    let (n, p) = check_shell(&work, block);
                    problems.extend(p);
                    count(&mut counts, &page.path, "command", n);
                }
                "json" => {
                    let (probe, p) = check_json(&schema, block);
                    problems.extend(p);
                    count(&mut counts, &page.path, "json", 1);
                    if probe {
                        count(&mut counts, &page.path, "probe-report", 1);
                    }
                }
                "rust" => {
                    // Compiled by `cargo test --doc`: src/lib.rs includes docs/library.md.
                    if page.path != "docs/library.md" {
                        problems.push(format!(
                            "{}: Rust examples belong in docs/library.md, whose blocks are doctests",
                            block.at()
                        ));
                    }
                    if block.has("ignore") {
                        problems.push(format!("{}: an ignored doctest checks nothing", block.at()));
                    }
                    count(&mut counts, &page.path, "rust", 1);
                }
                "text" => {}
                "" => problems.push(format!(
                    "{}: a block without a language (```text for output and sketches)",
                    block.at()
                )),
                other => problems.push(format!(
                    "{}: ```{other} is not checked; use toml, sh, json, rust or text",
                    block.at()
                )),
            }
        }
        for (line, span) in inline_code(&prose) {
            let words: Vec<String> = span.split_whitespace().map(str::to_owned).collect();
            // A bare `mcp-pqtls` in prose names the binary, not a command.
            if let Some(args) = our_command(&words).filter(|a| !a.is_empty()) {
                problems.extend(
                    check_command(args)
                        .into_iter()
                        .map(|p| format!("{}:{line}: {p}", page.path)),
                );
                count(&mut counts, &page.path, "command", 1);
            }
        }
    }

    for (page, kind, min) in MINIMUM_CHECKED {
        let n = counts
            .get(&(page.to_string(), kind.to_string()))
            .copied()
            .unwrap_or(0);
        if n < *min {
            problems.push(format!(
                "{page}: {n} checked {kind} example(s), expected at least {min}"
            ));
        }
    }
    let lib = std::fs::read_to_string(root().join("src/lib.rs")).unwrap();
    if !lib.contains(r#"include_str!("../docs/library.md")"#) {
        problems.push("src/lib.rs does not include docs/library.md as doctests".to_owned());
    }
    println!("checked: {counts:?}");
    fail_if_any(problems);
}

#[test]
fn relative_links_and_their_anchors_resolve() {
    let mut problems = Vec::new();
    for page in pages() {
        problems.extend(check_links(&page.path, &page.text));
    }
    fail_if_any(problems);
}

#[test]
fn the_configuration_reference_lists_every_key_and_flag() {
    let work = Workdir::new();
    let known = known_keys(&work);
    assert!(
        known.contains("listen") && known.contains("audit"),
        "{known:?}"
    );
    let text = std::fs::read_to_string(root().join("docs/configuration.md")).unwrap();
    let (flags, problems) = check_reference(&text, &known);
    fail_if_any(problems);
    assert!(
        flags >= 30,
        "only {flags} flags found in the reference table"
    );
}

#[test]
fn the_gate_reference_lists_every_key_of_each_section() {
    let work = Workdir::new();
    let text = std::fs::read_to_string(root().join("docs/gate.md")).unwrap();
    let mut problems = Vec::new();
    for (header, heading) in [
        ("[auth]", "## `[auth]`: bearer tokens"),
        ("[[rules]]", "## `[[rules]]`: per-method policy"),
        ("[[rate-limit]]", "## `[[rate-limit]]`: token buckets"),
        ("[audit]", "## `[audit]`: one record per message"),
    ] {
        let known = known_section_keys(&work, header);
        assert!(known.len() >= 4, "{header}: {known:?}");
        problems.extend(check_section_table(&text, heading, &known));
    }
    fail_if_any(problems);
}

/// Kills the child process when the test ends, however it ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What `/metrics` serves, as `(family, type)` without the `mcp_pqtls_` prefix: a server
/// sidecar with the gate (examples/gate.toml), its admin listener asked over HTTP.
fn served_metrics(work: &Workdir) -> BTreeMap<String, String> {
    use std::io::{BufRead, BufReader, Read, Write};

    let child = Command::new(BIN)
        .current_dir(work.dir.path())
        .args(["server", "--config", "examples/gate.toml"])
        .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .env("RUST_LOG", "error")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the server sidecar");
    let mut child = KillOnDrop(child);
    let mut summary = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut summary)
        .unwrap();
    let admin = summary
        .split_once("; admin http://")
        .map(|(_, rest)| rest.split(';').next().unwrap_or(rest).trim().to_owned())
        .unwrap_or_else(|| panic!("no admin address in the start-up line: {summary}"));
    let mut conn = std::net::TcpStream::connect(&admin).unwrap();
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).unwrap();
    response
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE mcp_pqtls_"))
        .filter_map(|l| l.split_once(' '))
        // OpenMetrics names a counter family without the `_total` its samples carry.
        .map(|(name, kind)| match kind.trim() {
            "counter" => (format!("{name}_total"), "counter".to_owned()),
            kind => (name.to_owned(), kind.to_owned()),
        })
        .collect()
}

/// Served metrics against the pages: each family in docs/operations.md's table with its
/// type (the gate's in docs/gate.md's list), and each family of that table served.
fn check_metrics(served: &BTreeMap<String, String>, operations: &str, gate: &str) -> Vec<String> {
    let table: BTreeMap<String, String> = operations
        .lines()
        .skip_while(|l| l.trim() != "## Metrics")
        .take_while(|l| !l.starts_with("## Reload"))
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| {
            let (name, rest) = l.split_once('`')?;
            let kind = rest.trim_start_matches(" |").split(" | ").next()?.trim();
            Some((name.to_owned(), kind.to_owned()))
        })
        .collect();
    let gate_listed: BTreeSet<String> = gate
        .lines()
        .skip_while(|l| !l.starts_with("**Metrics**"))
        .take_while(|l| !l.trim().is_empty())
        .flat_map(|l| {
            l.split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .map(|m| m.split('{').next().unwrap_or_default().to_owned())
        .filter(|m| m.starts_with("gate_"))
        .collect();
    let mut problems = Vec::new();
    for (name, kind) in served {
        if name.starts_with("gate_") {
            if !gate_listed.contains(name) {
                problems.push(format!(
                    "docs/gate.md: metric `{name}` is served but not listed"
                ));
            }
            continue;
        }
        match table.get(name) {
            Some(k) if k == kind => {}
            Some(k) => problems.push(format!(
                "docs/operations.md: `{name}` is a {kind}, the table says {k}"
            )),
            None => problems.push(format!(
                "docs/operations.md: metric `{name}` ({kind}) is served but not in the table"
            )),
        }
    }
    for name in table.keys().filter(|n| !served.contains_key(*n)) {
        problems.push(format!(
            "docs/operations.md: `{name}` is in the table but not served"
        ));
    }
    for name in gate_listed.iter().filter(|n| !served.contains_key(*n)) {
        problems.push(format!("docs/gate.md: `{name}` is listed but not served"));
    }
    problems
}

#[test]
fn every_metric_the_admin_listener_serves_is_documented() {
    let work = Workdir::new();
    let served = served_metrics(&work);
    assert!(
        served.contains_key("handshakes_total") && served.contains_key("gate_refusals_total"),
        "{served:?}"
    );
    let read = |page: &str| std::fs::read_to_string(root().join(page)).unwrap();
    fail_if_any(check_metrics(
        &served,
        &read("docs/operations.md"),
        &read("docs/gate.md"),
    ));
}

/// The text of every source file under `dir`.
fn sources(dir: &Path, into: &mut String) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, into);
        } else if path.extension().is_some_and(|e| e == "rs") {
            into.push_str(&std::fs::read_to_string(&path).unwrap());
        }
    }
}

/// The log table of docs/operations.md: each message (the `code` of its second column) is
/// one the code writes.
fn check_log_messages(operations: &str, source: &str) -> (usize, Vec<String>) {
    let mut problems = Vec::new();
    let mut n = 0;
    let rows = operations
        .lines()
        .enumerate()
        .skip_while(|(_, l)| l.trim() != "## Logs")
        .take_while(|(_, l)| !l.starts_with("## Admin"))
        .filter(|(_, l)| {
            l.starts_with("| INFO") || l.starts_with("| WARN") || l.starts_with("| ERROR")
        });
    for (i, row) in rows {
        let message = row.split(" | ").nth(1).unwrap_or_default();
        for text in message.split('`').skip(1).step_by(2) {
            // Values quoted in a message (`pq-preferred`) are not messages.
            if text.len() < 8 || !text.starts_with(char::is_uppercase) {
                continue;
            }
            n += 1;
            if !source.contains(&format!("\"{text}")) {
                problems.push(format!(
                    "docs/operations.md:{}: no log line `{text}` in src/",
                    i + 1
                ));
            }
        }
    }
    (n, problems)
}

#[test]
fn every_log_line_the_operations_page_names_is_one_the_code_writes() {
    let mut source = String::new();
    sources(&root().join("src"), &mut source);
    let operations = std::fs::read_to_string(root().join("docs/operations.md")).unwrap();
    let (n, problems) = check_log_messages(&operations, &source);
    fail_if_any(problems);
    assert!(n >= 15, "only {n} log lines found in the table");
}

/// Each check fed a broken example must report it: a check that cannot fail checks nothing.
#[test]
fn the_checks_catch_broken_examples() {
    let work = Workdir::new();
    let block = |lang: &str, attrs: &[&str], text: &str| Block {
        page: "self-test".to_owned(),
        line: 1,
        lang: lang.to_owned(),
        attrs: attrs.iter().map(|a| a.to_string()).collect(),
        text: text.to_owned(),
    };
    let words = |s: &str| s.split_whitespace().map(str::to_owned).collect::<Vec<_>>();

    // Commands: an unknown subcommand, a nested one, a flag of another command.
    assert!(check_command(&words("server --listen 127.0.0.1:1 --cert a --key b")).is_empty());
    assert!(!check_command(&words("serve --listen 127.0.0.1:1")).is_empty());
    assert!(!check_command(&words("certs initialize DIR")).is_empty());
    assert!(!check_command(&words("client --cert a.pem")).is_empty());
    assert!(!check_command(&words("bench handshakes URL [--request-bytes N]")).is_empty());
    assert!(!check_command(&words("bench requests URL -x")).is_empty());
    let (n, p) = check_shell(
        &work,
        &block(
            "sh",
            &[],
            "mcp-pqtls probe localhost:8443 \\\n    --ca certs/dev/ca.pem --verbose &\n",
        ),
    );
    assert_eq!((n, p.len()), (1, 1), "{p:?}");

    // check-config lines and what they print.
    let said = "mcp-pqtls check-config examples/server.toml\n# -> examples/server.toml: ok (client mode: ...)\n";
    assert_eq!(check_shell(&work, &block("sh", &[], said)).1.len(), 1);

    // TOML: a bad value, a fragment of the wrong mode, an invalid block that is valid, an
    // error text that is not the error.
    assert!(check_toml(
        &work,
        &block("toml", &[], "policy = \"pq-preferred\"\n"),
        None
    )
    .is_empty());
    assert!(!check_toml(&work, &block("toml", &[], "policy = \"pq-maybe\"\n"), None).is_empty());
    assert!(!check_toml(&work, &block("toml", &[], "sni = \"example.com\"\n"), None).is_empty());
    assert!(check_toml(
        &work,
        &block("toml", &["client"], "sni = \"example.com\"\n"),
        None
    )
    .is_empty());
    let error = block("text", &[], "unknown policy mode `pq-maybe`\n");
    let valid = block("toml", &["invalid"], "policy = \"pq-preferred\"\n");
    assert!(!check_toml(&work, &valid, Some(&error)).is_empty());
    let invalid = block("toml", &["invalid"], "policy = \"pq-maybe\"\n");
    assert!(check_toml(&work, &invalid, Some(&error)).is_empty());
    let other_error = block("text", &[], "unknown group `X448`\n");
    assert!(!check_toml(&work, &invalid, Some(&other_error)).is_empty());

    // Cargo snippets: a feature that does not exist.
    let manifest: toml::Table =
        toml::from_str(&std::fs::read_to_string(root().join("Cargo.toml")).unwrap()).unwrap();
    let cargo = |features: &str| {
        block(
            "toml",
            &["cargo"],
            &format!("[dependencies]\nmcp-pqtls = {{ path = \".\", features = [{features}] }}\n"),
        )
    };
    assert!(check_cargo(&cargo("\"gate\""), &manifest).is_empty());
    assert!(!check_cargo(&cargo("\"gate\", \"redis\""), &manifest).is_empty());

    // JSON: not JSON; a probe report with a field the schema lacks, or without one it has.
    let schema = ProbeSchema::read();
    assert!(!check_json(&schema, &block("json", &[], "{\"a\": 1,}"))
        .1
        .is_empty());
    let probe = pages()
        .iter()
        .flat_map(|p| split(&p.path, &p.text).0)
        .find(|b| b.lang == "json" && b.text.contains("mcp-pqtls.probe/v1"))
        .expect("a probe report among the examples");
    let mut report: Value = serde_json::from_str(&probe.text).unwrap();
    assert!(schema.check(&report).is_empty());
    report["groups"][0]["rtt_ms"] = 1.into();
    assert_eq!(schema.check(&report).len(), 1);
    report["groups"][0]
        .as_object_mut()
        .unwrap()
        .remove("rtt_ms");
    report["certificate"]
        .as_object_mut()
        .unwrap()
        .remove("verified");
    assert_eq!(schema.check(&report).len(), 1);

    // The reference table: a key no file takes, a key left out, a flag of the other mode.
    let known = known_keys(&work);
    let table = |rows: &str| {
        format!("## Keys and flags\n\n| key | flag | modes | default | meaning |\n|---|---|---|---|---|\n{rows}\n## Values\n")
    };
    let all: String = known
        .iter()
        .map(|k| format!("| `{k}` | — | both | — | x |\n"))
        .collect();
    assert!(check_reference(&table(&all), &known).1.is_empty());
    assert_eq!(
        check_reference(
            &table(&format!("{all}| `colour` | — | both | — | x |\n")),
            &known
        )
        .1
        .len(),
        1
    );
    assert_eq!(
        check_reference(
            &table(&all.replacen("| `sni` | — | both | — | x |\n", "", 1)),
            &known
        )
        .1
        .len(),
        1
    );
    let cert = all.replacen("| `cert` | — | both |", "| `cert` | `--cert` | client |", 1);
    assert_eq!(check_reference(&table(&cert), &known).1.len(), 1);

    // A gate section's table: a key left out, a key the section does not take.
    let audit = known_section_keys(&work, "[audit]");
    let rows: String = audit.iter().map(|k| format!("| `{k}` | x |\n")).collect();
    let page = |rows: &str| format!("## A\n\n| key | meaning |\n|---|---|\n{rows}\n## B\n");
    assert!(check_section_table(&page(&rows), "## A", &audit).is_empty());
    let fewer = rows.replacen("| `path` | x |\n", "", 1);
    assert_eq!(check_section_table(&page(&fewer), "## A", &audit).len(), 1);
    let more = format!("{rows}| `rotate` | x |\n");
    assert_eq!(check_section_table(&page(&more), "## A", &audit).len(), 1);

    // Metrics: one served but not documented, one documented with another type.
    let served: BTreeMap<String, String> = [("a_total", "counter"), ("gate_b_total", "counter")]
        .map(|(n, k)| (n.to_owned(), k.to_owned()))
        .into();
    let ops = |kind: &str| {
        format!(
            "## Metrics\n\n| metric | type |\n|---|---|\n| `a_total` | {kind} | x |\n\n## Reload\n"
        )
    };
    let gate = "**Metrics** (with the gate on): `gate_b_total`.\n";
    assert!(check_metrics(&served, &ops("counter"), gate).is_empty());
    assert_eq!(check_metrics(&served, &ops("gauge"), gate).len(), 1);
    assert_eq!(
        check_metrics(&served, &ops("counter"), "**Metrics**: none\n").len(),
        1
    );

    // Log lines: one the code does not write.
    let logs = "## Logs\n\n| level | message |\n|---|---|\n| WARN | `Connection refused: max-connections reached` | x |\n## Admin\n";
    assert_eq!(
        check_log_messages(logs, "warn!(\"Connection refused at accept\")")
            .1
            .len(),
        1
    );
    assert!(check_log_messages(
        logs,
        "warn!(\"Connection refused: max-connections reached\")"
    )
    .1
    .is_empty());

    // Links: a missing file and a missing anchor.
    let page = "docs/self-test.md";
    assert!(check_links(page, "[ok](gate.md#auth-bearer-tokens)").is_empty());
    assert!(!check_links(page, "[gone](gateway.md)").is_empty());
    assert!(!check_links(page, "[gone](gate.md#no-such-heading)").is_empty());
    assert!(!check_links(page, "[gone](#nowhere)\n\n# Here\n").is_empty());
}

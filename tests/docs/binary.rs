//! The binary: help texts, and a working directory where the examples' paths exist.

use super::*;

/// `mcp-pqtls WORDS... --help`, cached.
pub(crate) fn help(words: &[String]) -> String {
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
pub(crate) fn subcommands(help: &str) -> BTreeSet<String> {
    help.lines()
        .skip_while(|l| l.trim() != "Commands:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// Whether `help` lists `flag` (`--listen`, `-c`) as a whole word.
pub(crate) fn lists_flag(help: &str, flag: &str) -> bool {
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
pub(crate) fn check_command(words: &[String]) -> Vec<String> {
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
pub(crate) fn flags_in(word: &str) -> Vec<String> {
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
pub(crate) fn shell_words(line: &str) -> Vec<String> {
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
pub(crate) fn shell_lines(text: &str) -> Vec<String> {
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
pub(crate) fn our_command(words: &[String]) -> Option<&[String]> {
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
pub(crate) struct Workdir {
    pub(crate) dir: tempfile::TempDir,
}

impl Workdir {
    pub(crate) fn new() -> Self {
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
    pub(crate) fn check_config(&self, file: &str, mode: &str) -> Output {
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

    pub(crate) fn write(&self, name: &str, text: &str) {
        std::fs::write(self.dir.path().join(name), text).unwrap();
    }
}

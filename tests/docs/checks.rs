//! The checks, as functions returning problems (so that the self-test can feed them broken
//! examples).

use super::*;

/// The top-level keys a TOML text sets (before its first table header).
pub(crate) fn top_level_keys(toml: &str) -> BTreeSet<String> {
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
pub(crate) fn config_file(block: &Block) -> (String, String) {
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
pub(crate) fn check_toml(work: &Workdir, block: &Block, error: Option<&Block>) -> Vec<String> {
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
pub(crate) fn check_cargo(block: &Block, manifest: &toml::Table) -> Vec<String> {
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
pub(crate) fn matches_with_ellipsis(expected: &str, actual: &str) -> bool {
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
pub(crate) fn check_shell(work: &Workdir, block: &Block) -> (usize, Vec<String>) {
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
pub(crate) fn schema_fields(schema: &str, heading: &str) -> BTreeSet<String> {
    schema_rows(schema, heading).into_keys().collect()
}

/// The rows of the table under `heading`: first-column name -> the rest of the row.
pub(crate) fn schema_rows(schema: &str, heading: &str) -> BTreeMap<String, String> {
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
pub(crate) fn brace_sets(text: &str) -> Vec<BTreeSet<String>> {
    text.split('{')
        .skip(1)
        .filter_map(|s| s.split_once('}'))
        .map(|(inside, _)| inside.split(',').map(|f| f.trim().to_owned()).collect())
        .collect()
}

/// The backticked names in `text` outside parentheses.
pub(crate) fn backticked_outside_parens(text: &str) -> BTreeSet<String> {
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
pub(crate) struct ProbeSchema {
    pub(crate) top: BTreeSet<String>,
    pub(crate) group: BTreeSet<String>,
    pub(crate) trial: BTreeSet<String>,
    pub(crate) server_preference: BTreeSet<String>,
    pub(crate) certificate: BTreeSet<String>,
    pub(crate) chain_entry: BTreeSet<String>,
    pub(crate) cipher_suite: BTreeSet<String>,
    pub(crate) wire: BTreeSet<String>,
    pub(crate) wire_entry: BTreeSet<String>,
    pub(crate) requirement: BTreeSet<String>,
}

impl ProbeSchema {
    pub(crate) fn read() -> Self {
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
    pub(crate) fn check(&self, report: &Value) -> Vec<String> {
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
pub(crate) fn check_json(schema: &ProbeSchema, block: &Block) -> (bool, Vec<String>) {
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
pub(crate) fn anchors(text: &str) -> BTreeSet<String> {
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
pub(crate) fn links(prose: &str) -> Vec<(usize, String)> {
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
pub(crate) fn check_links(page: &str, text: &str) -> Vec<String> {
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
pub(crate) fn known_keys(work: &Workdir) -> BTreeSet<String> {
    keys_refused_with(work, "mode = \"server\"\nno-such-key = 1\n")
}

/// The keys a gate section (`[auth]`, `[[rules]]`...) takes, listed the same way.
pub(crate) fn known_section_keys(work: &Workdir, header: &str) -> BTreeSet<String> {
    keys_refused_with(work, &format!("{SERVER_BASE}{header}\nno-such-key = 1\n"))
}

/// The list of known keys in check-config's refusal of `file`.
pub(crate) fn keys_refused_with(work: &Workdir, file: &str) -> BTreeSet<String> {
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
pub(crate) fn check_reference(text: &str, known: &BTreeSet<String>) -> (usize, Vec<String>) {
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
pub(crate) fn check_section_table(
    text: &str,
    heading: &str,
    known: &BTreeSet<String>,
) -> Vec<String> {
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

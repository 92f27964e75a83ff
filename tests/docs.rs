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

#[path = "docs/binary.rs"]
mod binary;
#[path = "docs/checks.rs"]
mod checks;
#[path = "docs/pages.rs"]
mod pages;
#[path = "docs/served.rs"]
mod served;

use self::binary::*;
use self::checks::*;
use self::pages::*;
use self::served::*;

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
    ("docs/gate.md", "toml", 4),
    ("docs/gate.md", "command", 1),
    ("docs/gate.md", "json", 1),
    ("docs/probe.md", "command", 3),
    ("docs/probe.md", "probe-report", 1),
    ("docs/interop.md", "command", 2),
    ("docs/performance.md", "command", 7),
    ("docs/deploy.md", "command", 1),
];

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
        (
            "[fleet]",
            "## `[fleet]`: rate limits, approvals and pins shared by the replicas",
        ),
    ] {
        let known = known_section_keys(&work, header);
        assert!(known.len() >= 4, "{header}: {known:?}");
        problems.extend(check_section_table(&text, heading, &known));
    }
    fail_if_any(problems);
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

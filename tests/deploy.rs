//! The deploy/ files, checked as the tools that consume them would: the systemd unit by
//! `systemd-analyze` (verify, and its exposure level), the Kubernetes manifest parsed as YAML
//! and its wiring followed (probes to the admin port the ConfigMap's config serves, Secrets as
//! directories, the Service and the PodDisruptionBudget to the Pod's labels, memory sized from
//! benches/RESULTS.md) with its config through `mcp-pqtls check-config`, and the Debian
//! package built by cargo-deb, read with dpkg-deb, installed with `dpkg -i` into this
//! machine (root only), started as its system user with its own config on 127.0.0.1, and
//! purged. `interop/install-deb.sh` installs cargo-deb (and systemd, dpkg where missing).

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use support::process::{install_or_skip, Proc};
use support::upstream::get_plain;

const BIN: &str = env!("CARGO_BIN_EXE_mcp-pqtls");
const UNIT: &str = "deploy/systemd/mcp-pqtls-server.service";
const MANIFEST: &str = "deploy/kubernetes/mcp-pqtls.yaml";
/// The installed package's version: a package of this version found installed is a leftover
/// of this test, which may replace it; any other is someone's, which it must not touch.
const TEST_VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "-0+deploytest");
/// systemd-analyze's scale is 0.0 (locked down) to 10.0; the unit measured 1.2 ("OK") when
/// it was written. Over 2.0 means a hardening line was lost.
const MAX_EXPOSURE: f64 = 2.0;

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn read(rel: &str) -> String {
    fs::read_to_string(repo(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn output(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("{:?}: {e}", cmd.get_program()))
}

/// Runs `cmd`, which must succeed; its stdout.
fn run(cmd: &mut Command) -> String {
    let out = output(cmd);
    assert!(
        out.status.success(),
        "{cmd:?}: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// cargo-deb's path, after the install script has also made sure of systemd-analyze and
/// dpkg-deb; `None` (skipped) where it cannot run outside CI.
fn tools() -> Option<PathBuf> {
    install_or_skip(
        "interop/install-deb.sh",
        "cargo-deb, systemd-analyze, dpkg-deb",
    )
}

// --- systemd -----------------------------------------------------------------------------

/// A unit file's `Key=value` lines in order (comments and section headers left out).
fn directives(unit: &str) -> Vec<(String, String)> {
    unit.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with(['#', ';', '[']))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

fn directive(unit: &str, key: &str) -> String {
    let found: Vec<_> = directives(unit)
        .into_iter()
        .filter(|(k, _)| k == key)
        .collect();
    assert_eq!(found.len(), 1, "{key}= once in the unit: {found:?}");
    found[0].1.clone()
}

/// `systemd-analyze verify`: what it prints (warnings on a unit it still loads go to stderr
/// with exit 0, so both are returned).
fn verify(unit: &Path) -> (bool, String) {
    let out = output(Command::new("systemd-analyze").arg("verify").arg(unit));
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    (out.status.success(), text)
}

/// The "Overall exposure level" of `systemd-analyze security --offline` (no running systemd
/// needed), and whether it stayed within `--threshold` (systemd's tenths: 20 is 2.0).
fn exposure(unit: &Path) -> (f64, bool) {
    let threshold = format!("--threshold={}", (MAX_EXPOSURE * 10.0) as u32);
    let out = output(
        Command::new("systemd-analyze")
            .args(["security", "--offline=true", &threshold])
            .arg(unit),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}\n{:?}", out.stderr));
    let level = line
        .rsplit(':')
        .next()
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number in {line:?}"));
    (level, out.status.success())
}

/// The unit with ExecStart's binary replaced by `bin`, written to `dir` under its own name.
fn unit_running(dir: &Path, bin: &str) -> PathBuf {
    let unit = read(UNIT);
    let exec = directive(&unit, "ExecStart");
    let packaged = exec.split_whitespace().next().unwrap();
    let path = dir.join("mcp-pqtls-server.service");
    fs::write(
        &path,
        unit.replace(
            &format!("ExecStart={packaged}"),
            &format!("ExecStart={bin}"),
        ),
    )
    .unwrap();
    path
}

#[test]
fn the_systemd_unit_verifies_and_its_exposure_stays_ok() {
    if tools().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // verify refuses a unit whose ExecStart binary does not exist, and /usr/bin/mcp-pqtls is
    // there only once the .deb is installed: here the same unit runs the binary under test
    // (the package test verifies the installed unit as it is, where it can install).
    let unit = unit_running(dir.path(), BIN);
    let (ok, said) = verify(&unit);
    assert!(
        ok && said.trim().is_empty(),
        "systemd-analyze verify:\n{said}"
    );

    let (level, within) = exposure(&repo(UNIT));
    assert!(
        level <= MAX_EXPOSURE && within,
        "exposure {level} (threshold {MAX_EXPOSURE}, passed: {within})"
    );

    // The same checks fail on a unit that is wrong, so they are not vacuous: a value systemd
    // cannot parse (verify says so, exit 0 all the same), and the unit without its hardening.
    let text = fs::read_to_string(&unit).unwrap();
    let bad = dir.path().join("bad");
    fs::create_dir(&bad).unwrap();
    let broken = bad.join("mcp-pqtls-server.service");
    fs::write(
        &broken,
        text.replace("ProtectSystem=strict", "ProtectSystem=sometimes"),
    )
    .unwrap();
    let (_, said) = verify(&broken);
    assert!(
        said.contains("ProtectSystem") || said.contains("protect system"),
        "{said}"
    );
    let soft: String = text
        .lines()
        .take_while(|l| !l.starts_with("# Hardening"))
        .map(|l| format!("{l}\n"))
        .collect();
    fs::write(&broken, soft + "[Install]\nWantedBy=multi-user.target\n").unwrap();
    let (level, within) = exposure(&broken);
    assert!(level > MAX_EXPOSURE && !within, "unhardened unit: {level}");
}

// --- Kubernetes --------------------------------------------------------------------------

fn documents() -> Vec<Value> {
    use serde::Deserialize;
    let text = read(MANIFEST);
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).expect("a YAML document"))
        .filter(|doc| !doc.is_null())
        .collect()
}

fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<_> = docs.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "one {kind} in {MANIFEST}");
    found[0]
}

fn str_of<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what}: a string, not {v}"))
}

fn arr<'a>(v: &'a Value, what: &str) -> &'a Vec<Value> {
    v.as_array()
        .unwrap_or_else(|| panic!("{what}: a list, not {v}"))
}

/// A container port given by number or by the name of one of `container`'s ports.
fn port(container: &Value, p: &Value) -> u16 {
    if let Some(n) = p.as_u64() {
        return u16::try_from(n).unwrap();
    }
    let name = str_of(p, "port");
    arr(&container["ports"], "ports")
        .iter()
        .find(|q| q["name"] == name)
        .and_then(|q| q["containerPort"].as_u64())
        .map(|n| u16::try_from(n).unwrap())
        .unwrap_or_else(|| panic!("no port named {name} in {}", container["name"]))
}

fn labels(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .unwrap_or_else(|| panic!("labels: a map, not {v}"))
        .iter()
        .map(|(k, v)| (k.clone(), str_of(v, k).to_owned()))
        .collect()
}

fn selects(selector: &BTreeMap<String, String>, pod: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| pod.get(k) == Some(v))
}

/// CPU in millicores ("500m", "2", "1.5").
fn millicores(q: &str) -> u64 {
    match q.strip_suffix('m') {
        Some(m) => m.parse().unwrap(),
        None => (q.parse::<f64>().unwrap() * 1000.0) as u64,
    }
}

/// Memory in bytes ("128Mi", "1Gi", "500M", "1048576").
fn bytes(q: &str) -> u64 {
    let units = [
        ("Ki", 1u64 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("K", 1000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
    ];
    for (suffix, factor) in units {
        if let Some(n) = q.strip_suffix(suffix) {
            return n.parse::<u64>().unwrap() * factor;
        }
    }
    q.parse().unwrap()
}

fn toml_int(config: &toml::Table, key: &str) -> u64 {
    config
        .get(key)
        .and_then(toml::Value::as_integer)
        .and_then(|n| u64::try_from(n).ok())
        .unwrap_or_else(|| panic!("{key}: set it in the ConfigMap, the manifest is sized from it"))
}

fn address(config: &toml::Table, key: &str) -> SocketAddr {
    config
        .get(key)
        .and_then(toml::Value::as_str)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("{key}: an address in the ConfigMap's config"))
}

fn seconds(config: &toml::Table, key: &str) -> u64 {
    let text = config
        .get(key)
        .and_then(toml::Value::as_str)
        .unwrap_or_else(|| panic!("{key}: set in the config"));
    humantime::parse_duration(text).unwrap().as_secs()
}

/// The largest idle RSS and bytes per connection that benches/RESULTS.md's "Memory per idle
/// TLS connection" tables measured for our server.
fn measured_memory() -> (u64, u64) {
    let results = read("benches/RESULTS.md");
    let (mut rss_kib, mut per_conn) = (0, 0);
    let mut columns: Option<(usize, usize)> = None;
    let mut in_section = false;
    for line in results.lines() {
        if line.starts_with('#') {
            in_section = line.contains("Memory per idle TLS connection");
            columns = None;
            continue;
        }
        if !in_section || !line.starts_with('|') {
            continue;
        }
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        if columns.is_none() {
            let at = |name: &str| cells.iter().position(|c| *c == name);
            columns = at("RSS before (KiB)").zip(at("bytes per connection"));
            continue;
        }
        if let (Some((rss, conn)), true) = (columns, cells[0].starts_with("mcp-pqtls server")) {
            rss_kib = rss_kib.max(cells[rss].parse().unwrap());
            per_conn = per_conn.max(cells[conn].parse().unwrap());
        }
    }
    assert!(
        rss_kib > 0 && per_conn > 0,
        "no memory rows for mcp-pqtls in benches/RESULTS.md"
    );
    (rss_kib * 1024, per_conn)
}

#[test]
fn the_kubernetes_manifest_wires_the_sidecar_probes_secrets_and_budget() {
    let docs = documents();
    let (config_map, deployment) = (one(&docs, "ConfigMap"), one(&docs, "Deployment"));
    let (service, budget) = (one(&docs, "Service"), one(&docs, "PodDisruptionBudget"));
    let pod = &deployment["spec"]["template"]["spec"];
    let pod_labels = labels(&deployment["spec"]["template"]["metadata"]["labels"]);

    // Two containers: the sidecar (`mcp-pqtls server`) and the MCP server beside it.
    let containers = arr(&pod["containers"], "containers");
    assert_eq!(containers.len(), 2, "the sidecar and an MCP server");
    let is_sidecar = |c: &&Value| c["args"].get(0).and_then(Value::as_str) == Some("server");
    let sidecar = containers
        .iter()
        .find(is_sidecar)
        .expect("a container running `server`");
    let mcp = containers.iter().find(|c| !is_sidecar(c)).unwrap();

    // Its config is the ConfigMap's, mounted as a directory.
    let args: Vec<&str> = arr(&sidecar["args"], "args")
        .iter()
        .map(|a| str_of(a, "arg"))
        .collect();
    let at = args
        .iter()
        .position(|a| *a == "--config")
        .expect("--config");
    let config_path = Path::new(args[at + 1]);
    let volumes = arr(&pod["volumes"], "volumes");
    let volume = |name: &str| volumes.iter().find(|v| v["name"] == name).unwrap();
    let mounts = arr(&sidecar["volumeMounts"], "volumeMounts");
    let mount_of = |file: &Path| {
        mounts
            .iter()
            .find(|m| file.parent() == Some(Path::new(str_of(&m["mountPath"], "mountPath"))))
            .unwrap_or_else(|| panic!("{} is in no mounted directory", file.display()))
    };
    let config_volume = volume(str_of(&mount_of(config_path)["name"], "name"));
    assert_eq!(
        config_volume["configMap"]["name"],
        config_map["metadata"]["name"]
    );
    let file_name = config_path.file_name().unwrap().to_str().unwrap();
    let config_text = str_of(
        &config_map["data"][file_name],
        "the config in the ConfigMap",
    );
    let config: toml::Table = toml::from_str(config_text).unwrap();

    // Probes on the admin listener the config serves, reachable from the kubelet.
    let admin = address(&config, "admin");
    assert!(
        admin.ip().is_unspecified(),
        "admin {admin}: the kubelet probes from outside the Pod"
    );
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        let get = &sidecar[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        assert_eq!(
            port(sidecar, &get["port"]),
            admin.port(),
            "{probe} on the admin port"
        );
    }
    // The upstream is the MCP container, over the Pod's loopback.
    let upstream = config["upstream"].as_str().expect("upstream").to_owned();
    let upstream_port: u16 = upstream.rsplit(':').next().unwrap().parse().unwrap();
    assert!(upstream.starts_with("http://127.0.0.1:"), "{upstream}");
    let mcp_ports: Vec<u16> = arr(&mcp["ports"], "ports")
        .iter()
        .map(|p| port(mcp, &p["containerPort"]))
        .collect();
    assert!(
        mcp_ports.contains(&upstream_port),
        "{upstream} vs {mcp_ports:?}"
    );

    // Secrets and the ConfigMap as directories: the kubelet's update swaps a symlink in the
    // directory, which a subPath mount never sees.
    for c in containers {
        for m in c["volumeMounts"].as_array().into_iter().flatten() {
            let v = volume(str_of(&m["name"], "name"));
            if v.get("secret").is_some() || v.get("configMap").is_some() {
                assert!(
                    m.get("subPath").is_none(),
                    "{} mounts {} with subPath",
                    c["name"],
                    m["name"]
                );
            }
        }
    }
    // The certificate, key and ticket keys are files of Secret mounts.
    for key in ["cert", "key", "ticket-keys"] {
        let file = Path::new(config[key].as_str().expect(key)).to_owned();
        let v = volume(str_of(&mount_of(&file)["name"], "name"));
        assert!(
            v.get("secret").is_some(),
            "{key} = {} is not in a Secret",
            file.display()
        );
    }
    // The ticket-keys file is private only under the sidecar's own group (fsGroup's).
    let security = &pod["securityContext"];
    assert_eq!(
        security["runAsGroup"], security["fsGroup"],
        "runAsGroup = fsGroup"
    );

    // Drain before the kill.
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(
        grace > seconds(&config, "drain-timeout"),
        "terminationGracePeriodSeconds {grace}"
    );

    // Resources: requests within limits, memory for what the config lets in at most.
    let res = &sidecar["resources"];
    let (cpu, cpu_max) = (
        millicores(str_of(&res["requests"]["cpu"], "cpu")),
        millicores(str_of(&res["limits"]["cpu"], "cpu")),
    );
    let (mem, mem_max) = (
        bytes(str_of(&res["requests"]["memory"], "memory")),
        bytes(str_of(&res["limits"]["memory"], "memory")),
    );
    assert!(
        0 < cpu && cpu <= cpu_max && 0 < mem && mem <= mem_max,
        "{res}"
    );
    let (idle, per_connection) = measured_memory();
    let ceiling = idle
        + toml_int(&config, "max-connections") * per_connection
        + toml_int(&config, "max-buffered-body-bytes");
    assert!(
        mem >= ceiling,
        "memory request {mem} < {ceiling} (benches/RESULTS.md and the config)"
    );

    // The Service reaches the TLS listener, not the admin one; the Deployment, the Service and
    // the budget all select the Pod.
    let selector = labels(&deployment["spec"]["selector"]["matchLabels"]);
    assert!(selects(&selector, &pod_labels), "the Deployment's selector");
    assert!(
        selects(&labels(&service["spec"]["selector"]), &pod_labels),
        "the Service's selector"
    );
    let listen = address(&config, "listen");
    let targets: Vec<u16> = arr(&service["spec"]["ports"], "ports")
        .iter()
        .map(|p| port(sidecar, &p["targetPort"]))
        .collect();
    assert!(
        targets.contains(&listen.port()) && !targets.contains(&admin.port()),
        "{targets:?}"
    );
    assert_eq!(labels(&budget["spec"]["selector"]["matchLabels"]), selector);
    let (replicas, min) = (
        deployment["spec"]["replicas"].as_u64().unwrap(),
        budget["spec"]["minAvailable"]
            .as_u64()
            .expect("minAvailable as a number"),
    );
    assert!(
        0 < min && min < replicas,
        "minAvailable {min} of {replicas}: a drain must be possible"
    );

    // The config itself, with the Secrets' files as the kubelet would lay them out.
    check_config_with_secrets(config_text, sidecar, &volume);
}

/// Runs `check-config` on the ConfigMap's config with each Secret mount's path moved to a
/// temp directory holding what the Secret would: the dev PKI's certificate and key under the
/// names the config gives, and a ticket-keys file made by `ticket-keys rotate`.
fn check_config_with_secrets<'a>(text: &str, sidecar: &Value, volume: &dyn Fn(&str) -> &'a Value) {
    let config: toml::Table = toml::from_str(text).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let pki = tmp.path().join("pki");
    run(Command::new(BIN).args(["certs", "init"]).arg(&pki));
    let mut text = text.to_owned();
    for m in arr(&sidecar["volumeMounts"], "volumeMounts") {
        let name = str_of(&m["name"], "name");
        if volume(name).get("secret").is_none() {
            continue;
        }
        let dir = tmp.path().join(name);
        fs::create_dir(&dir).unwrap();
        text = text.replace(str_of(&m["mountPath"], "mountPath"), dir.to_str().unwrap());
    }
    let moved: toml::Table = toml::from_str(&text).unwrap();
    let path = |key: &str| PathBuf::from(moved[key].as_str().unwrap());
    assert_ne!(
        moved["cert"], config["cert"],
        "the certificate is not under a Secret mount"
    );
    fs::copy(pki.join("server.pem"), path("cert")).unwrap();
    fs::copy(pki.join("server.key"), path("key")).unwrap();
    run(Command::new(BIN)
        .args(["ticket-keys", "rotate"])
        .arg(path("ticket-keys")));
    let file = tmp.path().join("server.toml");
    fs::write(&file, &text).unwrap();
    let said = run(Command::new(BIN).arg("check-config").arg(&file));
    assert!(said.contains(": ok (server mode"), "{said}");
}

// --- the Debian package ------------------------------------------------------------------

/// Builds the .deb from the binary under test into `out`: `--no-build --profile dev` packs
/// `<target-dir>/debug/mcp-pqtls` (stripped) instead of a release build, which costs CI ~8
/// minutes; the package's layout, scripts and config are what a release `cargo deb` makes.
fn build_deb(cargo_deb: &Path, out: &Path) -> PathBuf {
    run(Command::new(cargo_deb)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "--no-build",
            "--profile",
            "dev",
            "--no-dbgsym",
            "--no-separate-debug-symbols",
        ])
        .args([
            "--fast",
            "--deb-version",
            TEST_VERSION,
            "--quiet",
            "--output",
        ])
        .arg(out));
    let debs: Vec<_> = fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    assert_eq!(debs.len(), 1, "{debs:?}");
    debs[0].clone()
}

/// The GNU build id of an ELF file (`readelf -n`): it survives `strip`, so the packaged binary
/// can be matched to the one under test.
fn build_id(elf: &Path) -> String {
    let notes = run(Command::new("readelf").arg("-n").arg(elf));
    notes
        .lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: "))
        .unwrap_or_else(|| panic!("no build id in {}", elf.display()))
        .to_owned()
}

/// Takes a machine-wide lock: two runs of this test (two checkouts, or a test run twice at
/// once) must not build in one target directory nor install and purge the same package
/// under each other. In /run/lock whatever TMPDIR says (it may differ between the runs).
fn machine_lock() -> fs::File {
    let open = |dir: &Path| {
        fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("mcp-pqtls-deploy-test.lock"))
    };
    let file = open(Path::new("/run/lock"))
        .or_else(|_| open(&std::env::temp_dir()))
        .unwrap_or_else(|e| panic!("a lock file: {e}"));
    file.lock().unwrap();
    file
}

fn installed_version() -> Option<String> {
    let out = output(Command::new("dpkg-query").args([
        "-W",
        "-f",
        "${Version} ${db:Status-Abbrev}",
        "mcp-pqtls",
    ]));
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    // A purged package is unknown (exit 1); a removed one keeps a line ("rc").
    (out.status.success() && !text.is_empty()).then_some(text)
}

/// Purges the package (and the files the test put in its config directory) however the
/// test ends.
struct Installed {
    extra: Vec<PathBuf>,
}

impl Drop for Installed {
    fn drop(&mut self) {
        for f in &self.extra {
            let _ = fs::remove_file(f);
        }
        let _ = Command::new("dpkg").args(["--purge", "mcp-pqtls"]).output();
    }
}

#[tokio::test]
async fn the_deb_package_installs_runs_as_its_user_and_purges() {
    let Some(cargo_deb) = tools() else { return };
    let tmp = tempfile::tempdir().unwrap();
    // cargo-deb stages the stripped binary in <target>/debian/mcp-pqtls, and the package is
    // installed machine-wide: one lock for both.
    let _lock = machine_lock();
    let deb = build_deb(&cargo_deb, tmp.path());

    // What is in it: the binary (the one under test), the unit, the config as a conffile, the
    // maintainer scripts; and the unit's paths are the package's.
    let contents = run(Command::new("dpkg-deb").arg("--contents").arg(&deb));
    let files: BTreeMap<String, String> = contents
        .lines()
        .filter_map(|l| {
            let mode = l.split_whitespace().next()?.to_owned();
            Some((
                l.rsplit(' ').next()?.trim_start_matches('.').to_owned(),
                mode,
            ))
        })
        .collect();
    let unit_text = read(UNIT);
    let exec = directive(&unit_text, "ExecStart");
    let mut exec_words = exec.split_whitespace();
    let binary = exec_words.next().unwrap();
    assert_eq!(
        files.get(binary).map(String::as_str),
        Some("-rwxr-xr-x"),
        "{binary}: {contents}"
    );
    let unit_path = "/lib/systemd/system/mcp-pqtls-server.service";
    assert!(files.contains_key(unit_path), "{contents}");
    let words: Vec<&str> = exec_words.collect();
    let at = words
        .iter()
        .position(|w| *w == "--config")
        .expect("--config in ExecStart");
    let config_path = words[at + 1];
    let conffiles = run(Command::new("dpkg-deb")
        .args(["--info"])
        .arg(&deb)
        .arg("conffiles"));
    assert_eq!(
        conffiles.lines().collect::<Vec<_>>(),
        [config_path],
        "conffiles"
    );
    assert!(files.contains_key(config_path), "{contents}");
    let config_dir = Path::new(config_path).parent().unwrap();
    assert_eq!(
        directive(&unit_text, "ReadOnlyPaths"),
        config_dir.to_str().unwrap()
    );
    let state = format!("/var/lib/{}", directive(&unit_text, "StateDirectory"));
    assert_eq!(directive(&unit_text, "WorkingDirectory"), state);
    let info = run(Command::new("dpkg-deb").arg("--info").arg(&deb));
    for script in ["postinst", "prerm", "postrm"] {
        // dpkg-deb marks an executable member with `*`.
        let listed = |l: &str| {
            let words: Vec<&str> = l.split_whitespace().collect();
            words.contains(&script) && words.contains(&"*") && l.ends_with("#!/bin/sh")
        };
        assert!(info.lines().any(listed), "{script}, executable: {info}");
    }
    assert!(info.contains(&format!("Version: {TEST_VERSION}")), "{info}");
    let unpacked = tmp.path().join("unpacked");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked));
    assert_eq!(
        build_id(&unpacked.join(binary.trim_start_matches('/'))),
        build_id(Path::new(BIN)),
        "cargo-deb packed another binary than {BIN}"
    );
    let packaged_config: toml::Table = toml::from_str(
        &fs::read_to_string(unpacked.join(config_path.trim_start_matches('/'))).unwrap(),
    )
    .unwrap();
    // systemd reads a bare number as seconds.
    let stop: u64 = directive(&unit_text, "TimeoutStopSec")
        .parse()
        .expect("TimeoutStopSec in s");
    assert!(
        stop > seconds(&packaged_config, "drain-timeout"),
        "TimeoutStopSec {stop}"
    );

    // Installing needs root, and changes this machine (a package, a system user).
    let root = run(Command::new("id").arg("-u")).trim() == "0";
    if !root {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs as root: dpkg -i must be tested"
        );
        eprintln!("SKIPPED: dpkg -i needs root (the package was built and read)");
        return;
    }
    if let Some(v) = installed_version() {
        assert!(
            v.starts_with(TEST_VERSION),
            "mcp-pqtls {v} is installed; not replacing it"
        );
    }
    let mut installed = Installed { extra: Vec::new() };
    run(Command::new("dpkg").arg("-i").arg(&deb));
    // Again: postinst must take an existing user and directory (an upgrade or reinstall).
    run(Command::new("dpkg").arg("-i").arg(&deb));
    assert!(installed_version().is_some_and(|v| v == format!("{TEST_VERSION} ii")));

    // The system user the unit runs as, made by postinst.
    let user = directive(&unit_text, "User");
    assert_eq!(directive(&unit_text, "Group"), user);
    let passwd = run(Command::new("getent").args(["passwd", &user]));
    let fields: Vec<&str> = passwd.trim().split(':').collect();
    let (uid, gid): (u32, u32) = (fields[2].parse().unwrap(), fields[3].parse().unwrap());
    assert!(
        uid < 1000 && fields[6].ends_with("nologin"),
        "a system user: {passwd}"
    );
    let group = run(Command::new("getent").args(["group", &user]));
    assert!(group.starts_with(&format!("{user}:x:{gid}:")), "{group}");
    let dir = fs::metadata(config_dir).unwrap();
    assert_eq!(
        (dir.uid(), dir.gid(), dir.permissions().mode() & 0o777),
        (0, gid, 0o750),
        "{}: root's, readable by the service's group only",
        config_dir.display()
    );
    let home = fs::metadata(&state).unwrap();
    assert_eq!(
        (home.uid(), home.permissions().mode() & 0o777),
        (uid, 0o700)
    );

    // The installed unit, as it is, now that its binary exists.
    let (ok, said) = verify(Path::new(unit_path));
    assert!(ok && said.trim().is_empty(), "verify {unit_path}:\n{said}");

    // A dev PKI where the shipped config expects the certificate, laid out as its comment
    // says; the installed binary, as the unit runs it (its user, its working directory), on
    // 127.0.0.1 (flags override the file's addresses).
    let pki = tmp.path().join("pki");
    run(Command::new(binary).args(["certs", "init"]).arg(&pki));
    let cert = PathBuf::from(packaged_config["cert"].as_str().unwrap());
    let key = PathBuf::from(packaged_config["key"].as_str().unwrap());
    installed.extra = vec![cert.clone(), key.clone()];
    fs::copy(pki.join("server.pem"), &cert).unwrap();
    fs::copy(pki.join("server.key"), &key).unwrap();
    run(Command::new("chown")
        .arg(format!("{user}:{user}"))
        .arg(&key));
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    let said = run(Command::new(binary).arg("check-config").arg(config_path));
    assert!(said.contains(": ok (server mode"), "{said}");

    let mut cmd = Command::new("setpriv");
    cmd.args([
        &format!("--reuid={user}"),
        &format!("--regid={user}"),
        "--init-groups",
        binary,
    ])
    .args([
        "server",
        "--config",
        config_path,
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
    ])
    .current_dir(&state);
    let sidecar = Proc::spawn_command(cmd);
    sidecar.wait_log(&["Server sidecar started"]);
    let (status, body) = get_plain(&format!(
        "http://127.0.0.1:{}/readyz",
        sidecar.admin.unwrap()
    ))
    .await;
    assert_eq!((status, body.trim()), (200, "ready"));
    // Started clean: the key's mode as the config's comment lays it out draws no warning.
    let log = sidecar.log.lock().unwrap().clone();
    assert!(
        !log.iter()
            .any(|l| l.contains("\"WARN\"") || l.contains("\"ERROR\"")),
        "{log:#?}"
    );
    let report = run(Command::new(binary)
        .args([
            "probe",
            &format!("127.0.0.1:{}", sidecar.port),
            "--sni",
            "localhost",
            "--ca",
        ])
        .arg(pki.join("ca.pem"))
        .args([
            "--groups",
            "X25519MLKEM768",
            "--require",
            "X25519MLKEM768",
            "--format",
            "json",
        ]));
    assert!(report.contains("X25519MLKEM768"), "{report}");
    drop(sidecar);

    // Purged: nothing of the package is left but its user (Debian's policy).
    drop(installed);
    assert_eq!(installed_version(), None);
    for gone in [binary, unit_path, config_dir.to_str().unwrap(), &state] {
        assert!(!Path::new(gone).exists(), "{gone} is left after the purge");
    }
}

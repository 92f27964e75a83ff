#!/usr/bin/env python3
"""Writes benches/RESULTS.md from criterion's estimates (target/criterion/**/new/estimates.json).

Ratios are taken between benchmarks of the same run, on the same machine: pq group / X25519
for each certificate algorithm, HelloRetryRequest / direct, resumed / full, ours / tokio-rustls.
"""
import json
import os
import platform
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CRITERION = os.path.join(ROOT, "target", "criterion")
GROUPS = ["X25519MLKEM768", "SecP256r1MLKEM768", "SecP384r1MLKEM1024", "MLKEM768", "MLKEM1024",
          "X25519", "secp256r1", "secp384r1"]
KEY_ALGS = ["ecdsa-p256", "ed25519", "rsa-2048", "ml-dsa-65"]


def median_ns(*path):
    with open(os.path.join(CRITERION, *path, "new", "estimates.json")) as f:
        return json.load(f)["median"]["point_estimate"]


def sh(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def main(out):
    cpu = next((l.split(":", 1)[1].strip() for l in sh("lscpu").splitlines()
                if l.startswith("Model name")), platform.processor())
    lines = [
        "# Benchmark results",
        "",
        "Written by `benches/run` (criterion, release build; medians of 20 samples). All numbers",
        "come from one run on one machine; compare the ratios, not the absolute values, across",
        "machines.",
        "",
        f"- machine: {cpu}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}",
        f"- {sh('rustc', '--version')}",
        f"- rustls, aws-lc-rs: as locked in Cargo.lock",
        "",
        "## Full handshake, client and server in memory (no sockets)",
        "",
        "Handshakes per second on one core (client + server work together); in parentheses the",
        "ratio to X25519 with the same certificate.",
        "",
        "| group | " + " | ".join(KEY_ALGS) + " |",
        "|---|" + "---|" * len(KEY_ALGS),
    ]
    for g in GROUPS:
        row = [g]
        for alg in KEY_ALGS:
            ns = median_ns("full_handshake", g, alg)
            base = median_ns("full_handshake", "X25519", alg)
            row.append(f"{1e9 / ns:,.0f} ({base / ns:.2f}×)")
        lines.append("| " + " | ".join(row) + " |")

    direct = median_ns("paths", "direct_X25519MLKEM768")
    retry = median_ns("paths", "hello_retry_X25519MLKEM768")
    resumed = median_ns("paths", "resumed_X25519MLKEM768")
    plain = median_ns("server_path", "tokio-rustls_X25519MLKEM768")
    ours = median_ns("server_path", "mcp-pqtls_X25519MLKEM768")
    lines += [
        "",
        "## Paths (X25519MLKEM768, ECDSA P-256)",
        "",
        "| path | µs per handshake | ratio |",
        "|---|---|---|",
        f"| direct (pq key share) | {direct / 1e3:.1f} | 1.00× |",
        f"| HelloRetryRequest (X25519 share first, server insists on pq) | {retry / 1e3:.1f} | {retry / direct:.2f}× direct |",
        f"| resumed with a ticket | {resumed / 1e3:.1f} | {resumed / direct:.2f}× direct |",
        f"| tokio-rustls server, in-memory pipe | {plain / 1e3:.1f} | 1.00× |",
        f"| mcp-pqtls `PqAcceptor` (lazy ClientHello, policy, per-group config) | {ours / 1e3:.1f} | {ours / plain:.2f}× tokio-rustls (+{(ours - plain) / 1e3:.1f} µs) |",
        "",
        "## Policy decision",
        "",
        "| decision | ns |",
        "|---|---|",
        f"| pq client | {median_ns('policy', 'decide_pq_client'):.0f} |",
        f"| classical client, two fallback rules checked | {median_ns('policy', 'decide_classical_client_rules'):.0f} |",
        "",
    ]
    with open(out, "w") as f:
        f.write("\n".join(lines))
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "benches", "RESULTS.md"))

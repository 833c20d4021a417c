#!/usr/bin/env python3
"""Checks the dependency rules of docs/design/architecture.md with `cargo metadata`.

Foundations depend on nothing of ours; smtp-in and smtp-out meet only at the
spool (never import each other or the pipeline); admin/portal never import the
mail path; only the binary depends on everything. A violation fails CI.
"""
import json
import subprocess
import sys

meta = json.loads(subprocess.check_output(["cargo", "metadata", "--format-version", "1", "--no-deps"]))
ours = {p["name"] for p in meta["packages"]}
deps = {p["name"]: {d["name"] for d in p["dependencies"] if d["name"] in ours and d.get("kind") is None}
        for p in meta["packages"]}

# siegel-policy is pure decision logic (no I/O), so the config may embed its rules.
FOUNDATIONS = {
    "siegel-types": set(),
    "siegel-smtp-wire": {"siegel-types"},
    "siegel-policy": {"siegel-types"},
    "siegel-config": {"siegel-types", "siegel-policy"},
    # Outbound HTTP (CRL, WKD, webhooks) with the SSRF guard: a leaf that any
    # stage, the portal or the admin may use, so it imports nothing of ours.
    "siegel-fetch": set(),
}
FORBIDDEN = {
    "siegel-smtp-in": {"siegel-smtp-out", "siegel-pipeline", "siegel-admin", "siegel-portal"},
    "siegel-smtp-out": {"siegel-smtp-in", "siegel-pipeline", "siegel-admin", "siegel-portal"},
    "siegel-spool": {"siegel-smtp-in", "siegel-smtp-out", "siegel-pipeline", "siegel-admin", "siegel-store"},
    "siegel-pipeline": {"siegel-smtp-in", "siegel-smtp-out", "siegel-admin", "siegel-portal"},
    "siegel-admin": {"siegel-smtp-in", "siegel-smtp-out", "siegel-pipeline"},
    "siegel-store": {"siegel-smtp-in", "siegel-smtp-out", "siegel-pipeline", "siegel-spool", "siegel-admin"},
    # The filter is a library the pipeline calls; it knows the spool only for
    # the quarantine (held entries) and never the mail path around it.
    "siegel-filter": {"siegel-smtp-in", "siegel-smtp-out", "siegel-pipeline", "siegel-admin", "siegel-store"},
    # GINA's library has no I/O of its own: no store, no spool, no HTTP, no mail path.
    "siegel-gina": {"siegel-smtp-in", "siegel-smtp-out", "siegel-pipeline", "siegel-spool", "siegel-store",
                    "siegel-admin", "siegel-portal"},
    # The portal talks to the store and hands mail to the spool's public API, never the mail path.
    "siegel-portal": {"siegel-smtp-in", "siegel-smtp-out", "siegel-pipeline", "siegel-admin"},
}

problems = []
for name, allowed in FOUNDATIONS.items():
    extra = deps.get(name, set()) - allowed
    if extra:
        problems.append(f"{name} is a foundation but depends on {sorted(extra)}")
for name, banned in FORBIDDEN.items():
    bad = deps.get(name, set()) & banned
    if bad:
        problems.append(f"{name} must not depend on {sorted(bad)}")
for name, d in deps.items():
    if "siegel" in d:
        problems.append(f"{name} depends on the binary")

if problems:
    print("layering check failed:\n  " + "\n  ".join(problems))
    sys.exit(1)
print(f"layering check: {len(deps)} crates ok")

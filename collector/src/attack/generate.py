#!/usr/bin/env python3
"""Writes ics-attack.json, the collector's vendored ATT&CK for ICS matrix, from MITRE's STIX
bundle (ics-attack/ics-attack.json of https://github.com/mitre-attack/attack-stix-data):

    python3 generate.py PATH/TO/ics-attack.json PATH/TO/LICENSE.txt > ics-attack.json

Kept: the matrix's tactics in order, and every technique that is neither revoked nor
deprecated, with its tactics and the first sentence of its description (links and citations
taken out), and MITRE's license (the repository's LICENSE.txt, which every copy reproduces).
The collector embeds the result; nothing is fetched at run time."""
import json
import re
import sys


def external_id(obj):
    for ref in obj.get("external_references", []):
        if ref.get("source_name") == "mitre-attack":
            return ref["external_id"]
    raise SystemExit(f"{obj['id']} has no ATT&CK id")


def first_sentence(text):
    text = re.sub(r"\(Citation:[^)]*\)", "", text)
    text = re.sub(r"\[([^\]]+)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"<[^>]+>", "", text)
    text = " ".join(text.split())
    m = re.match(r"(.+?[.!?])(\s|$)", text)
    return (m.group(1) if m else text).strip()


def main(path, license_path):
    objects = json.load(open(path, encoding="utf-8"))["objects"]
    live = [o for o in objects if not o.get("revoked") and not o.get("x_mitre_deprecated")]
    by_id = {o["id"]: o for o in live}
    collection = next(o for o in live if o["type"] == "x-mitre-collection")
    matrix = next(o for o in live if o["type"] == "x-mitre-matrix")
    tactics = []
    for ref in matrix["tactic_refs"]:
        t = by_id[ref]
        tactics.append({
            "id": external_id(t),
            "name": t["name"],
            "shortname": t["x_mitre_shortname"],
        })
    short = {t["shortname"]: t["id"] for t in tactics}
    techniques = []
    for o in live:
        if o["type"] != "attack-pattern":
            continue
        phases = [p["phase_name"] for p in o.get("kill_chain_phases", [])
                  if p.get("kill_chain_name") == "mitre-ics-attack"]
        techniques.append({
            "id": external_id(o),
            "name": o["name"],
            "tactics": [short[p] for p in phases],
            "description": first_sentence(o.get("description", "")),
        })
    techniques.sort(key=lambda t: t["id"])
    out = {
        "domain": "ATT&CK for ICS",
        "version": collection["x_mitre_version"],
        "modified": collection["modified"],
        "source": "https://github.com/mitre-attack/attack-stix-data (ics-attack/ics-attack.json)",
        "attribution": "\u00a9 2025 The MITRE Corporation. This work is reproduced and distributed "
                       "with the permission of The MITRE Corporation.",
        "license": open(license_path, encoding="utf-8").read(),
        "tactics": [{k: t[k] for k in ("id", "name")} for t in tactics],
        "techniques": techniques,
    }
    json.dump(out, sys.stdout, indent=1, ensure_ascii=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

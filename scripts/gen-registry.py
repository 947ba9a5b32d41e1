#!/usr/bin/env python3
"""Builds data/registry.json, the image table pushgate embeds, from the reference facts.

Inputs (../shared/reference, see its SOURCES.md):
  platformsh-docs-registry.json         current images: runtime or service, disk, min disk, versions
  platformsh-registry-version-union.json every version ever listed (2020-2026): "was it ever real"
  adobe-commerce-system-requirements.yml versions Adobe Commerce releases support on Cloud
  ece-tools-eol.yaml                     end-of-life dates ece-tools warns about
  platformsh-docs-php_extensions.yaml    PHP extensions per PHP version (grid and dedicated)
  adobe-cloud-php-extensions.yaml        the extensions of Adobe Commerce Cloud's PHP images
Only facts are carried over. Run: python3 scripts/gen-registry.py [REFERENCE_DIR]
"""
import json
import re
import sys
from pathlib import Path

import yaml

ref = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "shared" / "reference")
out = Path(__file__).resolve().parents[1] / "data" / "registry.json"

current = json.loads((ref / "platformsh-docs-registry.json").read_text())
union = json.loads((ref / "platformsh-registry-version-union.json").read_text())
adobe = yaml.safe_load((ref / "adobe-commerce-system-requirements.yml").read_text())
eol = yaml.safe_load((ref / "ece-tools-eol.yaml").read_text())
php_ext = yaml.safe_load((ref / "platformsh-docs-php_extensions.yaml").read_text())
adobe_ext = yaml.safe_load((ref / "adobe-cloud-php-extensions.yaml").read_text())

# Relationship endpoints each service image offers by default (Platform.sh service docs);
# services may declare more under `configuration.endpoints`.
ENDPOINTS = {
    "mariadb": ["mysql", "mariadb"], "mysql": ["mysql", "mariadb"], "oracle-mysql": ["mysql"],
    "postgresql": ["postgresql"], "redis": ["redis", "redis-replica"], "valkey": ["valkey", "valkey-replica", "redis"],
    "memcached": ["memcached"], "opensearch": ["opensearch"], "elasticsearch": ["elasticsearch"],
    "elasticsearch-enterprise": ["elasticsearch"], "rabbitmq": ["rabbitmq"], "solr": ["solr"],
    "mongodb": ["mongodb"], "mongodb-enterprise": ["mongodb"], "influxdb": ["influxdb"],
    "kafka": ["kafka"], "chrome-headless": ["http"], "varnish": ["http", "http+stats"],
    "gotenberg": ["http"], "mercure": ["mercure"], "clickhouse": ["clickhouse", "clickhouse-http"],
    "network-storage": [], "vault-kms": [],
}
# Adobe's requirement table names -> image types on Cloud (`mysql` there is MariaDB).
ADOBE = {
    "MariaDB": ["mysql", "mariadb"], "MariaDB Cloud": ["mysql", "mariadb"], "MySQL": ["oracle-mysql"],
    "OpenSearch": ["opensearch"], "OpenSearch Cloud": ["opensearch"], "Elasticsearch": ["elasticsearch"],
    "RabbitMQ": ["rabbitmq"], "RabbitMQ Cloud": ["rabbitmq"], "Redis": ["redis"], "Redis Cloud": ["redis"],
    "Valkey": ["valkey"], "PHP": ["php"], "Varnish": ["varnish"],
}


def clean(v):
    return v.replace(" Galera", "").rstrip("*").strip()


images = {}
for name, info in current.items():
    versions = {}
    for group in ("versions", "versions-dedicated-gen-2"):
        for status in ("supported", "deprecated"):
            for v in (info.get(group) or {}).get(status, []) or []:
                v = clean(v)
                if versions.get(v) != "supported":
                    versions[v] = status
    images[name] = {
        "runtime": bool(info.get("runtime")),
        "disk": bool(info.get("disk")),
        "min_disk": info.get("min_disk_size"),
        "endpoints": ENDPOINTS.get(name, [] if info.get("runtime") else [name]),
        "versions": versions,
    }

for name, info in union.items():
    if name.startswith("_") or name in ("application", "composable"):
        continue
    img = images.setdefault(name, {
        "runtime": bool(info.get("runtime")), "disk": not info.get("runtime"), "min_disk": None,
        "endpoints": ENDPOINTS.get(name, [] if info.get("runtime") else [name]), "versions": {},
    })
    for status in ("supported", "deprecated", "legacy"):
        for v in info.get(status, []) or []:
            img["versions"].setdefault(clean(v), "retired")

for release, services in adobe.items():
    for key, value in services.items():
        for image in ADOBE.get(key, []):
            for v in re.findall(r"\d+(?:\.\d+)?", str(value)):
                images[image]["versions"].setdefault(v, "retired")

# mysql on Magento Cloud is MariaDB: every MariaDB version is a mysql version and vice versa.
for a, b in (("mysql", "mariadb"), ("mariadb", "mysql")):
    for v, s in images[a]["versions"].items():
        images[b]["versions"].setdefault(v, s)

eol_dates = {k: {str(e["version"]): str(e["eol"]) for e in v} for k, v in eol.items()}
eol_dates["mysql"] = eol_dates.get("mariadb", {})

# The PHP extensions a `runtime.extensions` entry may name, per PHP version: every extension
# the grid or dedicated images list for it, plus those of Adobe Commerce Cloud's images.
# Names compare with `-` as `_` (`pdo-sqlsrv` and `pdo_sqlsrv`).
def ext_name(e):
    return str(e).lower().replace("-", "_")


adobe_all = {ext_name(e) for key in ("default", "installed", "available") for e in adobe_ext.get(key) or []}
extensions = {}
for flavour in ("grid", "dedicated"):
    for version, groups in (php_ext.get(flavour) or {}).items():
        names = extensions.setdefault(str(version), set(adobe_all))
        items = groups.values() if isinstance(groups, dict) else [groups]
        for group in items:
            names.update(ext_name(e) for e in group or [])

registry = {
    "_source": "generated by scripts/gen-registry.py from shared/reference (see README)",
    "images": {k: images[k] for k in sorted(images)},
    # Variants that share their base image's versions. `-persistent` keeps data on disk.
    "aliases": {
        "redis-persistent": {"base": "redis", "disk": True},
        "valkey-persistent": {"base": "valkey", "disk": True},
        "mariadb-replica": {"base": "mariadb", "disk": True},
        "mysql-replica": {"base": "mysql", "disk": True},
        "postgresql-replica": {"base": "postgresql", "disk": True},
    },
    "eol": eol_dates,
}
out.write_text(json.dumps(registry, indent=1, sort_keys=False) + "\n")
print(f"wrote {out}: {len(images)} images")
# A file of its own: only an app that lists extensions needs it, and every hook run would
# otherwise parse it.
ext_out = out.with_name("php_extensions.json")
ext_out.write_text(json.dumps({v: sorted(n) for v, n in sorted(extensions.items())}, indent=1) + "\n")
print(f"wrote {ext_out}: {len(extensions)} PHP versions")

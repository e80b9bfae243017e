"""Which app may import which: records at the bottom, the wiring at the top.

Read from the source (every import, module level or not), so a new import
against the grain fails here before it tangles the house.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Bottom to top. An app imports only apps on lower floors, never one on its
# own floor: ingest, lookup, timeline, browse and partners each stand on
# records, the library and the audit log, not on each other.
FLOORS = [
    {"records", "accounts", "outbound"},
    {"lib"},
    {"audit"},
    {"ingest", "lookup", "timeline", "browse", "partners", "team"},
    {"actions"},
    {"queues", "deliveries", "reconciliation"},
    {"opspanel"},
]
FLOOR = {app: level for level, apps in enumerate(FLOORS) for app in apps}
# Beside the product: it may read the product, the product never imports it.
# The sandbox checks itself against the contract's own parsing, and its
# demo wiring points partners at its receiver through the partners service.
BESIDE = {
    "sandbox": {
        "records",
        "lib",
        "ingest.contract",
        "ingest.signatures",
        "partners.models",
        "partners.services",
    }
}


def imports_of(app):
    """{imported module (dotted, ours only)} for every module of ``app``."""
    found = set()
    for path in (ROOT / app).rglob("*.py"):
        if "migrations" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            found |= {name for name in names if name.split(".")[0] in FLOOR | BESIDE}
    return found


def graph():
    """{app: {apps it imports}}: the picture the README draws."""
    return {
        app: {name.split(".")[0] for name in imports_of(app)} - {app}
        for app in sorted(FLOOR | BESIDE)
    }


def test_every_app_of_the_checkout_is_placed_on_a_floor():
    apps = {path.parent.name for path in ROOT.glob("*/apps.py")} | {"outbound", "opspanel"}

    assert apps - FLOOR.keys() - BESIDE.keys() == set()


def test_no_app_imports_one_on_its_own_floor_or_above():
    against_the_grain = sorted(
        (app, other)
        for app, imported in graph().items()
        if app in FLOOR
        for other in imported
        if other not in FLOOR or FLOOR[other] >= FLOOR[app]
    )

    assert against_the_grain == []


def test_the_sandbox_reads_only_the_contract_and_the_records():
    for app, allowed in BESIDE.items():
        stray = {
            name
            for name in imports_of(app)
            if name.split(".")[0] != app
            and not any(name == a or name.startswith(f"{a}.") for a in allowed)
        }
        assert stray == set(), app


def test_no_product_app_imports_the_celery_app_object():
    users = sorted(
        app for app in FLOOR if app != "opspanel" and "opspanel.celery" in imports_of(app)
    )

    assert users == []

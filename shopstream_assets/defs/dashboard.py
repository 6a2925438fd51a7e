"""The Streamlit dashboard as the graph's last node: what it reads, where it runs."""

import re
from pathlib import Path

import dagster as dg

from shopstream.settings import load_settings
from shopstream_assets.defs.streaming.assets import BRONZE_KEY

# Every SQL the dashboard runs lives in dashboard/queries.py (its ledger reads, all of Bronze, in
# streaming/ledger.py), and a relation's name is its asset key, so the lineage is read from there
# rather than kept by hand beside it.
DASHBOARD_QUERIES = Path(__file__).resolve().parents[2] / "dashboard" / "queries.py"
_RELATION = re.compile(r"\b(bronze|silver|gold)\.([a-z_][a-z0-9_]*)\b")


def relations_read(queries: Path = DASHBOARD_QUERIES) -> list[dg.AssetKey]:
    """Asset keys of the relations named in ``queries``.

    Bronze's three tables (events, rejects, ingestion ledger) are one asset, bronze/clickstream_events.
    """
    keys = {
        BRONZE_KEY if layer == "bronze" else dg.AssetKey([layer, name])
        for layer, name in _RELATION.findall(queries.read_text())
    }
    return sorted(keys, key=lambda key: key.to_user_string())


dashboard = dg.AssetSpec(
    key=dg.AssetKey(["dashboard", "shopstream"]),
    description=(
        "Streamlit dashboard (dashboard/streamlit_app.py): KPIs, funnel, products and users from Gold, "
        "and a live view of the stream from Bronze. Started by `shopstream up`."
    ),
    deps=relations_read(),
    group_name="dashboard",
    kinds={"streamlit"},
    owners=["team:data-engineering"],
    metadata={
        "url": dg.MetadataValue.url(f"http://127.0.0.1:{load_settings().dashboard_port}"),
        "entry": "dashboard/streamlit_app.py",
        "queries": "dashboard/queries.py",
    },
)

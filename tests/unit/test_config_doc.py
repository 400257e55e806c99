"""docs/configuration.md is what scripts/gen_config_doc.py makes of the daemon's OPTIONS."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from flowcraft_fast.daemon.config import OPTIONS

ROOT = Path(__file__).resolve().parents[2]


def test_configuration_doc_is_generated_from_options() -> None:
    spec = importlib.util.spec_from_file_location(
        "gen_config_doc", ROOT / "scripts" / "gen_config_doc.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    committed = (ROOT / "docs" / "configuration.md").read_text()
    assert committed == module.render(), (
        "docs/configuration.md is stale: run `python scripts/gen_config_doc.py` and commit it"
    )
    for option in OPTIONS:
        assert f"`{option.flag} " in committed
        assert all(f"`{env}`" in committed for env in option.env)

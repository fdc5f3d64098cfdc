"""Definitions live in their rooms: which module may import which (issue 14).

Read with ``ast``, so imports inside functions (the way a loop used to be hidden) count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

from platforms.host import host_pool
from tests.imports import ROOT, imports_of, reaches


def test_data_staging_is_a_helper_of_the_contract_not_a_loop_through_it() -> None:
    """The contract's default ``stage_data`` uses the staging helper beside it; the helper
    raises the contract's error without importing the contract (the lifecycle once held it,
    importing the contract that imported it back)."""
    platforms = ROOT / "platforms"
    assert reaches(imports_of(platforms / "contract.py"), "platforms.staging")
    assert not reaches(imports_of(platforms / "staging.py"), "platforms.contract")
    assert not reaches(imports_of(platforms / "staging.py"), "broker_core.lifecycle")
    assert not (ROOT / "broker_core" / "lifecycle" / "staging.py").exists()


def test_the_local_platform_does_not_borrow_from_the_simulated_one(tmp_path: Path) -> None:
    """Both size their default pool from the host, with the helper in platforms/host.py."""
    for name in ("local.py", "simulated.py"):
        assert reaches(imports_of(ROOT / "platforms" / name), "platforms.host.host_pool")
    assert not reaches(imports_of(ROOT / "platforms" / "local.py"), "platforms.simulated")
    pool = host_pool(str(tmp_path))
    assert pool.name == "host"
    assert set(pool.inventories) == {"cores", "memory", "storage"}
    assert all(inventory.total >= 1 for inventory in pool.inventories.values())


def test_time_formatting_lives_in_schedule_not_in_the_views() -> None:
    """``instant`` and ``span`` are schedule.py's; views.py renders with them."""
    views = ast.parse((ROOT / "broker_core" / "sessions" / "views.py").read_text())
    defined = {n.name for n in ast.walk(views) if isinstance(n, ast.FunctionDef)}
    assert not {"instant", "span"} & defined
    schedule = ast.parse((ROOT / "broker_core" / "schedule.py").read_text())
    assert {"instant", "span"} <= {n.name for n in schedule.body if isinstance(n, ast.FunctionDef)}

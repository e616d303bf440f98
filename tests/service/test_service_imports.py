"""The service modules import in one direction (issue 10, "Structure"): ``jobs`` (the queues) uses ``celery_app``
(the Celery app and its task), and neither ``celery_app`` nor the modules it uses import ``jobs`` back, not even
inside a function. Both share the Redis job records through ``redis_jobs``."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

SERVICE = ROOT / "foveal" / "service"


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def _reachable(module: str) -> set[str]:
    """Every foveal.service module that ``module`` imports, directly or through others of them."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        path = SERVICE / (name.rsplit(".", 1)[-1] + ".py")
        if name in seen or not name.startswith("foveal.service.") or not path.exists():
            continue
        seen.add(name)
        todo.extend(_imports(path))
    return seen


def test_celery_app_does_not_import_jobs():
    assert "foveal.service.celery_app" in _reachable("foveal.service.jobs")
    assert "foveal.service.jobs" not in _reachable("foveal.service.celery_app")
    assert "foveal.service.jobs" not in _reachable("foveal.service.redis_jobs")

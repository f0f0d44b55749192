"""Run the tests in another order, to show that none depends on the order it runs in.

    .venv/bin/python -m pytest -p tests.support.order --order=reverse tests/e2e
    .venv/bin/python -m pytest -p tests.support.order --order=7 tests/integration

`reverse` runs modules and the tests in each module backwards; a number shuffles both with that
seed (the same number gives the same order). A module's tests stay together, so module fixtures
are set up once, as in a normal run.
"""

from __future__ import annotations

import random
from itertools import groupby

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--order",
        default=None,
        help="reverse: modules and their tests backwards; a number: shuffled with that seed",
    )


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    order = config.getoption("--order")
    if order is None:
        return
    modules = [list(tests) for _, tests in groupby(items, key=lambda item: item.path)]
    if order == "reverse":
        for tests in modules:
            tests.reverse()
        modules.reverse()
    else:
        shuffle = random.Random(int(order)).shuffle
        for tests in modules:
            shuffle(tests)
        shuffle(modules)
    items[:] = [item for tests in modules for item in tests]


def pytest_report_header(config: pytest.Config) -> str | None:
    order = config.getoption("--order")
    return None if order is None else f"test order: {order} (tests.support.order)"

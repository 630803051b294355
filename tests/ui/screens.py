"""Screenshots from the browser tests: into the test's directory, and with
``BRIDGE_SCREENSHOTS=docs/screenshots`` also into the repository, for the README."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from playwright.async_api import Page

from tests.support import ROOT


async def shot(page: Page, directory: Path, name: str, full_page: bool = False) -> None:
    """Save ``name``.png of ``page`` in ``directory`` (and in ``$BRIDGE_SCREENSHOTS``)."""
    path = directory / f"{name}.png"
    size = page.viewport_size
    if size is not None:  # no hover highlight left where the last click was
        await page.mouse.move(size["width"] - 1, size["height"] - 1)
    await page.screenshot(path=str(path), full_page=full_page)
    keep = os.environ.get("BRIDGE_SCREENSHOTS")
    if keep:
        target = ROOT / keep
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target / path.name)

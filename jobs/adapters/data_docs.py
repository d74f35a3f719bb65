"""The Data Docs site as readers get it: landed values as text, assets local (issue 27 item 6, issue 30 item 4).

GX 1.24.1 escapes the parameters of its string templates, but writes the cells of its tables
(the sample of unexpected values, the unexpected rows) into the page as they are: a landed
Quantity ``<img src=x onerror=...>`` became live markup on a page served on the Airflow UI's
origin. So before a page is rendered, every string of every expectation's observed result in
the results store's copy of the validation (values, row keys, file names, exception messages)
is HTML-escaped once (the run's own result file under ``results/`` keeps the raw values); the
copy is marked so a re-render never escapes it twice.

GX pages load Bootstrap, jQuery, bootstrap-table and Font Awesome from CDNs. The site gets
local copies (``data_docs_assets/``: Bootstrap 4.3.1, jQuery 3.7.1, bootstrap-table 1.19.1,
Font Awesome Free 6.6.0, bootstrap-datepicker 1.9.0, licences included) under ``static/vendor/``, and each page's links are
rewritten to them; a tag that would still load something from another origin (Vega, the
dark theme, GX's logo: not needed to read a page) is dropped. The site then renders
offline, styled.
"""

from __future__ import annotations

import html
import os
import re
import shutil
from pathlib import Path
from typing import Any

ASSETS = Path(__file__).with_name("data_docs_assets")
VENDOR = Path("static") / "vendor"
ESCAPED_MARK = "rfm_landed_values_escaped"

# CDN URL (by its file name) -> local copy under static/vendor/; None: the tag is dropped.
LOCAL_COPIES: dict[str, str | None] = {
    "bootstrap.min.css": "css/bootstrap.min.css",
    "bootstrap-table.min.css": "css/bootstrap-table.min.css",
    "bootstrap-table-filter-control.css": "css/bootstrap-table-filter-control.min.css",
    "bootstrap-table-filter-control.min.css": "css/bootstrap-table-filter-control.min.css",
    "all.min.css": "css/all.min.css",
    "jquery-3.7.1.min.js": "js/jquery.min.js",
    "popper.min.js": None,  # in bootstrap.bundle.min.js
    "bootstrap.min.js": "js/bootstrap.bundle.min.js",
    "bootstrap-table.min.js": "js/bootstrap-table.min.js",
    "bootstrap-table-filter-control.min.js": "js/bootstrap-table-filter-control.min.js",
    "bootstrap-datepicker.min.css": "css/bootstrap-datepicker.min.css",
    "bootstrap-datepicker.min.js": "js/bootstrap-datepicker.min.js",
}
_REMOTE_TAG = re.compile(
    r"<(?P<tag>link|script|img)\b(?P<attrs>[^>]*?)\b(?:href|src)=\"(?P<url>(?:https?:)?//[^\"]+)\"[^>]*>(?:\s*</script>)?",
    re.IGNORECASE,
)


def escape_landed(value: Any) -> Any:
    """``value`` with every string in it (nested dicts and lists included) HTML-escaped."""
    if isinstance(value, str):
        return html.escape(value, quote=True)
    if isinstance(value, dict):
        return {key: escape_landed(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [escape_landed(item) for item in value]
    return value


def escape_stored_results(context: Any, keys: list[Any]) -> None:
    """Escape the observed values of the stored validations ``keys`` (once), before GX renders them."""
    store = context.validation_results_store
    for key in keys:
        suite_result = store.get(key)
        if suite_result.meta.get(ESCAPED_MARK):
            continue
        for result in suite_result.results:
            result.result = escape_landed(result.result or {})
            if result.exception_info:
                result.exception_info = escape_landed(result.exception_info)
        suite_result.meta[ESCAPED_MARK] = True
        store.set(key, suite_result)


def _vendor_assets(site: Path) -> None:
    target = site / VENDOR
    for source in ASSETS.rglob("*"):
        if source.is_file():
            copy = target / source.relative_to(ASSETS)
            if not copy.is_file() or copy.stat().st_size != source.stat().st_size:
                copy.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, copy)


def localise_page(page: Path, site: Path) -> bool:
    """Point ``page``'s CSS/JS at the local copies and drop any other remote tag; True if it changed."""
    text = page.read_text(encoding="utf-8")
    prefix = Path(os.path.relpath(site / VENDOR, page.parent)).as_posix()

    def local(match: re.Match[str]) -> str:
        local_copy = LOCAL_COPIES.get(match["url"].split("?")[0].rsplit("/", 1)[-1])
        if local_copy is None or match["tag"].lower() == "img":  # GX's logo from S3: left out
            return ""
        if match["tag"].lower() == "link":
            return f'<link rel="stylesheet" href="{prefix}/{local_copy}">'
        return f'<script src="{prefix}/{local_copy}"></script>'

    localised = _REMOTE_TAG.sub(local, text)
    if localised != text:
        page.write_text(localised, encoding="utf-8")
    return localised != text


def localise_site(site: Path) -> int:
    """Copy the assets into the site and rewrite every page still pointing at a CDN; pages changed."""
    _vendor_assets(site)
    return sum(localise_page(page, site) for page in site.rglob("*.html"))


def remote_references(page: Path) -> list[str]:
    """The URLs of another origin that ``page`` would load (stylesheets, scripts, images)."""
    return [m["url"] for m in _REMOTE_TAG.finditer(page.read_text(encoding="utf-8"))]

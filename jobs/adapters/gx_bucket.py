"""The GX project of a validation dir on a bucket (issue 29): GX runs in a temporary local copy.

GX 1.x's file context needs a local project root, and GX 1.x has no S3 store backend any more
(1.24 ships ``TupleFilesystemStoreBackend`` only; ``TupleS3StoreBackend`` went with 0.18). So
when ``paths.validation_dir`` is ``s3://…``, ``SuiteRunner`` works in a temporary folder outside
the data dir (``tempfile``'s, removed at ``close``), laid out as the bucket is:

- seeded with the results store kept on the bucket (``gx/uncommitted/validations/``, ~22 KB per
  validated day: one listing and concurrent GETs), and with an empty placeholder for each page
  the bucket's site already has (``validations/…html``, ``expectations/…html``): GX's index lists
  the site's pages that have a stored result, reading the result, never the page. So the index
  lists every day, as it does locally, without downloading a year of pages;
- published after a build: the results new or changed (a run's result, its escaped copy), then
  the static assets the bucket lacks or holds at another size, then the pages rendered (the
  day's), then the index, each a single put. Nothing on the bucket is ever deleted (other days'
  pages stay).

Two builds at once (a backfill and a night) each publish their own pages; the index of the last
one to finish may miss the other's day until the next build.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import weakref
from pathlib import Path

from upath import UPath

log = logging.getLogger(__name__)

VALIDATIONS = "gx/uncommitted/validations"
SITE = "gx/uncommitted/data_docs/local_site"
SITE_PAGES = ("validations", "expectations")  # the site sections GX's index lists
STATIC = f"{SITE}/static"
INDEX = f"{SITE}/index.html"
PUBLISHED = (VALIDATIONS, SITE)


class BucketProject:
    """A temporary local GX project mirroring the validation dir ``location`` on a bucket."""

    def __init__(self, location: UPath) -> None:
        self.fs, self.root = location.fs, location.path.rstrip("/")
        self.folder = Path(tempfile.mkdtemp(prefix="rfm-gx-"))
        self._remove = weakref.finalize(self, shutil.rmtree, str(self.folder), True)  # also if close is missed
        try:
            self._seed()
        except BaseException:
            self._remove()
            raise
        self._published = self._stamps()

    def _relative(self, key: str) -> str:
        return key.removeprefix(self.root + "/")

    def _seed(self) -> None:
        results = self.fs.find(f"{self.root}/{VALIDATIONS}")
        pages = [key for section in SITE_PAGES for key in self.fs.find(f"{self.root}/{SITE}/{section}")]
        local = [self.folder / self._relative(key) for key in results]
        for path in {p.parent for p in local}:
            path.mkdir(parents=True, exist_ok=True)
        if results:
            self.fs.get(results, [str(p) for p in local])
        for key in pages:
            if key.endswith(".html"):
                placeholder = self.folder / self._relative(key)
                placeholder.parent.mkdir(parents=True, exist_ok=True)
                placeholder.touch()
        log.info("GX project seeded from the bucket: %d results, %d pages", len(results), len(pages))

    def _stamps(self) -> dict[str, tuple[int, int]]:
        """(size, mtime) of every file of the results store and the site, by relative path."""
        stamps = {}
        for part in PUBLISHED:
            for path in (self.folder / part).rglob("*"):
                if path.is_file():
                    stat = path.stat()
                    stamps[path.relative_to(self.folder).as_posix()] = (stat.st_size, stat.st_mtime_ns)
        return stamps

    def publish(self) -> list[str]:
        """Upload what changed since the seed or the last publish (the module docstring's order);
        the relative paths put."""
        current = self._stamps()
        changed = sorted(rel for rel, stamp in current.items() if self._published.get(rel) != stamp)
        static = [rel for rel in changed if rel.startswith(STATIC + "/")]
        if static:
            held = self.fs.find(f"{self.root}/{STATIC}", detail=True)
            sizes = {self._relative(key): int(info.get("size") or 0) for key, info in held.items()}
            static = [rel for rel in static if sizes.get(rel) != current[rel][0]]
        results = [rel for rel in changed if rel.startswith(VALIDATIONS + "/")]
        pages = [rel for rel in changed if rel.startswith(SITE + "/") and not rel.startswith(STATIC + "/")]
        index = [rel for rel in pages if rel == INDEX]  # last: it never links a page not yet there
        pages = [rel for rel in pages if rel != INDEX]
        for group in (results, static, pages, index):  # each group's puts run concurrently
            if group:
                self.fs.put([str(self.folder / rel) for rel in group], [f"{self.root}/{rel}" for rel in group])
        self._published = current
        return results + static + pages + index

    def close(self, publish: bool = True) -> None:
        """Publish what is left (``publish``), then remove the temporary project."""
        try:
            if publish and self.folder.exists():
                self.publish()
        finally:
            self._remove()

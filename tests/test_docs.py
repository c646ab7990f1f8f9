"""README's and docs/'s measured and generated parts agree with the committed files they come from."""

import importlib.util
import re

import pytest

from tests.workflow_helpers import ROOT

spec = importlib.util.spec_from_file_location("render", ROOT / "docs" / "render.py")
render = importlib.util.module_from_spec(spec)
spec.loader.exec_module(render)


def test_every_rendered_part_matches_its_file():
    """`make docs` was run after the last change of a source (the demo's expected LDS, its contributor
    metrics, CI's durations, the config schema)."""
    assert render.stale_parts() == []


def test_configuration_page_lists_every_key_of_the_schema():
    page = (ROOT / "docs" / "configuration.md").read_text()
    for key in (
        "lds.alpha",
        "featurize.shards_per_job",
        "shapley.property.name",
        "methods.NAME.ensemble.over",
    ):
        assert f"| `{key}` |" in page, key


@pytest.mark.parametrize("page", sorted((ROOT / "docs").glob("*.md")), ids=lambda p: p.name)
def test_links_between_pages_resolve(page):
    for target in re.findall(r"\]\(([\w./-]+\.md)(?:#[\w-]*)?\)", page.read_text()):
        assert (page.parent / target).is_file(), (page.name, target)


def test_readme_links_resolve():
    for target in re.findall(r"\]\((docs/[\w./-]+)\)", (ROOT / "README.md").read_text()):
        assert (ROOT / target).is_file(), target

"""The docs as a reader meets them: the README is a front page (at most 300 lines), every link
in it and in ``docs/`` leads somewhere, and each command its table names answers ``--help``.
(The blocks a user copies are run as typed where they need a cluster: ``tests/service/``.)"""

from __future__ import annotations

import re

import pytest
from conftest import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def test_the_readme_is_a_front_page():
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= 300, f"README.md has {len(lines)} lines: move a topic to docs/"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_leads_to_a_file(page):
    text = page.read_text()
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    broken = [
        link for link in links if "://" not in link and not (page.parent / link).resolve().exists()
    ]
    assert not broken, f"{page.name}: {broken}"


def test_the_readme_names_each_docs_page():
    readme = (REPO / "README.md").read_text()
    missing = [p.name for p in PAGES[1:] if f"](docs/{p.name})" not in readme]
    assert not missing, f"docs pages the README does not lead to: {missing}"


def test_each_command_of_the_readme_s_table_answers_help(capsys):
    from pipeline.cli.main import main

    readme = (REPO / "README.md").read_text()
    commands = sorted(set(re.findall(r"^\| `python -m pipeline (\w+)", readme, re.M)))
    assert {"run", "render", "report", "analyze", "export", "bench", "serve"} <= set(commands)
    for command in commands:
        with pytest.raises(SystemExit) as done:
            main([command, "--help"])
        assert done.value.code == 0, command
        assert "usage:" in capsys.readouterr().out

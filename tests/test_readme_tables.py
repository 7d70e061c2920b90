"""README's config-group table lists every shipped option of every group; ``ftsweep train --help`` shows
whole option descriptions, wrapped (never cut)."""

from __future__ import annotations

import re
from pathlib import Path

from ftsweep.config import compose as config

ROOT = Path(__file__).resolve().parents[1]


def _group_rows() -> dict[str, str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Config groups", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        m = re.match(r"\| `(\w+)` \|(.*)\|\s*$", line)
        if m:
            rows[m[1]] = m[2]
    return rows


def test_readme_group_table_lists_every_shipped_option():
    rows = _group_rows()
    readme = (ROOT / "README.md").read_text()
    for group in config.list_groups():
        assert group in rows, f"README's config-group table has no row for {group!r}"
        if group == "sweep":  # its row points at the Sweeps section: every sweep is shown there as sweep=NAME
            for option in config.group_options(group) or []:
                assert f"sweep={option}" in readme, f"README does not show sweep={option}"
            continue
        named = {t.split("=")[-1] for t in re.findall(r"`([^`]+)`", rows[group])}
        missing = sorted(set(config.group_options(group) or []) - named)
        assert not missing, f"README's {group} row omits shipped option(s) {missing}"


def test_help_wraps_whole_descriptions(monkeypatch, capsys):
    from ftsweep.cli import train_help

    monkeypatch.setenv("COLUMNS", "80")
    assert train_help([], []) == 0
    out = capsys.readouterr().out.split("\nConfig (override any key")[0]
    assert max(len(line) for line in out.splitlines() if line.startswith("    ")) <= 80
    # each option's lines, re-joined, are its whole description (sweep files describe themselves over several lines)
    joined = {}
    for block in re.split(r"^  (?=\w+:$)", out, flags=re.M)[1:]:
        group = block.split(":", 1)[0]
        for name, text in re.findall(r"^    (\w+) +(.*(?:\n {37}.*)*)", block, flags=re.M):
            joined[group, name] = " ".join(text.split())
    assert joined["sweep", "batch_size"].endswith("the learning rate scaled by the square root of the batch ratio "
                                                  "from lr0 = 2e-4 at batch 16.")
    assert joined["data", "proxy_tasks"].endswith("seeded 10% validation split.")
    for group in config.list_groups():
        for option in config.group_options(group) or []:
            whole = " ".join(config.option_summary(group, option).split())  # spacing aside
            assert joined.get((group, option)) == whole, (group, option)

"""The README and icp.example.toml stay true: the documented commands and keys are the real ones."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from sync.config import load_config

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def quick_start_commands() -> list[str]:
    section = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section)


def test_readme_has_the_two_setup_commands_and_ci_runs_the_test_one():
    commands = quick_start_commands()
    assert commands[0].endswith("icp demo")
    assert "pytest" in commands[1]
    ci = (ROOT / ".ci" / "run").read_text()
    assert commands[1] in ci


def test_example_config_is_valid(tmp_path):
    assert load_config(ROOT / "icp.example.toml", env={}).club_size == 10


def test_every_example_key_is_in_the_readme_reference():
    data = tomllib.loads((ROOT / "icp.example.toml").read_text())

    documented = []
    for section, table in data.items():
        if section == "segments":
            assert "`[[segments]]`" in README
            continue
        for key, value in table.items():
            name = f"{section}.{key}"
            if isinstance(value, dict):  # a sub-table, documented as a whole: `[csv.accounts.columns]`
                for sub in value:
                    documented.append(f"`[{name}.{sub}]`" if isinstance(value[sub], dict) else f"`[{name}]`")
            else:
                documented.append(f"`[{section}] {key}`")
    missing = [
        d
        for d in documented
        if d not in README
        and d.replace("`[csv.accounts]`", "`[csv] accounts`").replace("`[csv.deals]`", "`[csv] deals`")
        not in README
    ]
    assert not missing


def _example_values() -> dict[str, object]:
    data = tomllib.loads((ROOT / "icp.example.toml").read_text())
    out: dict[str, object] = {}

    def walk(table: dict, prefix: str) -> None:
        for key, value in table.items():
            path = f"{prefix}.{key}" if prefix else key
            if isinstance(value, dict):
                walk(value, path)
            else:
                out[path] = value

    walk({k: v for k, v in data.items() if k != "segments"}, "")
    return out


def test_every_config_key_is_in_the_example_with_its_real_default():
    """icp.example.toml documents every scalar key with the default the code uses (one source: sync.config.KEYS,
    whose defaults are read from the code that uses them). A key left out must be shown commented out."""
    from sync.config import KEYS

    example = _example_values()
    text = (ROOT / "icp.example.toml").read_text()
    for key in KEYS:
        if key.path in example:
            value = example[key.path]
            default = list(key.default) if isinstance(key.default, tuple) else key.default
            assert value == default, (
                f"icp.example.toml: {key.path} = {value!r}, but the default is {default!r}"
            )
        else:
            assert key.default is None and f"# {key.name} = " in text, f"{key.path} missing from the example"


def test_every_example_key_is_one_the_parser_reads():
    from sync.config import allowed_keys

    for path in _example_values():
        section, _, name = path.rpartition(".")
        if section.endswith(".columns") or section == "salesforce.fields":
            continue  # mappings: any canonical name / any owned field, checked by the parser's own tests
        assert name in allowed_keys(section), path

"""The one configuration source: conf/pipeline.yaml, overridden by RFM__ variables, with no dead keys."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from jobs.config import DEFAULT_CONFIG_FILE, REPO_ROOT, Settings
from jobs.definitions import CANONICAL_COLUMNS, REQUIRED_COLUMNS, TABLES


def test_every_canonical_column_has_source_names() -> None:
    assert list(Settings().columns) == CANONICAL_COLUMNS


def test_the_suite_requires_exactly_the_required_columns() -> None:
    """One definition: the suite's column rules come from REQUIRED_COLUMNS, which holds every
    column ingest loads (the suite file lists none of its own)."""
    from jobs.adapters.expectations import load_suite

    suite = json.loads((REPO_ROOT / "expectations" / "transactions.json").read_text())
    assert not [e for e in suite["expectations"] if e["type"] == "expect_column_to_exist"]
    loaded = load_suite(Settings())
    existing = [e.column for e in loaded.expectations if type(e).__name__ == "ExpectColumnToExist"]
    assert existing == REQUIRED_COLUMNS
    assert set(CANONICAL_COLUMNS) <= set(REQUIRED_COLUMNS)  # typed_rows selects CANONICAL_COLUMNS


@pytest.mark.parametrize(
    ("variable", "value", "read"),
    [
        ("RFM__CLUSTERING__K", "6", lambda s: s.clustering.k == 6),
        ("RFM__DAG__CATCHUP", "true", lambda s: s.dag.catchup is True),
        ("RFM__SPARK__MASTER", "spark://127.0.0.1:7077", lambda s: s.spark.master == "spark://127.0.0.1:7077"),
        ("RFM__DAG__TAGS", '["a","b"]', lambda s: s.dag.tags == ["a", "b"]),
    ],
)
def test_an_environment_variable_overrides_the_file(monkeypatch, variable: str, value: str, read) -> None:
    monkeypatch.setenv(variable, value)
    assert read(Settings()), f"{variable}={value} did not take effect"


def test_every_override_named_in_the_config_comments_exists(monkeypatch) -> None:
    """The variables the file's comments give as examples are real settings."""
    names = set(re.findall(r"\bRFM__[A-Z_]+\b", DEFAULT_CONFIG_FILE.read_text())) - {"RFM__"}
    assert names, "the config file documents its overrides"
    raw = yaml.safe_load(DEFAULT_CONFIG_FILE.read_text())
    for name in names:
        section, key = name.removeprefix("RFM__").lower().split("__", 1)
        assert key in raw.get(section, {}), f"{name} names no setting of conf/pipeline.yaml"


def test_a_table_path_lies_under_the_lake(settings) -> None:
    for name, relative in TABLES.items():
        assert settings.table_path(name) == settings.path("lake_dir") / relative


def test_a_config_file_with_an_unknown_key_is_refused(monkeypatch, tmp_path) -> None:
    """A removed key (``timezone``) in an old RFM_CONFIG file fails loudly instead of being ignored."""
    raw = yaml.safe_load(DEFAULT_CONFIG_FILE.read_text())
    (tmp_path / "old.yaml").write_text(yaml.safe_dump({**raw, "timezone": "UTC"}))
    monkeypatch.setenv("RFM_CONFIG", str(tmp_path / "old.yaml"))
    with pytest.raises(ValueError, match="timezone"):
        Settings()


def test_every_expectation_rule_has_exactly_one_policy() -> None:
    """Each rule of the suite has a policy in conf/, and conf/ names no rule the suite lacks."""
    from jobs.adapters.expectations import required_column_expectations

    suite = json.loads((REPO_ROOT / "expectations" / "transactions.json").read_text())
    rules = {e["meta"]["rule"] for e in suite["expectations"] + required_column_expectations()}
    assert rules == set(Settings().validation.policies)


def test_a_suite_rule_without_a_policy_is_refused(settings) -> None:
    from jobs.adapters.expectations import load_suite
    from jobs.errors import PermanentError

    policies = {k: v for k, v in settings.validation.policies.items() if k != "quantity_nonzero"}
    trimmed = settings.model_copy(update={"validation": settings.validation.model_copy(update={"policies": policies})})
    with pytest.raises(PermanentError, match="quantity_nonzero"):
        load_suite(trimmed)


def test_a_rule_policy_is_overridden_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("RFM__VALIDATION__QUARANTINE_MAX_SHARE", "0.02")
    monkeypatch.setenv("RFM__VALIDATION__POLICIES__QUANTITY_NONZERO", '{"policy": "warn"}')
    validation = Settings().validation
    assert validation.policies["quantity_nonzero"].policy == "warn"
    assert validation.max_share("quantity_parses") == 0.02
    assert validation.policies["amount_fits"].policy == "fail"

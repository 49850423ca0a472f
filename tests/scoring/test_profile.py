"""The profile: learning recovers the planted ICP, the version is stable, the TOML file round-trips and
rejects bad edits with the key named."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox.book import ICP_COUNTRIES, ICP_EMPLOYEES, ICP_INDUSTRIES
from scoring.errors import ProfileError, ScoringError
from scoring.profile import Profile, ProfileAttribute, learn_profile, load_profile, save_profile
from tests.scoring.strategies import profiles


def club_rows(book_with_aggs, profile):
    return book_with_aggs[book_with_aggs["id"].isin(profile.club_ids)]


def test_learning_recovers_the_planted_icp(profile):
    names = [a.name for a in profile.attributes]
    assert {"industry", "employees", "country"} <= set(names)
    industry, employees, country = (profile.attribute(n) for n in ("industry", "employees", "country"))
    assert set(industry.values) <= set(ICP_INDUSTRIES) and industry.values
    assert set(country.values) <= set(ICP_COUNTRIES) and country.values
    assert employees.kind == "numeric" and employees.log
    # The band overlaps the planted 200-2,500 and is not absurdly wide.
    assert employees.low < ICP_EMPLOYEES[1] and employees.high > ICP_EMPLOYEES[0]
    assert employees.high / employees.low < 100


def test_categorical_values_are_over_represented_and_cover_the_club(profile, book_with_aggs):
    club = club_rows(book_with_aggs, profile)
    for attr in profile.attributes:
        if attr.kind != "categorical":
            continue
        book_values = book_with_aggs[attr.name].dropna().str.strip().str.casefold()
        club_values = club[attr.name].dropna().str.strip().str.casefold()
        chosen = {v.casefold() for v in attr.values}
        for value in chosen:
            assert (club_values == value).mean() > (book_values == value).mean()
        club_share = club_values.isin(chosen).mean()
        book_share = book_values.isin(chosen).mean()
        assert attr.club_share == pytest.approx(club_share, abs=1e-4)
        assert attr.book_share == pytest.approx(book_share, abs=1e-4)
        # Documented weight: club_share - book_share, rounded to 2 decimals.
        assert attr.weight == pytest.approx(round(club_share - book_share, 2))
        # Smallest set: dropping the value least common in the club falls below the 80% coverage.
        if len(chosen) > 1:
            counts = club_values[club_values.isin(chosen)].value_counts()
            assert (counts.sum() - counts.min()) / len(club_values) < 0.8


def test_numeric_band_and_weight(profile, book_with_aggs):
    club = club_rows(book_with_aggs, profile)
    for attr in profile.attributes:
        if attr.kind != "numeric":
            continue
        values = book_with_aggs[attr.name].dropna().astype(float)
        inside = values.between(attr.low, attr.high)
        club_inside = club[attr.name].dropna().astype(float).between(attr.low, attr.high)
        assert club_inside.mean() >= 0.7  # the 10-90% band, widened, holds most of the club
        assert attr.book_share == pytest.approx(inside.mean(), abs=1e-4)
        assert attr.weight == pytest.approx(round(club_inside.mean() - inside.mean(), 2))
        assert attr.half_life == 2.0


def test_relearning_gives_the_same_version_and_timestamps_do_not_count(book_with_aggs, club, profile):
    again = learn_profile(book_with_aggs, club.ids, learned_at="2030-05-05")
    assert again.version == profile.version
    assert again.learned_at != profile.learned_at
    assert len(profile.version) == 12


@settings(max_examples=8)
@given(seed=st.integers(0, 2**32 - 1))
def test_relearning_on_shuffled_rows_gives_the_same_version(book_with_aggs, club, profile, seed):
    order = np.random.default_rng(seed).permutation(len(book_with_aggs))
    shuffled = book_with_aggs.iloc[order]
    assert learn_profile(shuffled, reversed(club.ids)).version == profile.version


def test_version_changes_with_what_scores_depend_on(profile):
    first = profile.attributes[0]
    heavier = Profile(
        (ProfileAttribute(**{**first.__dict__, "weight": first.weight + 0.1}), *profile.attributes[1:])
    )
    assert heavier.version != profile.version
    relabelled = Profile(profile.attributes, club_ids=("X",), settings={"coverage": 0.5})
    assert relabelled.version == profile.version


def test_save_writes_a_commented_reviewable_file(profile, tmp_path):
    path = save_profile(profile, tmp_path / "icp-profile.toml")
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# icp-profile.toml")
    assert f'version = "{profile.version}"' in text
    for attr in profile.attributes:
        assert f"# {attr.name}:" in text
    assert "weight = club_share - book_share" in text


def test_save_load_round_trip(profile, tmp_path):
    path = save_profile(profile, tmp_path / "p.toml")
    loaded = load_profile(path)
    assert loaded.version == profile.version
    assert loaded.attributes == profile.attributes
    assert loaded.club_ids == profile.club_ids
    assert loaded.learned_at == profile.learned_at
    assert loaded.settings["coverage"] == 0.8


@settings(max_examples=40)
@given(generated=profiles())
def test_round_trip_preserves_the_version_of_any_profile(generated, tmp_path_factory):
    path = save_profile(generated, tmp_path_factory.mktemp("p") / "p.toml")
    assert load_profile(path).version == generated.version


def test_a_hand_edit_recomputes_the_version(profile, tmp_path):
    path = save_profile(profile, tmp_path / "p.toml")
    first = profile.attributes[0]
    text = path.read_text(encoding="utf-8").replace(f"weight = {first.weight}\n", "weight = 0.01\n", 1)
    path.write_text(text, encoding="utf-8")
    edited = load_profile(path)
    assert edited.attributes[0].weight == 0.01
    assert edited.version != profile.version
    assert any("edited" in note for note in edited.notes)


def write(tmp_path, body: str):
    path = tmp_path / "p.toml"
    path.write_text(body, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("attribute", "message"),
    [
        (
            'name = "industry"\nkind = "ordinal"\nweight = 1\nvalues = ["x"]',
            "attributes[0].kind: 'ordinal' is not allowed; allowed: categorical, numeric",
        ),
        (
            'name = "industry"\nkind = "categorical"\nweight = -1\nvalues = ["x"]',
            "attributes[0].weight: must be a number >= 0",
        ),
        (
            'name = "employees"\nkind = "numeric"\nweight = 1\nlow = 500\nhigh = 200',
            "attributes[0].low/high: low (500) must not exceed high (200)",
        ),
        ('name = "industry"\nkind = "categorical"\nweight = 1', "attributes[0].values: missing"),
        (
            'name = "employees"\nkind = "numeric"\nweight = 1\nlow = 0\nhigh = 20\nlog = true',
            "attributes[0].low: must be > 0 on a log scale",
        ),
        (
            'name = "employees"\nkind = "numeric"\nweight = 1\nlow = 1\nhigh = 20\nlog = true\nhalf_life = 0.5',
            "attributes[0].half_life: must be a factor > 1",
        ),
        (
            'name = "industry"\nkind = "categorical"\nwieght = 1\nvalues = ["x"]',
            'attributes[0]: unknown key "wieght"',
        ),
        ('name = "industry"\nkind = "categorical"\nweight = 0\nvalues = ["x"]', "every weight is 0"),
    ],
)
def test_load_rejects_bad_files_naming_the_key(tmp_path, attribute, message):
    path = write(tmp_path, f"[[attributes]]\n{attribute}\n")
    with pytest.raises(ProfileError) as err:
        load_profile(path)
    assert message in str(err.value)


def test_load_reports_every_problem_at_once(tmp_path):
    path = write(
        tmp_path,
        'colour = "red"\n[[attributes]]\nname = "a"\nkind = "x"\nweight = -2\n'
        '[[attributes]]\nname = "b"\nkind = "numeric"\nweight = 1\nlow = 9\nhigh = 1\n',
    )
    with pytest.raises(ProfileError) as err:
        load_profile(path)
    message = str(err.value)
    assert 'unknown key "colour"' in message
    assert "attributes[0].kind" in message and "attributes[0].weight" in message
    assert "attributes[1].low/high" in message


def test_load_missing_file_and_invalid_toml(tmp_path):
    with pytest.raises(ProfileError, match="icp profile learn"):
        load_profile(tmp_path / "absent.toml")
    with pytest.raises(ProfileError, match="not valid TOML"):
        load_profile(write(tmp_path, "attributes = [\n"))
    with pytest.raises(ProfileError, match="attributes: missing"):
        load_profile(write(tmp_path, 'version = "x"\n'))


def test_learning_errors(book_with_aggs, club):
    with pytest.raises(ScoringError, match="the book is empty"):
        learn_profile(book_with_aggs.iloc[0:0], club.ids)
    with pytest.raises(ProfileError, match="the club is empty"):
        learn_profile(book_with_aggs, [])
    with pytest.raises(ProfileError, match="NOT-AN-ID"):
        learn_profile(book_with_aggs, [*club.ids, "NOT-AN-ID"])
    with pytest.raises(ScoringError, match="'sector'"):
        learn_profile(book_with_aggs, club.ids, attributes=("industry", "sector"))


def test_an_attribute_that_does_not_separate_is_left_out_with_a_note():
    n = 200
    accounts = pd.DataFrame(
        {
            "id": pd.array([f"A{i}" for i in range(n)], dtype="string"),
            "industry": pd.array(["Mfg" if i < 20 else "Other" for i in range(n)], dtype="string"),
            "colour": pd.array(["red", "blue"] * (n // 2), dtype="string"),
        }
    )
    learned = learn_profile(accounts, [f"A{i}" for i in range(10)], attributes=("industry", "colour"))
    assert [a.name for a in learned.attributes] == ["industry"]
    assert learned.attribute("industry").values == ("Mfg",)
    assert any(note.startswith("colour:") for note in learned.notes)

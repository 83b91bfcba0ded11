"""The /privacy notice is generated from the policy document."""

from __future__ import annotations

import html
from html.parser import HTMLParser

import pytest

from permissions.decide import DistrictConditions
from permissions.enums import DataCategory, Purpose
from permissions.notice import DistrictNotice, Retention
from permissions.policy import load_policy_set
from server.notice_page import render_privacy_html


def escape(text: str) -> str:
    """Text as an HTML5 page carries it: markup characters escaped (quotes as the template engine writes them)."""
    return html.escape(text).replace("&#x27;", "&#39;").replace("&quot;", "&#34;")


DOC = load_policy_set().latest()

FIELDS = {
    DataCategory.DIRECTORY: ["Student.firstName", "Student.gradeLevel"],
    DataCategory.IDENTIFIER: ["Student.studentNumber"],
    DataCategory.DEMOGRAPHIC: ["Student.birthDate"],
    DataCategory.PERFORMANCE: ["Response.score"],
    DataCategory.WORK: ["Response.answer"],
    DataCategory.USAGE: ["ActivityEvent.kind"],
    DataCategory.DEVICE: ["DeviceSession.ipAddress"],
    DataCategory.STAFF: ["Staff.email"],
    DataCategory.CONTACT: ["Guardian.phone"],
}

DISTRICT = DistrictNotice(
    name='Evil <script>alert("x")</script> & Sons',
    conditions=DistrictConditions(
        district_id="d1",
        accepted_version="2020-04-01",
        authorized_purposes=frozenset({Purpose.INSTRUCTION, Purpose.STUDENT_LEARNING}),
        collect_usage=True,
        collect_device=False,
        collect_demographics=False,
        direct_record_access=True,
        minimum_group_size=17,
    ),
    retention=Retention(responses_days=400, activity_days=120, device_days=30, audit_days=3000),
)


class _Elements(HTMLParser):
    VOID = frozenset({"meta", "br", "link", "img", "input", "hr"})

    def __init__(self) -> None:
        super().__init__()
        self.ids: dict[str, str] = {}
        self.tags: list[str] = []
        self.open: list[str] = []
        self.unbalanced: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for name, value in attrs:
            if name == "id" and value is not None:
                self.ids[value] = tag
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.open or self.open.pop() != tag:
            self.unbalanced.append(tag)


def parse(page: str) -> _Elements:
    parser = _Elements()
    parser.feed(page)
    parser.close()
    return parser


@pytest.fixture(scope="module")
def page() -> str:
    return render_privacy_html(DOC, FIELDS)


@pytest.fixture(scope="module")
def district_page() -> str:
    return render_privacy_html(DOC, FIELDS, DISTRICT)


def test_the_notice_is_a_standalone_well_formed_html5_page(page: str) -> None:
    assert page.startswith("<!DOCTYPE html>")
    elements = parse(page)
    assert elements.unbalanced == []
    assert elements.open == []
    assert "script" not in elements.tags
    assert "link" not in elements.tags
    assert "img" not in elements.tags
    assert "http://" not in page
    assert "https://" not in page


def test_every_purpose_has_an_element_with_its_description(page: str) -> None:
    ids = parse(page).ids
    for info in DOC.purposes:
        assert f"purpose-{info.purpose.value}" in ids
        assert escape(info.description) in page


def test_every_category_has_an_element_with_its_description_and_fields(page: str) -> None:
    ids = parse(page).ids
    for info in DOC.categories:
        assert f"category-{info.category.value}" in ids
        assert escape(info.description) in page
        for field in FIELDS[info.category]:
            assert f"<code>{field}</code>" in page


def test_every_rule_is_a_row_of_who_sees_what(page: str) -> None:
    ids = parse(page).ids
    for rule in DOC.rules:
        assert ids[f"rule-{rule.role.value}-{rule.purpose.value}"] == "tr"
        assert escape(rule.scope_text) in page


def test_the_support_rule_names_the_condition_no_support_grant(page: str) -> None:
    # POLICY 4.5: "NO_SUPPORT_GRANT names that condition in the policy document and the notice".
    support = next(rule for rule in DOC.rules if rule.role.value == "SUPPORT")
    assert "NO_SUPPORT_GRANT" in support.scope_text
    row = page.split('id="rule-SUPPORT-SUPPORT"', 1)[1].split("</tr>", 1)[0]
    assert "NO_SUPPORT_GRANT" in row, row


def test_the_notice_has_summary_never_retention_and_rights(page: str) -> None:
    assert escape(DOC.summary) in page
    assert "We never sell student information." in page
    assert "no purpose for advertising" in page
    assert "1,095 days (about 3 years)" in page
    assert "2,557 days (about 7 years)" in page
    assert "within 45 days" in page
    assert escape(DOC.rights_text) in page


def test_a_district_name_is_escaped(district_page: str) -> None:
    assert "<script>" not in district_page
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; Sons" in district_page
    assert "script" not in parse(district_page).tags


def test_the_district_page_shows_its_settings(district_page: str) -> None:
    ids = parse(district_page).ids
    assert "district" in ids
    assert "has accepted privacy policy version <strong>2020-04-01</strong>" in district_page
    assert "Anonymous totals hide any group of fewer than 17 students" in district_page
    assert "400 days" in district_page
    assert "3,000 days" in district_page
    assert "1,095 days" not in district_page
    assert "lets students and parents see their records directly" in district_page


def test_the_district_page_says_which_purposes_are_authorized(district_page: str) -> None:
    def state(purpose: Purpose) -> str:
        start = district_page.index(f'id="district-purpose-{purpose.value}"')
        return district_page[start : district_page.index("</li>", start)]

    assert "not allowed" not in state(Purpose.INSTRUCTION)
    assert "not allowed" in state(Purpose.REPORTING)
    assert "always allowed" in state(Purpose.LEGAL_COMPLIANCE)


def test_the_district_page_says_what_is_not_collected(district_page: str) -> None:
    def category(category: DataCategory) -> str:
        start = district_page.index(f'id="category-{category.value}"')
        return district_page[start : district_page.index("</li>", start)]

    assert "turned off collecting" in category(DataCategory.DEVICE)
    assert "turned off collecting" in category(DataCategory.DEMOGRAPHIC)
    assert "turned off collecting" not in category(DataCategory.USAGE)

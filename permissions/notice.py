"""The plain-language privacy notice (/privacy), generated from a policy document.

Everything a parent reads here comes from the document (and, for one
district, from its settings); nothing about the policy is written twice.
The page is standalone: inline CSS, no scripts, no external resources.
"""

from __future__ import annotations

import datetime
import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from permissions.enums import AggregateScope, DataCategory, Purpose, Role
from permissions.policy import PolicyDocument, Rule


@dataclass(frozen=True, slots=True)
class DistrictNotice:
    """What one district has chosen, shown on /privacy/{districtId}."""

    name: str
    district_id: str
    accepted_version: str
    authorized_purposes: frozenset[Purpose]
    collect_usage: bool
    collect_device: bool
    collect_demographics: bool
    direct_record_access: bool
    minimum_group_size: int
    responses_days: int
    activity_days: int
    device_days: int
    audit_days: int


# Display names only; what each role may do comes from the document's rules.
_ROLE_WORDS: dict[Role, str] = {
    Role.DISTRICT_ADMIN: "District administrators",
    Role.SCHOOL_ADMIN: "School administrators",
    Role.TEACHER: "Teachers",
    Role.STUDENT: "Students",
    Role.GUARDIAN: "Parents and guardians",
    Role.ANALYST: "Our analysts (company staff)",
    Role.SUPPORT: "Our support staff (company staff)",
}

_AGGREGATE_WORDS: dict[AggregateScope, str] = {
    AggregateScope.NONE: "No",
    AggregateScope.CLASSES: "For their own classes",
    AggregateScope.SCHOOL: "For their school",
    AggregateScope.DISTRICT: "For their district",
    AggregateScope.ALL_DISTRICTS: "Across all districts",
    AggregateScope.AUTHORIZING_DISTRICTS: ("Across the districts that allow it, leaving out students who opted out"),
}

_CSS = """
:root { color-scheme: light; --ink: #1d2733; --muted: #566270; --line: #d5dbe1;
  --accent: #1f5f8b; --soft: #f3f6f9; --off: #8a3b12; }
* { box-sizing: border-box; }
body { margin: 0; font: 17px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  color: var(--ink); background: #fff; }
main { max-width: 60rem; margin: 0 auto; padding: 2rem 1.25rem 4rem; }
h1 { font-size: 1.9rem; line-height: 1.2; margin: 0 0 .25rem; }
h2 { font-size: 1.35rem; margin: 2.5rem 0 .75rem; padding-bottom: .3rem;
  border-bottom: 2px solid var(--line); }
h3 { font-size: 1.05rem; margin: 0 0 .25rem; }
p { margin: .5rem 0; }
.meta { color: var(--muted); margin: 0; }
nav ul { display: flex; flex-wrap: wrap; gap: .25rem 1rem; padding: 0; list-style: none; }
a { color: var(--accent); }
.summary { background: var(--soft); border-left: 4px solid var(--accent);
  padding: .75rem 1rem; }
.district { border: 1px solid var(--line); border-radius: 6px; padding: .75rem 1rem; }
.items { display: grid; gap: .75rem; padding: 0; margin: 0; list-style: none; }
.item { border: 1px solid var(--line); border-radius: 6px; padding: .75rem 1rem; }
.fields { color: var(--muted); font-size: .92rem; }
code { font: .88em ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
  background: var(--soft); padding: 0 .2em; border-radius: 3px; }
.off { color: var(--off); font-weight: 600; }
.on { color: #1d6b3a; font-weight: 600; }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; font-size: .95rem; }
th, td { text-align: left; vertical-align: top; padding: .45rem .6rem;
  border-bottom: 1px solid var(--line); }
th { background: var(--soft); }
.note { color: var(--muted); font-size: .92rem; }
footer { margin-top: 3rem; color: var(--muted); font-size: .9rem; }
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _words(name: str) -> str:
    return name.replace("_", " ").capitalize()


def _date(value: datetime.date) -> str:
    return f"{value:%B} {value.day}, {value.year}"


def _duration(days: int) -> str:
    if days >= 365:
        years = days / 365.25
        rounded = round(years)
        if abs(years - rounded) < 0.05:
            return f"about {rounded} year{'s' if rounded != 1 else ''}"
        return f"about {years:.1f} years"
    if days >= 30:
        months = round(days / 30.44)
        return f"about {months} month{'s' if months != 1 else ''}"
    return f"{days} day{'s' if days != 1 else ''}"


def _rule_row(rule: Rule) -> str:
    categories = ", ".join(_e(_words(c.value)) for c in rule.sorted_categories) or "None (no individual records)"
    conditions: list[str] = []
    if rule.requires_justification:
        conditions.append("must give a reason, which is recorded")
    if rule.break_glass:
        conditions.append("each access is specially marked in the audit trail for review")
    if rule.requires_direct_access:
        conditions.append("only where the district allows direct access")
    if rule.role is Role.SUPPORT:
        conditions.append("only while the district has opened a support grant")
    extra = f'<br><span class="note">{_e("; ".join(conditions).capitalize())}.</span>'
    return (
        f'<tr id="rule-{_e(rule.role.value)}-{_e(rule.purpose.value)}">'
        f"<td>{_e(_ROLE_WORDS.get(rule.role, _words(rule.role.value)))}</td>"
        f'<td><a href="#purpose-{_e(rule.purpose.value)}">{_e(_words(rule.purpose.value))}</a></td>'
        f"<td>{_e(rule.scope_text)}{extra if conditions else ''}</td>"
        f"<td>{categories}</td>"
        f"<td>{_e(_AGGREGATE_WORDS[rule.aggregates])}</td>"
        f"<td>{_e(rule.justification)}</td>"
        "</tr>"
    )


def _collected(district: DistrictNotice | None, category: DataCategory) -> bool | None:
    if district is None:
        return None
    switch = {
        DataCategory.USAGE: district.collect_usage,
        DataCategory.DEVICE: district.collect_device,
        DataCategory.DEMOGRAPHIC: district.collect_demographics,
    }
    return switch.get(category)


def _district_section(doc: PolicyDocument, district: DistrictNotice) -> str:
    name = _e(district.name)
    version_note = ""
    if district.accepted_version != doc.version:
        version_note = (
            f" The terms below are version {_e(doc.version)}, which applies to "
            f"{name} without a new acceptance because it adds no new use of data."
        )
    purposes = []
    for info in doc.purposes:
        if info.purpose is Purpose.LEGAL_COMPLIANCE:
            state = '<span class="on">always allowed</span> (required by law)'
        elif info.purpose in district.authorized_purposes:
            state = '<span class="on">allowed</span>'
        else:
            state = '<span class="off">not allowed</span>'
        purposes.append(
            f'<li id="district-purpose-{_e(info.purpose.value)}">'
            f'<a href="#purpose-{_e(info.purpose.value)}">{_e(_words(info.purpose.value))}</a>: '
            f"{state}</li>"
        )
    switches = [
        (DataCategory.USAGE, district.collect_usage),
        (DataCategory.DEVICE, district.collect_device),
        (DataCategory.DEMOGRAPHIC, district.collect_demographics),
    ]
    collects = "".join(
        f'<li><a href="#category-{_e(c.value)}">{_e(_words(c.value))}</a>: '
        + ('<span class="on">collected</span>' if on else '<span class="off">not collected</span>')
        + "</li>"
        for c, on in switches
    )
    direct = (
        "Students and parents can see their records directly in the app."
        if district.direct_record_access
        else "Students and parents see their records by asking the district."
    )
    return (
        '<section id="district" class="district">'
        f"<h2>{name}</h2>"
        f"<p>{name} has accepted privacy policy version "
        f"<strong>{_e(district.accepted_version)}</strong>.{version_note}</p>"
        f"<h3>Uses {name} allows</h3><ul>{''.join(purposes)}</ul>"
        f"<h3>What {name} collects</h3><ul>{collects}</ul>"
        f"<p>{_e(direct)} Anonymous totals hide any group of fewer than "
        f"{_e(district.minimum_group_size)} students.</p>"
        "</section>"
    )


def render_privacy_html(
    doc: PolicyDocument,
    category_fields: Mapping[DataCategory, Sequence[str]],
    district: DistrictNotice | None = None,
) -> str:
    """The whole notice as one HTML5 page. ``category_fields`` lists, per
    category, the schema fields (``Type.field``) that carry it."""
    title = "How we protect student information"
    if district is not None:
        title = f"{title}: {district.name}"

    categories = []
    for cat_info in doc.categories:
        fields = category_fields.get(cat_info.category, ())
        field_list = ", ".join(f"<code>{_e(f)}</code>" for f in fields) or "none"
        collected = _collected(district, cat_info.category)
        state = ""
        if collected is False and district is not None:
            state = f'<p class="off">{_e(district.name)} has turned off collecting this.</p>'
        categories.append(
            f'<li class="item" id="category-{_e(cat_info.category.value)}">'
            f"<h3>{_e(_words(cat_info.category.value))}</h3>"
            f"<p>{_e(cat_info.description)}</p>{state}"
            f'<p class="fields">Where it appears: {field_list}</p>'
            "</li>"
        )

    purposes = []
    for info in doc.purposes:
        state = ""
        if (
            district is not None
            and info.purpose is not Purpose.LEGAL_COMPLIANCE
            and info.purpose not in district.authorized_purposes
        ):
            state = f'<p class="off">{_e(district.name)} does not allow this use.</p>'
        purposes.append(
            f'<li class="item" id="purpose-{_e(info.purpose.value)}">'
            f"<h3>{_e(_words(info.purpose.value))}</h3>"
            f"<p>{_e(info.description)}</p>{state}"
            "</li>"
        )

    rules = "".join(_rule_row(rule) for rule in doc.rules)
    purpose_names = ", ".join(_e(_words(p.purpose.value)) for p in doc.purposes)

    retention = doc.retention_defaults
    periods = (
        ("Answers and scores", retention.responses_days),
        ("Activity records", retention.activity_days),
        ("Device information", retention.device_days),
        ("Audit trail (who looked at what, never the information itself)", retention.audit_days),
    )
    retention_intro = "Standard periods:"
    if district is not None:
        periods = (
            (periods[0][0], district.responses_days),
            (periods[1][0], district.activity_days),
            (periods[2][0], district.device_days),
            (periods[3][0], district.audit_days),
        )
        retention_intro = f"{_e(district.name)} keeps information for these periods:"
    retention_rows = "".join(
        f"<tr><td>{_e(label)}</td><td>{days:,} days ({_e(_duration(days))})</td></tr>" for label, days in periods
    )

    rights_district = ""
    if district is not None:
        rights_district = (
            f"<p><strong>{_e(district.name)}</strong> "
            + (
                "lets students and parents see their records directly in the app, under record access."
                if district.direct_record_access
                else "does not offer direct access in the app: please contact the "
                "school district, which will answer your request."
            )
            + "</p>"
        )

    district_html = _district_section(doc, district) if district is not None else ""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title>
<style>{_CSS}</style>
</head>
<body>
<main>
<header>
<h1>{_e(title)}</h1>
<p class="meta">Privacy policy version {_e(doc.version)}, in effect since \
{_e(_date(doc.effective_date))}.</p>
</header>
<nav aria-label="Sections"><ul>
<li><a href="#summary">In short</a></li>
<li><a href="#collect">What we collect</a></li>
<li><a href="#purposes">Why we use it</a></li>
<li><a href="#who">Who sees what</a></li>
<li><a href="#never">What we never do</a></li>
<li><a href="#retention">How long we keep it</a></li>
<li><a href="#rights">Your rights</a></li>
</ul></nav>
{district_html}
<section id="summary">
<h2>In short</h2>
<p class="summary">{_e(doc.summary)}</p>
</section>
<section id="collect">
<h2>What we collect</h2>
<p>Only these kinds of personal information exist in the service. Everything \
else (names of schools and classes, test questions) is not about a person.</p>
<ul class="items">{"".join(categories)}</ul>
</section>
<section id="purposes">
<h2>Why we use it</h2>
<p>Every request to the service must say which one of these purposes it is for, \
and it can only see what that purpose allows.</p>
<ul class="items">{"".join(purposes)}</ul>
</section>
<section id="who">
<h2>Who sees what</h2>
<p>Each person sees only the records listed here, only for the purpose named, \
and every access is recorded in an audit trail.</p>
<div class="table-wrap"><table>
<thead><tr><th scope="col">Who</th><th scope="col">For</th><th scope="col">Whose records</th>\
<th scope="col">What information</th><th scope="col">Anonymous totals</th>\
<th scope="col">Why</th></tr></thead>
<tbody>{rules}</tbody>
</table></div>
</section>
<section id="never">
<h2>What we never do</h2>
<ul>
<li>We never sell student information.</li>
<li>We never use it for advertising or marketing, and never show targeted ads.</li>
<li>We never build profiles of students for anything other than school purposes.</li>
<li>Our own staff never see an individual student's record, except support staff \
while a district has asked them for help.</li>
</ul>
<p>These are not just promises: the service has no purpose for advertising, \
marketing, sale or profiling, so no request can ever ask for one. The only purposes \
are: {purpose_names}.</p>
</section>
<section id="retention">
<h2>How long we keep it</h2>
<p>{retention_intro}</p>
<div class="table-wrap"><table>
<thead><tr><th scope="col">Information</th><th scope="col">Kept for</th></tr></thead>
<tbody>{retention_rows}</tbody>
</table></div>
<p class="note">{_e(retention.note)}</p>
</section>
<section id="rights">
<h2>Your rights: access and correction</h2>
<p>{_e(doc.rights_text)}</p>
{rights_district}
</section>
<footer>
<p>This page is generated from privacy policy version {_e(doc.version)}, the same \
document the service enforces.</p>
</footer>
</main>
</body>
</html>
"""

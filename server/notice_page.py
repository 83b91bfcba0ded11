"""The /privacy page: the notice of permissions/notice.py through the Jinja2
template server/templates/privacy.html, autoescaped, served by Starlette's
templating."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from permissions.enums import DataCategory
from permissions.notice import DistrictNotice, privacy_notice
from permissions.policy import PolicyDocument

TEMPLATES = Path(__file__).parent / "templates"

_environment = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(["html"], default_for_string=True, default=True),
    undefined=StrictUndefined,
    trim_blocks=False,
)
templates = Jinja2Templates(env=_environment)


def render_privacy_html(
    doc: PolicyDocument,
    category_fields: Mapping[DataCategory, Sequence[str]],
    district: DistrictNotice | None = None,
) -> str:
    """The whole notice as one HTML5 page."""
    return _environment.get_template("privacy.html").render(notice=privacy_notice(doc, category_fields, district))


def privacy_response(
    request: Request,
    doc: PolicyDocument,
    category_fields: Mapping[DataCategory, Sequence[str]],
    district: DistrictNotice | None = None,
) -> Response:
    return templates.TemplateResponse(
        request, "privacy.html", {"notice": privacy_notice(doc, category_fields, district)}
    )

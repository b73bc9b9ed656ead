"""Rendering: the Jinja2 environment, the page context (caller, CSRF token, role checks) and
``render`` — a whole page, or only its live regions when the page's script asks for them."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from mediamill import __version__
from mediamill.api.auth import SESSION_COOKIE, Caller
from mediamill.dashboard import charts, session
from mediamill.store.timeutil import utcnow

HERE = Path(__file__).parent
NAV = (("overview", "/", "Overview"), ("jobs", "/jobs", "Jobs"), ("upload", "/upload", "Upload"),
       ("queues", "/queues", "Queues"), ("steps", "/steps", "Steps"), ("workflows", "/workflows", "Workflows"),
       ("routing", "/routing", "Routing"),
       ("sources", "/sources", "Sources"),
       ("dead-letters", "/dead-letters", "Dead letters"), ("breakers", "/breakers", "Breakers"),
       ("workers", "/workers", "Workers"), ("notifications", "/notifications", "Notifications"),
       ("alerts", "/alerts", "Alerts"))
WINDOWS = {"1h": (1, 300), "6h": (6, 900), "24h": (24, 3600), "7d": (168, 6 * 3600)}  # hours, bucket s


class LoginRequired(Exception):
    """Raised by page dependencies; answered with a redirect to the login page."""

    def __init__(self, next_url: str) -> None:
        super().__init__(next_url)
        self.next_url = next_url


@dataclass
class Page:
    """What every page knows about its request."""

    request: Request
    caller: Caller
    session: session.Session
    started: float = field(default_factory=time.perf_counter)

    @property
    def csrf(self) -> str:
        return session.csrf_token(self.request, self.session)

    def can(self, role: str) -> bool:
        return self.caller.can(role)

    @property
    def engine(self) -> Any:
        return self.request.app.state.runtime.engine

    @property
    def settings(self) -> Any:
        return self.request.app.state.runtime.settings


def page(request: Request) -> Page:
    """The dependency of every page: the session's caller, or a redirect to the login page."""
    started = time.perf_counter()
    found = session.caller_of(request, request.cookies.get(SESSION_COOKIE))
    if found is None:
        raise LoginRequired(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
    return Page(request, found[0], found[1], started)


# ----------------------------------------------------------------------------- filters
def ago(value: Any) -> str:
    """``3 min ago`` (also for ISO strings); the page's script keeps it current."""
    when = to_datetime(value)
    if when is None:
        return "—"
    secs = (utcnow() - when).total_seconds()
    return _span(abs(secs)) + (" ago" if secs >= 0 else " from now")


def _span(secs: float) -> str:
    if secs < 60:
        return f"{int(secs)} s"
    if secs < 3600:
        return f"{int(secs // 60)} min"
    if secs < 86400:
        return f"{secs / 3600:.1f} h"
    return f"{secs / 86400:.1f} d"


def duration(seconds: Any) -> str:
    if seconds is None:
        return "—"
    s = float(seconds)
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 120:
        return f"{s:.1f} s"
    return _span(s)


def ms(value: Any) -> str:
    return duration(float(value) / 1000) if value is not None else "—"


def number(value: Any) -> str:
    if value is None:
        return "—"
    v = float(value)
    if abs(v) >= 1e6:
        return f"{v / 1e6:.1f} M"
    if abs(v) >= 1e4:
        return f"{v / 1e3:.0f} k"
    return f"{int(v):,}" if v == int(v) else f"{v:,.1f}"


def pct(value: Any) -> str:
    return "—" if value is None else f"{float(value) * 100:.1f} %"


def to_datetime(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.replace(tzinfo=None)
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).replace(tzinfo=None)
    except ValueError:
        return None


def isotime(value: Any) -> str:
    when = to_datetime(value)
    return when.isoformat(timespec="seconds") + "Z" if when else ""


def timetag(value: Any) -> Markup:
    """``<time>`` with the relative text, the exact time as a tooltip, refreshed by the script."""
    when = isotime(value)
    if not when:
        return Markup("—")
    return Markup('<time datetime="{0}" title="{0}" data-ago>{1}</time>').format(when, ago(value))


def tojson_attr(value: Any) -> str:
    return json.dumps(value, default=str, separators=(",", ":"))


def qs(params: dict[str, Any], **changes: Any) -> str:
    """The query string of ``params`` with ``changes`` (None removes a key)."""
    merged = {**params, **changes}
    return "?" + urlencode({k: v for k, v in merged.items() if v not in (None, "")})


def _env() -> Environment:
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters.update(ago=ago, duration=duration, ms=ms, number=number, pct=pct, timetag=timetag,
                       isotime=isotime, tojson_attr=tojson_attr, urlpart=lambda v: quote(str(v), safe=""),
                       urlpath=lambda v: quote(str(v), safe="/"))
    env.globals.update(nav=NAV, version=__version__, charts=charts, qs=qs, windows=WINDOWS, duration_fmt=duration,
                       pct_fmt=pct)
    return env


templates = _env()


def render(pg: Page, name: str, section: str, title: str, **ctx: Any) -> HTMLResponse:
    """The page ``name``; with ``?fragment=1`` only its ``live`` block (what the script swaps in)."""
    template = templates.get_template(name)
    context = {"p": pg, "caller": pg.caller, "section": section, "title": title, "request": pg.request,
               "m": templates.get_template("macros.html").module, **ctx}
    if pg.request.query_params.get("fragment"):
        block = template.blocks["live"]
        html = "".join(block(template.new_context(context)))
    else:
        html = template.render(context)
    elapsed = (time.perf_counter() - pg.started) * 1000
    return HTMLResponse(html, headers={"Server-Timing": f"app;dur={elapsed:.1f}", "Cache-Control": "no-store"})

"""Logging in and out: an API key (form) or a one-time link → the session cookie."""

from __future__ import annotations

import hmac
import secrets

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from mediamill.api.auth import SESSION_COOKIE, check_key
from mediamill.dashboard import session
from mediamill.dashboard.web import templates
from mediamill.errors import Forbidden, TooManyAuthFailures

router = APIRouter(include_in_schema=False)


def safe_next(value: str | None) -> str:
    """Only a path of this site (no ``//host`` or scheme): an open redirect is a phishing tool."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


def _login_page(request: Request, *, error: str | None = None, status: int = 200,
                next_url: str | None = None) -> HTMLResponse:
    token = secrets.token_urlsafe(24)
    html = templates.get_template("login.html").render(
        request=request, csrf=token, error=error, next=safe_next(next_url or request.query_params.get("next")))
    response = HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})
    response.set_cookie(session.LOGIN_CSRF_COOKIE, token, max_age=3600, httponly=True, samesite="strict",
                        path="/login", secure=session.cookie_options(request)["secure"])
    return response


def _signed_in(request: Request, key_id: int, next_url: str) -> Response:
    value, _session = session.issue(request, key_id)
    response = RedirectResponse(safe_next(next_url), status_code=303)
    response.set_cookie(SESSION_COOKIE, value, max_age=session.SESSION_SECONDS, **session.cookie_options(request))
    response.delete_cookie(session.LOGIN_CSRF_COOKIE, path="/login")
    return response


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request) -> Response:
    if session.caller_of(request, request.cookies.get(SESSION_COOKIE)) is not None:
        return RedirectResponse(safe_next(request.query_params.get("next")), status_code=303)
    return _login_page(request)


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    """Check the double-submitted CSRF token, then the key; a good key opens a session."""
    form = await request.form()
    submitted, cookie = str(form.get(session.CSRF_FIELD) or ""), request.cookies.get(session.LOGIN_CSRF_COOKIE) or ""
    if not submitted or not hmac.compare_digest(submitted, cookie):
        raise Forbidden("missing or invalid CSRF token; reload the login page")
    session.check_origin(request)
    key = str(form.get("key") or "").strip()
    try:
        record = await check_key(request, key, surface="dashboard") if key else None
    except TooManyAuthFailures as exc:
        page = _login_page(request, error=f"Too many failed attempts. Try again in {exc.retry_after} s.",
                           status=429, next_url=str(form.get("next") or "/"))
        page.headers["Retry-After"] = str(exc.retry_after)
        return page
    if record is None:
        return _login_page(request, error="That API key is not valid (or was revoked).", status=401,
                           next_url=str(form.get("next") or "/"))
    return _signed_in(request, record.id, str(form.get("next") or "/"))


@router.get("/login/{token}", response_class=HTMLResponse)
def login_link(request: Request, token: str) -> Response:
    """The one-time link that ``mediamill serve`` prints."""
    key_id = session.redeem_login_token(request, token)
    if key_id is None or session.key_for(request, key_id) is None:
        return _login_page(request, error="This login link has expired or was already used. "
                                          "Log in with your API key.", status=401)
    return _signed_in(request, key_id, "/")


@router.post("/logout")
async def logout(request: Request) -> Response:
    form = await request.form()
    found = await run_in_threadpool(session.caller_of, request, request.cookies.get(SESSION_COOKIE))
    if found is not None:
        session.check_csrf(request, found[1], str(form.get(session.CSRF_FIELD) or ""))
        await run_in_threadpool(session.end, request, found[1])
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response

"""Handlers of the key management pages; creating and revoking need POST."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ..http import HTTPError, Request, Response, html_response
from ..keys import AUTH_HEADER
from ..pages import escape, page
from ..store import ApiKeyRecord

if TYPE_CHECKING:
    from ..clients import ApiClient


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(timestamp))


def _form(client: ApiClient, request: Request, label: str) -> str:
    token = client.keys.csrf_token(client.client_ip(request))
    return (
        f'<form method="post"><input type="hidden" name="csrf_token" value="{escape(token)}">'
        f"<button>{escape(label)}</button></form>"
    )


def _check_form(client: ApiClient, request: Request) -> None:
    client.keys.check_csrf(request.form().get("csrf_token"), client.client_ip(request))


def _describe(record: ApiKeyRecord) -> str:
    if record.is_active():
        status = "active"
    elif record.revoked_at:
        status = "revoked"
    else:
        status = "expired"
    return (
        f"<table><tr><th>id</th><td>{escape(record.key_id)}</td></tr>"
        f"<tr><th>bound to</th><td>{escape(record.ip)}</td></tr>"
        f"<tr><th>created</th><td>{_when(record.created_at)}</td></tr>"
        f"<tr><th>expires</th><td>{_when(record.expires_at)}</td></tr>"
        f"<tr><th>status</th><td>{status}</td></tr></table>"
    )


def keys_index(client: ApiClient, request: Request) -> Response:
    """List the active keys."""
    rows = "".join(
        f'<tr><td><a href="manage_key?key={escape(record.key_id)}">{escape(record.key_id)}</a></td>'
        f"<td>{escape(record.ip)}</td><td>{_when(record.expires_at)}</td></tr>"
        for record in client.keys.store.active_keys()
    )
    table = (
        f"<table><tr><th>key id</th><th>bound to</th><th>expires</th></tr>{rows}</table>"
        if rows
        else '<p class="muted">No active keys.</p>'
    )
    return html_response(page("API keys", f'{table}<p><a href="new_key">Create a key</a></p>'))


def new_key(client: ApiClient, request: Request) -> Response:
    """GET: show the form; POST: create a key bound to the client's address."""
    ip = client.client_ip(request)
    if request.method == "GET":
        body = (
            f"<p>The new key will be bound to {escape(ip)} and expire after "
            f"{client.keys.lifetime / 60:g} minutes.</p>{_form(client, request, 'Create key')}"
        )
        return html_response(page("Create an API key", body))

    _check_form(client, request)
    try:
        created = client.keys.create(ip)
    except ValueError:
        raise HTTPError(
            400, f"Cannot bind a key to the client address {ip!r}: it is not an IP address."
        ) from None
    body = (
        "<p>Copy the key now: it is shown only once.</p>"
        f'<p class="key">{escape(created.key)}</p>'
        f"<p>Send it in the <code>{AUTH_HEADER}</code> header from {escape(ip)}.</p>"
        f"{_describe(created.record)}"
        f'<p><a href="manage_key?key={escape(created.record.key_id)}">Manage this key</a> · '
        '<a href="./">All keys</a></p>'
    )
    return html_response(page("API key created", body), status=201)


def _record(client: ApiClient, key_id: str | None) -> ApiKeyRecord:
    if not key_id:
        raise HTTPError(400, "Missing key id: send ?key=<key id>.")
    record = client.keys.store.get_key(key_id)
    if record is None:
        if key_id.startswith("dna_"):
            # Never echo what looks like a whole key back into a page.
            raise HTTPError(404, "That is an API key, not a key id: open the key list and follow its id.")
        raise HTTPError(404, f"No API key has the id {key_id!r}.")
    return record


def manage_key(client: ApiClient, request: Request) -> Response:
    """Show one key by its id."""
    record = _record(client, request.query.get("key"))
    revoke = (
        f'<p><a href="revoke_key/{escape(record.key_id)}">Revoke this key</a></p>'
        if record.is_active()
        else ""
    )
    body = f'{_describe(record)}{revoke}<p><a href="./">All keys</a></p>'
    return html_response(page(f"API key {record.key_id}", body))


def revoke_key(client: ApiClient, request: Request) -> Response:
    """GET: ask to confirm; POST: revoke the key."""
    record = _record(client, request.path_params["key"])
    if request.method == "GET":
        body = f"{_describe(record)}{_form(client, request, 'Revoke key')}"
        return html_response(page(f"Revoke API key {record.key_id}?", body))

    _check_form(client, request)
    revoked = client.keys.store.revoke_key(record.key_id)
    message = "The key is revoked." if revoked else "The key was already revoked."
    return html_response(page(f"API key {record.key_id}", f'<p>{message}</p><p><a href="../">All keys</a></p>'))

"""Small HTML pages with inline styles: no external stylesheet or script.

Every piece of text placed in a page goes through :func:`html.escape`;
callers pass raw text, never markup, except through :func:`page`'s ``body``.
"""

from __future__ import annotations

from collections.abc import Iterable
from html import escape

__all__ = ["escape", "log_page", "page"]

_STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:1.5rem;color:#222;background:#fafafa}
a{color:#0645ad} h1{font-size:1.3rem} table{border-collapse:collapse}
td,th{padding:.25rem .75rem;border-bottom:1px solid #ddd;text-align:left}
pre{background:#fff;border:1px solid #ddd;padding:.75rem;white-space:pre-wrap;word-break:break-all;font:13px/1.4 ui-monospace,monospace}
.key{font:15px ui-monospace,monospace;background:#ffe;padding:.5rem;border:1px solid #cc9}
.muted{color:#777} form{display:inline}
"""


def page(title: str, body: str) -> str:
    """Wrap ``body`` (markup) in a complete page titled ``title`` (text)."""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><h1>{escape(title)}</h1>{body}</body></html>"
    )


def log_page(title: str, lines: Iterable[str], back: str) -> str:
    """Render log ``lines`` (untrusted text) escaped inside a ``<pre>``."""
    text = "\n".join(escape(line) for line in lines)
    body = f'<p><a href="{escape(back)}">Back to the index</a></p><pre>{text or "(empty)"}</pre>'
    return page(title, body)

"""Small HTML pages with inline styles: no external stylesheet or script.

Every piece of text placed in a page goes through :func:`html.escape`;
callers pass raw text, never markup, except through :func:`page`'s ``body``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from html import escape
from urllib.parse import quote

__all__ = ["escape", "log_controls", "log_page", "log_page_end", "log_page_start", "page", "render_log_line"]

_STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:1.5rem;color:#222;background:#fafafa}
a{color:#0645ad} h1{font-size:1.3rem} table{border-collapse:collapse}
td,th{padding:.25rem .75rem;border-bottom:1px solid #ddd;text-align:left}
pre{background:#fff;border:1px solid #ddd;padding:.75rem;white-space:pre-wrap;overflow-wrap:anywhere;font:13px/1.4 ui-monospace,monospace}
.key{font:15px ui-monospace,monospace;background:#ffe;padding:.5rem;border:1px solid #cc9}
.muted{color:#777} form{display:inline}
.controls{margin:.5rem 0} .controls input{font:inherit;padding:.1rem .3rem} .controls a{margin-left:.75rem}
.notice{background:#fff4d6;border:1px solid #e0c36a;padding:.4rem .6rem}
.ts{color:#666} .lv{font-weight:bold} .lv-error{color:#b00020} .lv-warn{color:#a15c00}
.lv-info{color:#0b5394} .lv-debug{color:#777}
"""

# A timestamp: ISO 8601 (the engine's log, most apps), nginx's error log
# (2024/01/31 12:00:00) or nginx's access log ([31/Jan/2024:12:00:00 +0000]).
_TIMESTAMP = re.compile(
    r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?"
    r"|\d{4}/\d{2}/\d{2} \d{2}:\d{2}:\d{2}"
    r"|\[\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4}\]"
)
# A level word: upper case as Python's logging writes it, or in brackets as
# nginx writes it ([error]). A lower-case word alone is too often plain text.
_LEVEL = re.compile(
    r"\b(EMERG|ALERT|CRIT|CRITICAL|FATAL|ERROR|WARN|WARNING|NOTICE|INFO|DEBUG)\b"
    r"|\[(emerg|alert|crit|error|warn|notice|info|debug)\]"
)
_LEVEL_CLASSES = {
    "emerg": "error", "alert": "error", "crit": "error", "critical": "error", "fatal": "error",
    "error": "error", "warn": "warn", "warning": "warn", "notice": "info", "info": "info",
    "debug": "debug",
}


def page_start(title: str) -> str:
    """Return the start of a page titled ``title`` (text), up to its heading."""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><h1>{escape(title)}</h1>"
    )


def page(title: str, body: str) -> str:
    """Wrap ``body`` (markup) in a complete page titled ``title`` (text)."""
    return f"{page_start(title)}{body}</body></html>"


def render_log_line(line: str) -> str:
    """Return one log line as markup: escaped, its timestamp and level marked."""
    spans: list[tuple[int, int, str]] = []
    timestamp = _TIMESTAMP.search(line)
    if timestamp:
        spans.append((timestamp.start(), timestamp.end(), "ts"))
    level = _LEVEL.search(line)
    if level and not (timestamp and level.start() < timestamp.end() and timestamp.start() < level.end()):
        word = (level.group(1) or level.group(2)).lower()
        spans.append((level.start(), level.end(), f"lv lv-{_LEVEL_CLASSES[word]}"))
    spans.sort()

    parts = []
    position = 0
    for start, end, css in spans:
        parts.append(escape(line[position:start]))
        parts.append(f'<span class="{css}">{escape(line[start:end])}</span>')
        position = end
    parts.append(escape(line[position:]))
    return "".join(parts)


def log_controls(log: str, lines: int, query: str, streaming: bool = False) -> str:
    """Return the form and links above a log: lines, search, follow, download, formats.

    :param log: the log's own relative URL, such as ``nginx`` or ``dna``.
    """
    base = quote(log)
    search = f"&q={quote(query)}" if query else ""
    form = (
        f'<form method=get action="{escape(base)}">'
        f'<label>Lines <input name=lines type=number min=1 value="{lines}" size=6></label> '
        f'<label>Search <input name=q type=search value="{escape(query)}"></label> '
        "<button>Show</button></form>"
    )
    links = [
        ("Stop following", f"{base}?lines={lines}{search}") if streaming
        else ("Follow", f"{base}?lines={lines}{search}&follow=1"),
        ("Download the log", f"{base}?download=1"),
        (f"Download the last {lines} lines", f"{base}?download=1&lines={lines}"),
        ("Text", f"{base}?lines={lines}{search}&format=text"),
        ("JSON", f"{base}?lines={lines}{search}&format=json"),
    ]
    anchors = "".join(f'<a href="{escape(href)}">{escape(text)}</a>' for text, href in links)
    return f'<div class="controls">{form}{anchors}</div>'


def log_page_start(title: str, back: str, controls: str = "", notice: str | None = None) -> str:
    """Return a log page up to the opening ``<pre>``, for pages streamed line by line.

    :param controls: markup from :func:`log_controls`.
    :param notice: text shown above the log, such as why a search stopped.
    """
    notice_markup = f'<p class="notice">{escape(notice)}</p>' if notice else ""
    back_link = f'<p><a href="{escape(back)}">Back to the index</a></p>'
    return f"{page_start(title)}{back_link}{controls}{notice_markup}<pre>"


def log_page_end(notice: str | None = None) -> str:
    """Return the end of a page begun with :func:`log_page_start`."""
    notice_markup = f'<p class="notice">{escape(notice)}</p>' if notice else ""
    return f"</pre>{notice_markup}</body></html>"


def log_page(
    title: str, lines: Iterable[str], back: str, controls: str = "", notice: str | None = None
) -> str:
    """Render log ``lines`` (untrusted text) escaped inside a ``<pre>``."""
    text = "\n".join(render_log_line(line) for line in lines)
    return log_page_start(title, back, controls, notice) + (text or "(empty)") + log_page_end()

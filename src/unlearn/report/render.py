"""Blocks rendered as Markdown and as self-contained HTML."""

from __future__ import annotations

import html
import re

from unlearn.report.tables import Block

_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|~&#])")


def md_escape(text: str) -> str:
    """Plain text for a Markdown line or table cell (no markup, no HTML, no line breaks)."""
    return _MD_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))


def render_markdown(blocks: list[Block]) -> str:
    out: list[str] = []
    for b in blocks:
        if b.kind == "heading":
            out.append("#" * b.level + " " + md_escape(b.text))
        elif b.kind == "text":
            out.append(md_escape(b.text))
        elif b.kind == "list":
            out.append("\n".join("- " + md_escape(i) for i in b.items))
        elif b.kind == "image":
            alt = md_escape(b.items[0] if b.items else b.text)
            out.append(f"![{alt}]({b.text})")
        elif b.kind == "table":
            t = b.table
            lines = [
                "| " + " | ".join(md_escape(h) for h in t.header) + " |",
                "|" + "|".join("---" for _ in t.header) + "|",
            ]
            lines += ["| " + " | ".join(md_escape(c) for c in row) + " |" for row in t.rows]
            out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 80rem;
       padding: 0 1rem; color: #222; line-height: 1.4; }
h1 { border-bottom: 2px solid #ddd; padding-bottom: .3rem; }
h2 { margin-top: 2.2rem; border-bottom: 1px solid #eee; }
h3 { font-size: 1rem; margin: 1.4rem 0 .4rem; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: .85rem; margin: .5rem 0 1rem; }
th, td { border: 1px solid #ddd; padding: .25rem .5rem; vertical-align: top; }
th { background: #f4f4f4; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr:nth-child(even) td { background: #fafafa; }
img { max-width: 100%; border: 1px solid #eee; }
"""

_NUMERIC = re.compile(r"^(n/a( \[\d+\])?|-?\d[\d.e+-]*)$")


def render_html(blocks: list[Block], title: str = "Unlearning report") -> str:
    esc = html.escape
    body: list[str] = []
    for b in blocks:
        if b.kind == "heading":
            body.append(f"<h{b.level}>{esc(b.text)}</h{b.level}>")
        elif b.kind == "text":
            body.append(f"<p>{esc(b.text)}</p>")
        elif b.kind == "list":
            body.append("<ul>" + "".join(f"<li>{esc(i)}</li>" for i in b.items) + "</ul>")
        elif b.kind == "image":
            alt = b.items[0] if b.items else b.text
            body.append(f'<p><img src="{esc(b.text)}" alt="{esc(alt)}"></p>')
        elif b.kind == "table":
            t = b.table
            head = "".join(f"<th>{esc(h)}</th>" for h in t.header)
            rows = "".join(
                "<tr>"
                + "".join(
                    f'<td class="num">{esc(c)}</td>' if j and _NUMERIC.match(c) else f"<td>{esc(c)}</td>"
                    for j, c in enumerate(row)
                )
                + "</tr>"
                for row in t.rows
            )
            body.append(f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>')
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )

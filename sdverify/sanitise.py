"""One sanitiser for every string a submission can influence before it reaches a report.

Exception messages, notes, outputs, file names and the names made from them are data:
each writer passes them through the function of its format.  Stored grades (``grade.json``)
keep the raw text; JSON needs nothing more (``json.dumps`` escapes every control character).

* ``printable``: terminal text, XML (JUnit) and the base of every other format.  Control
  characters other than newline and tab (C0, DEL, C1: so ESC/CSI/OSC sequences), bidi
  overrides, lone surrogates (undecodable file names) and the non-characters U+FFFE/U+FFFF
  are shown as their escapes (``\\x1b``).  What remains is valid XML 1.0 and inert in a
  terminal.
* ``html``: ``printable``, then HTML-escaped.
* ``csv_cell``: ``printable``, and a leading formula character (``= + - @``, tab)
  prefixed with ``'`` so a spreadsheet shows the text instead of evaluating it (OWASP's
  CSV-injection advice).
"""

from __future__ import annotations

import html as _html
import re
import xml.etree.ElementTree as ET

_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff\ufffe\uffff]")
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t")  # OWASP's, but CR: ``printable`` already shows it as ``\r``


def printable(text: str) -> str:
    """``text`` with every unsafe character shown as its Python escape (``"\\x1b[2J"`` prints inert)."""
    return _UNSAFE.sub(lambda m: ascii(m[0])[1:-1], text)


def html(text: str) -> str:
    """``text`` as HTML character data or a quoted attribute value."""
    return _html.escape(printable(text))


def csv_cell(text: str) -> str:
    """``text`` as a spreadsheet cell that is never a formula."""
    text = printable(text)
    return "'" + text if text.startswith(FORMULA_PREFIXES) else text


def xml_tree(root: ET.Element) -> ET.Element:
    """``root`` with every attribute value, text and tail below it made ``printable`` (in place):
    the serialised document always parses."""
    for element in root.iter():
        element.attrib = {key: printable(value) for key, value in element.attrib.items()}
        element.text = None if element.text is None else printable(element.text)
        element.tail = None if element.tail is None else printable(element.tail)
    return root

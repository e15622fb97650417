"""Text in pictures: widths for sizing boxes without a browser, and names made safe to draw.

Widths are DejaVu Sans advance widths (em) of ASCII 32..126: DejaVu Sans is what Debian's browsers
and matplotlib draw with by default, so boxes fit their text there exactly; other sans-serif fonts
are close enough (boxes keep a margin).

Names come from model files and may hold anything. :func:`printable` shows control characters,
lone surrogates and the other code points XML 1.0 forbids as visible escapes (``\x01``,
``\ud800``), so that SVG stays well-formed XML, ``dot`` accepts the DOT text and the files encode
as UTF-8; :func:`escape` is that plus HTML/XML escaping, for every name written into markup.
"""
from __future__ import annotations

import html
import re

REGULAR = (
    0.318, 0.401, 0.46, 0.838, 0.636, 0.95, 0.78, 0.275, 0.39, 0.39, 0.5, 0.838, 0.318, 0.361, 0.318,
    0.337, 0.636, 0.636, 0.636, 0.636, 0.636, 0.636, 0.636, 0.636, 0.636, 0.636, 0.337, 0.337, 0.838,
    0.838, 0.838, 0.531, 1.0, 0.684, 0.686, 0.698, 0.77, 0.632, 0.575, 0.775, 0.752, 0.295, 0.295,
    0.656, 0.557, 0.863, 0.748, 0.787, 0.603, 0.787, 0.695, 0.635, 0.611, 0.732, 0.684, 0.989, 0.685,
    0.611, 0.685, 0.39, 0.337, 0.39, 0.838, 0.5, 0.5, 0.613, 0.635, 0.55, 0.635, 0.615, 0.352, 0.635,
    0.634, 0.278, 0.278, 0.579, 0.278, 0.974, 0.634, 0.612, 0.635, 0.635, 0.411, 0.521, 0.392, 0.634,
    0.592, 0.818, 0.592, 0.592, 0.525, 0.636, 0.337, 0.636, 0.838)
BOLD = (
    0.348, 0.456, 0.521, 0.838, 0.696, 1.002, 0.872, 0.306, 0.457, 0.457, 0.523, 0.838, 0.38, 0.415,
    0.38, 0.365, 0.696, 0.696, 0.696, 0.696, 0.696, 0.696, 0.696, 0.696, 0.696, 0.696, 0.4, 0.4, 0.838,
    0.838, 0.838, 0.58, 1.0, 0.774, 0.762, 0.734, 0.83, 0.683, 0.683, 0.821, 0.837, 0.372, 0.372,
    0.775, 0.637, 0.995, 0.837, 0.85, 0.733, 0.85, 0.77, 0.72, 0.682, 0.812, 0.774, 1.103, 0.771,
    0.724, 0.725, 0.457, 0.365, 0.457, 0.838, 0.5, 0.5, 0.675, 0.716, 0.593, 0.716, 0.678, 0.435,
    0.716, 0.712, 0.343, 0.343, 0.665, 0.343, 1.042, 0.712, 0.687, 0.716, 0.716, 0.493, 0.595, 0.478,
    0.712, 0.652, 0.924, 0.645, 0.652, 0.582, 0.712, 0.365, 0.712, 0.838)
FONT_FAMILY = "'DejaVu Sans', Verdana, sans-serif"


# C0 controls (tab and newline included: one name, one line), DEL and C1 controls, surrogates,
# and the two non-characters XML 1.0 refuses
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


def printable(text: str) -> str:
    """``text`` with every code point XML, DOT or UTF-8 cannot carry shown as a visible escape."""
    return _UNPRINTABLE.sub(lambda m: ascii(m.group())[1:-1], str(text))


def escape(text: str) -> str:
    """:func:`printable` text escaped for HTML and XML (quotes too: safe in attributes)."""
    return html.escape(printable(text), quote=True)


def text_width(text: str, size: float, bold: bool = False) -> float:
    """Width in pixels of ``text`` at font ``size`` (pixels)."""
    table = BOLD if bold else REGULAR
    return size * sum(table[ord(c) - 32] if 32 <= ord(c) < 127 else 0.8 for c in text)

"""Agent-derived text made safe for a terminal: control characters are shown, never obeyed.

An agent (or the verify command its work ships) can print escape sequences that clear the screen, move the cursor,
plant OSC 8 hyperlinks or write the clipboard (OSC 52). Everything orchard prints of such text to a human passes
through `safe_line` or `safe_text`: each C0 control, DEL, each C1 control and each bidirectional override becomes
its escape as Python writes it (ESC is the four characters `\\x1b`, CR is `\\r`, U+202E is `\\u202e`), so the user
sees that the agent tried something. Backslashes already in the text are left as they are. `--json` output needs
none of this: JSON escapes control characters itself.
"""

from __future__ import annotations

import re

# C0 controls, DEL and the C1 controls (U+0080-U+009F: 8-bit CSI, OSC, ST …), then the bidirectional embeddings,
# overrides and isolates, which make text read differently from how it is stored ("Trojan Source").
_BIDI = "\u202a-\u202e\u2066-\u2069"
_UNSAFE_IN_LINE = re.compile(f"[\x00-\x1f\x7f-\x9f{_BIDI}]")
_UNSAFE_IN_TEXT = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f{_BIDI}]")  # tab and newline stay
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _shown(match: re.Match[str]) -> str:
    char = match.group(0)
    code = ord(char)
    return _NAMED.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def safe_line(text: str) -> str:
    """One line for a terminal (a dashboard cell, a plain progress line): every control character, tab and newline
    included, shown as its escape."""
    if text.isprintable():  # the common case, checked in C: nothing to replace
        return text
    return _UNSAFE_IN_LINE.sub(_shown, text)


def safe_text(text: str) -> str:
    """Text of several lines for a terminal (a log, an error): as `safe_line`, but tab and newline stay."""
    if text.isprintable():
        return text
    return _UNSAFE_IN_TEXT.sub(_shown, text)

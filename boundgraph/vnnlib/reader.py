"""Reading VNN-LIB text: loading a file (also gzip) or text, and splitting it into S-expressions.

:func:`_load` gives the text of a path or of the text itself; :func:`_read_sexprs` turns it into
top-level S-expressions that keep their line numbers for error messages. The parser of those
S-expressions is :mod:`boundgraph.vnnlib.parser`.
"""
from __future__ import annotations

import gzip
import os
import re

from .property import VnnlibError

# ----------------------------------------------------------------------------------------------
# Reading and tokenising

# One token: a parenthesis, a string literal, a |quoted symbol|, a plain atom, a comment (rest of
# the line), or (last) a lone '"' or '|' that starts an unterminated literal.
_TOKEN_RE = re.compile(r'''\(|\)|"(?:[^"]|"")*"|\|[^|]*\||[^\s();"|]+|;.*|\S''')


class _Atom(str):
    """A top-level atom (outside any parentheses), which keeps its line for error messages."""

    line: int


class _List(list):
    """A parenthesised S-expression; inner atoms are plain ``str``."""

    __slots__ = ("line",)


def _load(text_or_path: str | os.PathLike) -> tuple[str, str | None]:
    """Return ``(text, path)``; ``path`` is None when ``text_or_path`` is the text itself."""
    if isinstance(text_or_path, (bytes, bytearray)):
        raise TypeError("parse_vnnlib expects a str or os.PathLike, not bytes")
    if isinstance(text_or_path, os.PathLike):
        path = os.fspath(text_or_path)
    elif isinstance(text_or_path, str):
        s = text_or_path
        single_line = "\n" not in s
        if single_line and os.path.isfile(s):
            path = s
        elif not s.strip():
            return s, None  # empty text: reported as "no input variables declared"
        elif "(" in s and not (single_line and s.rstrip().endswith((".vnnlib", ".gz"))):
            return s, None
        else:
            path = s
    else:
        raise TypeError(
            f"parse_vnnlib expects a path or the VNN-LIB text, got {type(text_or_path).__name__}"
        )
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise VnnlibError(f"cannot read the file: {exc.strerror or exc}", path) from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise VnnlibError(f"cannot decompress the gzip file: {exc}", path) from None
    try:
        return raw.decode("utf-8"), path
    except UnicodeDecodeError as exc:
        raise VnnlibError(f"the file is not UTF-8 text ({exc})", path) from None


def _read_sexprs(text: str, path: str | None) -> list:
    """Split ``text`` into top-level S-expressions with line numbers.

    Lists are ``_List`` (with ``.line``, the line of their ``(``), atoms inside lists plain
    ``str``, atoms at top level ``_Atom``. ``|quoted symbols|`` lose their bars.
    """
    top: list = []
    stack: list[_List] = []
    cur: list = top
    findall = _TOKEN_RE.findall
    for lineno, line_text in enumerate(text.split("\n"), 1):
        for tok in findall(line_text):
            if tok == "(":
                node = _List()
                node.line = lineno
                stack.append(node)
                cur.append(node)
                cur = node
            elif tok == ")":
                if not stack:
                    raise VnnlibError(
                        "unbalanced parentheses: ')' without a matching '('", path, lineno
                    )
                stack.pop()
                cur = stack[-1] if stack else top
            else:
                first = tok[0]
                if first == ";":
                    break
                if tok == '"' or tok == "|":
                    raise VnnlibError(
                        f"unexpected character {tok!r} (unterminated string or quoted symbol)",
                        path,
                        lineno,
                    )
                if first == "|":
                    tok = tok[1:-1]
                if stack:
                    cur.append(tok)
                else:
                    atom = _Atom(tok)
                    atom.line = lineno
                    top.append(atom)
    if stack:
        raise VnnlibError(
            f"unbalanced parentheses: the '(' opened at line {stack[0].line} is never closed "
            f"({len(stack)} missing ')')",
            path,
            stack[-1].line,
        )
    return top

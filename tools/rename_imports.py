"""Rename the installed import names server, shared, exporter, edge_runtime and demo_app to sub-packages of
pocketrank (issue 18: generic top-level names clash with an app's own modules), everywhere they are named.

    python tools/rename_imports.py            # rewrite the tree in place; prints the files it changed
    python tools/rename_imports.py --check    # exit 1 and list the files that still need it (CI, merges)

Idempotent: a name already under pocketrank. is left alone, so it is safe to re-run after merging a branch
written against the old names. The folders stay where they are (server/, shared/, ...): pocketrank/server
and its siblings are symlinks to them, so the same files are `pocketrank.server` from a checkout, in an
editable install and in the wheel (setup.cfg packages only pocketrank and pocketrank.*).

What is rewritten:
- Python import statements: `from server.x import y` -> `from pocketrank.server.x import y`;
  `import shared` -> `import pocketrank.shared as shared` (the bound name is kept).
- Module paths in strings, comments, docstrings and every text file (Markdown, shell, Makefile, Dockerfile,
  YAML, TOML, cfg, nginx conf): `server.wsgi:app`, `python:server.gunicorn_conf`, `"shared.wire.loads"`,
  `python -m demo_app ...`, `"-m", "demo_app"`, and import lines inside code held in strings and ```python
  blocks. A dotted name is a module path only if its second part is a module or package of that folder
  (so `server.log`, a file name, or `server.url`, an attribute, are left alone); code outside strings and
  comments is only touched in import statements (a variable named `server` keeps its attributes).
Not rewritten: folder paths (server/config.py), bare folder names in strings (test_layering's package list),
and this file. Afterwards the changed Python files' imports are re-sorted with `ruff check --select I --fix`
(the five names now sort under pocketrank).
"""

from __future__ import annotations

import argparse
import ast
import io
import re
import shutil
import subprocess
import sys
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NAMES = ("server", "shared", "exporter", "edge_runtime", "demo_app")
PACKAGE = "pocketrank"
SKIP_DIRS = {".git", ".venv", "venv", "build", "dist", "var", "__pycache__", ".pytest_cache", ".hypothesis",
             ".mypy_cache", ".ruff_cache", "node_modules", "pocketrank.egg-info"}
SKIP_FILES = {"tools/rename_imports.py",  # its own patterns
              "tests/test_layering.py",  # names modules by their folders on purpose (canonical())
              "setup.cfg", "pyproject.toml"}  # the mapping itself, edited by hand (ruff reads relative imports by folder)
TEXT_SUFFIXES = {".md", ".sh", ".cfg", ".toml", ".yaml", ".yml", ".conf", ".ini", ".txt"}
TEXT_NAMES = {"Makefile", "Dockerfile", "run"}

_ALT = "|".join(NAMES)
# A dotted module path that is not already part of a longer name (pocketrank.server, tests/server, x-server).
DOTTED = re.compile(rf"(?<![\w.\-/])({_ALT})((?:\.[A-Za-z_]\w*)+)")
DASH_M = re.compile(rf"(?<![\w-])(-m\s+)({_ALT})(?![\w/-])")
# Where a statement starts: a line, after `;`, or just inside a one-line string ("import x; ...").
_START = r"(?:^|;|^[rRbBuUfF]{0,2}[\"']{1,3})"
FROM_LINE = re.compile(rf"(?m)({_START}[ \t]*from[ \t]+)({_ALT})(?=[ \t.])(?=[^\n]*\bimport\b)")
IMPORT_LINE = re.compile(rf"(?m)({_START}[ \t]*import[ \t]+)({_ALT})\b(?![\w.])(?![ \t]+as\b)")
IMPORT_DOTTED_LINE = re.compile(rf"(?m)({_START}[ \t]*import[ \t]+)({_ALT})(?=\.|[ \t]+as\b)")


def is_module(top: str, rest: str) -> bool:
    """server + .wsgi:... is a module path when server/wsgi.py or server/wsgi/ exists."""
    first = rest.lstrip(".").split(".")[0]
    return (ROOT / top / f"{first}.py").is_file() or (ROOT / top / first).is_dir()


def rewrite_text(text: str) -> str:
    """Module paths and import lines in free text (a text file, a string, a comment)."""
    text = DOTTED.sub(lambda m: f"{PACKAGE}.{m.group(1)}{m.group(2)}" if is_module(m.group(1), m.group(2))
                      else m.group(0), text)
    text = DASH_M.sub(lambda m: f"{m.group(1)}{PACKAGE}.{m.group(2)}", text)
    text = FROM_LINE.sub(lambda m: f"{m.group(1)}{PACKAGE}.{m.group(2)}", text)
    text = IMPORT_LINE.sub(lambda m: f"{m.group(1)}{PACKAGE}.{m.group(2)} as {m.group(2)}", text)
    return IMPORT_DOTTED_LINE.sub(lambda m: f"{m.group(1)}{PACKAGE}.{m.group(2)}", text)


def rewrite_fstring(token: str) -> str:
    """An f-string: only its literal parts (what is inside {...} is code)."""
    out, depth, chunk = [], 0, []
    for ch in token:
        if ch == "{" and depth == 0:
            out.append(rewrite_text("".join(chunk)))
            chunk = [ch]
            depth = 1
            continue
        chunk.append(ch)
        if depth:
            depth += ch == "{"
            depth -= ch == "}"
            if depth == 0:
                out.append("".join(chunk))
                chunk = []
    out.append(rewrite_text("".join(chunk)) if depth == 0 else "".join(chunk))
    return "".join(out)


def _string_value(token: str) -> str | None:
    try:
        value = ast.literal_eval(token)
    except (ValueError, SyntaxError):
        return None
    return value if isinstance(value, str) else None


def import_edits(source: str) -> dict[tuple[int, int], str]:
    """(line, column) of each imported name to prefix, with what to put there, from the syntax tree."""
    edits: dict[tuple[int, int], str] = {}
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                and node.module.split(".")[0] in NAMES:
            line = lines[node.lineno - 1]
            m = re.compile(rf"from\s+({_ALT})\b").search(line, node.col_offset)
            if m:
                edits[(node.lineno, m.start(1))] = f"{PACKAGE}."
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] not in NAMES:
                    continue
                # The alias's own position (3.10+), else the first match on the statement's line.
                lineno = getattr(alias, "lineno", node.lineno)
                col = getattr(alias, "col_offset", None)
                line = lines[lineno - 1]
                if col is None:
                    m = re.compile(rf"\b{re.escape(alias.name)}\b").search(line, node.col_offset + len("import"))
                    if not m:
                        continue
                    col = m.start()
                keep = "" if alias.asname or "." in alias.name else f" as {alias.name}"
                edits[(lineno, col)] = f"{PACKAGE}." + ("\0" + keep if keep else "")
    return edits


def rewrite_python(source: str) -> str:
    edits = import_edits(source)
    lines = source.splitlines(keepends=True)
    # Strings and comments, by token (positions are (line, column)); code is left as it is.
    replacements: list[tuple[tuple[int, int], tuple[int, int], str]] = []
    previous_string = None
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.STRING:
            prefix = re.match(r"[A-Za-z]*", tok.string).group(0).lower()
            new = rewrite_fstring(tok.string) if "f" in prefix else rewrite_text(tok.string)
            value = _string_value(tok.string)
            if previous_string == "-m" and value in NAMES:  # subprocess lists: [python, "-m", "demo_app"]
                new = tok.string.replace(value, f"{PACKAGE}.{value}", 1)
            if new != tok.string:
                replacements.append((tok.start, tok.end, new))
            previous_string = value
        elif tok.type == tokenize.COMMENT or tok.type == getattr(tokenize, "FSTRING_MIDDLE", None):  # 3.12+
            new = rewrite_text(tok.string)
            if new != tok.string:
                replacements.append((tok.start, tok.end, new))
        elif tok.type not in (tokenize.NL, tokenize.NEWLINE) and tok.string != ",":
            previous_string = None
    for (line, col), insert in edits.items():
        replacements.append(((line, col), (line, col), insert))

    # Apply from the end, so earlier positions stay valid.
    offsets = [0]
    for text in lines:
        offsets.append(offsets[-1] + len(text))
    out = source
    for start, end, new in sorted(replacements, key=lambda r: (r[0], r[1]), reverse=True):
        a = offsets[start[0] - 1] + start[1]
        b = offsets[end[0] - 1] + end[1]
        if "\0" in new:  # an import whose bound name must be kept: `import shared` -> `import pocketrank.shared as shared`
            head, keep = new.split("\0")
            name_end = re.match(r"[\w.]+", out[b:])
            assert name_end is not None
            stop = b + name_end.end()
            out = out[:a] + head + out[a:stop] + keep + out[stop:]
        else:
            out = out[:a] + new + out[b:]
    return out


def files() -> list[Path]:
    found = []
    stack = [ROOT]
    while stack:
        folder = stack.pop()
        for path in sorted(folder.iterdir()):
            rel = path.relative_to(ROOT).as_posix()
            if path.is_symlink() or rel in SKIP_FILES:
                continue  # pocketrank/server -> ../server: the files are visited once, in server/
            if path.is_dir():
                if path.name not in SKIP_DIRS:
                    stack.append(path)
            elif path.suffix == ".py" or path.suffix in TEXT_SUFFIXES or path.name in TEXT_NAMES:
                found.append(path)
    return found


def rewrite(path: Path) -> str:
    text = path.read_text(encoding="utf-8")
    return rewrite_python(text) if path.suffix == ".py" else rewrite_text(text)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="List the files that need rewriting; change nothing.")
    args = parser.parse_args(argv)
    changed = []
    for path in files():
        old = path.read_text(encoding="utf-8")
        new = rewrite(path)
        if new != old:
            changed.append(path)
            if not args.check:
                path.write_text(new, encoding="utf-8")
    for path in changed:
        print(path.relative_to(ROOT))
    if args.check:
        return 1 if changed else 0
    python_files = [str(p) for p in changed if p.suffix == ".py"]
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    if python_files and Path(ruff).exists():
        subprocess.run([ruff, "check", "--quiet", "--select", "I", "--fix", *python_files], cwd=ROOT, check=False)
    print(f"{len(changed)} files rewritten", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

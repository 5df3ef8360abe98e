"""
nanoGPT's configurator as a function: `python train.py config/x.py --batch_size=32` runs the config file in a scratch
namespace, then applies the --key=value overrides, checking every key and type against the script's defaults; --help
lists the keys with the comments of their lines.
"""
import ast
import difflib
import os
import re
import sys
import traceback


def print_help(script: str, defaults: dict):
    """--help: the script's docstring, then every key with its default and the comment of its line in the script's
    defaults block (the lines between the first two `# ---` rulers)."""
    src = open(script, encoding="utf-8").read()
    doc = ast.get_docstring(ast.parse(src)) or ""
    print(doc.strip() + "\n\nkeys (--key=value; config files set the same keys):")
    ruler = re.compile(r"^\s*# -{40,}$", re.M)
    block = ruler.split(src)[1] if len(ruler.findall(src)) >= 2 else ""
    for line in block.splitlines():
        line = line.strip()
        m = re.match(r"(\w+) ?= ?.*?(?:\s+#\s?(.*))?$", line)
        if m and m.group(1) in defaults:
            print(f"  --{m.group(1)}={defaults[m.group(1)]!r}".ljust(36) + (f"  {m.group(2)}" if m.group(2) else ""))
        elif line.startswith("#  "):  # a comment carried over to the next line
            print(" " * 38 + line.lstrip("# "))
        elif line.startswith("# "):  # a section heading
            print(f" {line[2:]}")


def configure(defaults: dict, argv: list, script: str | None = None) -> dict:
    """nanoGPT's configurator as a function. argv holds config files (plain Python assignments, run in a scratch
    namespace, in order) and --key=value overrides (value parsed with ast.literal_eval, else kept as a string).
    Returns a copy of defaults with the overrides applied. Every key must already be in defaults; a value must have
    the default's type, except that an int is accepted for a float and a key whose default is None takes anything.
    --help (or -h) prints the keys of script (see print_help) and exits 0.
    Raises SystemExit with one line naming the key (and the closest valid names) on any bad key or value."""
    if "--help" in argv or "-h" in argv:
        print_help(script or sys.argv[0], defaults)
        raise SystemExit(0)
    config = dict(defaults)

    def assign(key, value, where):
        if key not in defaults:
            close = difflib.get_close_matches(key, list(defaults), n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else f"; valid keys: {', '.join(sorted(defaults))}"
            raise SystemExit(f"config error: unknown key '{key}' ({where}){hint}")
        default = defaults[key]
        if isinstance(default, float) and type(value) is int:
            value = float(value)
        if default is not None and type(value) is not type(default):
            raise SystemExit(f"config error: '{key}' ({where}) must be {type(default).__name__} like its default "
                             f"{default!r}, got {value!r} ({type(value).__name__})")
        config[key] = value

    for arg in argv:
        if not arg.startswith("--"):  # a config file
            if not os.path.isfile(arg):
                raise SystemExit(f"config error: no config file '{arg}' (see config/ for the shipped ones)")
            scope = {}
            try:
                exec(compile(open(arg).read(), arg, "exec"), scope)
            except Exception as e:  # a config file is Python: a typo there is the user's to fix, in one line
                line = getattr(e, "lineno", None) or traceback.extract_tb(e.__traceback__)[-1].lineno
                raise SystemExit(f"config error: {arg} line {line}: {type(e).__name__}: {e}") from None
            for key, value in scope.items():
                if not key.startswith("_") and not callable(value) and type(value).__name__ != "module":
                    assign(key, value, arg)
        else:
            key, eq, text = arg[2:].partition("=")
            if not eq:
                raise SystemExit(f"config error: '{arg}' must be --key=value")
            try:
                value = ast.literal_eval(text)
            except (SyntaxError, ValueError):
                value = text  # a bare word such as --device=cuda is a string
            assign(key, value, "command line")
    return config

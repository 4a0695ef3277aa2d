#!/usr/bin/env python3
"""Keeps the man pages (and tunnelctl's bash completion) in step with the programs.

    check_man_options.py MAN_DIR PROGRAM... [--toml-example FILE]
                         [--completion tunnelctl=FILE]

For each PROGRAM (the built tunneld, tunnelctl, localproxy, tunnel-relay) it
runs `PROGRAM --help` (for tunnelctl also `tunnelctl COMMAND --help` for each
command its help lists) and checks, against the page's scdoc source
MAN_DIR/NAME.SECTION.scd:

  - every option the help prints appears in the page;
  - every option the page defines (a line starting with *-...*) is one the
    help prints, so an option that was removed or renamed leaves no stale
    entry behind;
  - for tunnelctl, every command appears in the page as *COMMAND*.

With --toml-example, every key and table of the example configuration must
appear in tunneld.toml.5.scd. With --completion, every tunnelctl option and
command must appear in the completion script.

Prints one line per finding and exits 1 if there is any, 0 otherwise.
"""
import argparse
import os
import re
import subprocess
import sys

PAGES = {
    "tunneld": "tunneld.8.scd",
    "tunnelctl": "tunnelctl.1.scd",
    "localproxy": "localproxy.1.scd",
    "tunnel-relay": "tunnel-relay.1.scd",
}
OPTION = re.compile(r"(?<![\w-])--?[A-Za-z][A-Za-z0-9-]*")


def run_help(argv):
    r = subprocess.run(argv + ["--help"], capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} --help exited {r.returncode}: {r.stderr.strip()}")
    return r.stdout


def help_options(text):
    """The options of a --help text: the first column of every line that
    starts with '-' (CLI11's "-h,--help", ours "-s, --listen [HOST:]PORT",
    "-s/-d NAME=...")."""
    found = set()
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped.startswith("-"):
            continue
        column = re.split(r"\s{2,}", stripped)[0]
        found.update(OPTION.findall(column))
    return found


def tunnelctl_commands(text):
    """The command words of the "Commands:" section of tunnelctl --help."""
    commands, inside = [], False
    for line in text.splitlines():
        if line.rstrip().endswith(":") and not line.startswith(" "):
            inside = line.startswith("Commands")
            continue
        m = re.match(r"^  ([a-z]+)\b", line) if inside else None
        if m and m.group(1) not in commands:
            commands.append(m.group(1))
    return commands


def page_text(scd):
    """The page without scdoc's markup, so '*--help*' reads '--help'."""
    return scd.replace("*", "").replace("\\", "")


def page_defined_options(scd):
    """Options the page defines: lines of the form '*-x*, *--long* ARG'."""
    found = set()
    for line in scd.splitlines():
        if line.startswith("*-"):
            found.update(OPTION.findall(page_text(line)))
    return found


def mentions(text, word):
    return re.search(r"(?<![\w-])" + re.escape(word) + r"(?![\w-])", text) is not None


def toml_keys(example):
    """Keys and table names of the example, commented out or not."""
    keys = set()
    for line in example.splitlines():
        m = re.match(r"^\s*#?\s*\[+([a-z_][a-z0-9_.]*)\]+\s*(#.*)?$", line)
        if m:
            keys.update(m.group(1).split("."))
            continue
        m = re.match(r"^\s*#?\s*([a-z_][a-z0-9_.]*)\s*=", line)
        if m:
            keys.add(m.group(1))
    return keys


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("man_dir")
    ap.add_argument("programs", nargs="+")
    ap.add_argument("--toml-example")
    ap.add_argument("--completion", action="append", default=[], metavar="PROGRAM=FILE")
    args = ap.parse_args()

    problems = []
    checked = 0
    helps = {}
    for program in args.programs:
        name = os.path.basename(program)
        if name not in PAGES:
            raise SystemExit(f"no man page known for {name}")
        scd_path = os.path.join(args.man_dir, PAGES[name])
        scd = open(scd_path, encoding="utf-8").read()
        text = page_text(scd)
        help_text = run_help([program])
        options = help_options(help_text)
        commands = []
        if name == "tunnelctl":
            commands = tunnelctl_commands(help_text)
            if not commands:
                problems.append(f"{name}: no commands found in --help (has its layout changed?)")
            for command in commands:
                if command != "help":
                    options |= help_options(run_help([program, command]))
            for command in commands:
                checked += 1
                if not re.search(r"\*" + command + r"\*", scd):
                    problems.append(f"{PAGES[name]}: command '{command}' of {name} --help is not in the page")
        if not options:
            problems.append(f"{name}: no options found in --help (has its layout changed?)")
        for option in sorted(options):
            checked += 1
            if not mentions(text, option):
                problems.append(f"{PAGES[name]}: option {option} of {name} --help is not in the page")
        for option in sorted(page_defined_options(scd) - options):
            problems.append(f"{PAGES[name]}: defines {option}, which {name} --help does not print")
        helps[name] = (options, commands)
        print(f"{name}: {len(options)} options{f', {len(commands)} commands' if commands else ''} checked against {PAGES[name]}")

    for spec in args.completion:
        name, _, path = spec.partition("=")
        if name not in helps:
            raise SystemExit(f"--completion {name}: {name} is not among the programs")
        script = open(path, encoding="utf-8").read()
        options, commands = helps[name]
        for word in sorted(options) + commands:
            checked += 1
            if not mentions(script, word):
                problems.append(f"{os.path.basename(path)} (bash completion): '{word}' of {name} --help is missing")
        print(f"{name}: bash completion checked ({len(options) + len(commands)} words)")

    if args.toml_example:
        page = page_text(open(os.path.join(args.man_dir, "tunneld.toml.5.scd"), encoding="utf-8").read())
        keys = toml_keys(open(args.toml_example, encoding="utf-8").read())
        for key in sorted(keys):
            checked += 1
            if not mentions(page, key):
                problems.append(f"tunneld.toml.5.scd: key '{key}' of {os.path.basename(args.toml_example)} is not in the page")
        print(f"tunneld.toml: {len(keys)} keys of the example checked")

    for p in problems:
        print("MISSING " + p)
    print(f"{checked} checked, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

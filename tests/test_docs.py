"""The README and docs/ hold together: every relative link reaches a file (and, with an #anchor, a heading there),
every `make X` they name is a target of the Makefile, and the README stays the front door (at most 250 lines)."""

import itertools
import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)
INLINE_CODE = re.compile(r"`([^`]+)`")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")  # [text](target)
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.M)
# a `make` command's words, up to the end of the line, a comment, a closing backtick or a shell separator
MAKE_ARGS = r"make[ \t]+((?:<[^<>\n]*>|[^\n#`;&|)<])*)"
MAKE_IN_SPAN = re.compile(r"(?<![\w.$/(-])" + MAKE_ARGS)  # anywhere in inline code
MAKE_IN_BLOCK = re.compile(r"(?:^|&&|\|\||;)[ \t]*" + MAKE_ARGS)  # a command of a code block's line
TARGET_LINE = re.compile(r"^([^\s:=#][^:=#]*?):(?!=)", re.M)  # "a b: deps", not "A := value"


def page_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


def prose(text: str) -> str:
    """The text outside fenced code blocks and inline code (where a [x](y) is not a link)."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def make_commands(text: str) -> list[str]:
    """The words after `make` of every make command in code: a code block's command lines, and inline code (also in
    a code block's comments); a "make" in prose or in a comment's plain words is English, not a command."""
    commands = []
    for block in FENCE.findall(text):
        for line in block.splitlines():
            command, _, comment = line.partition("#")
            commands += MAKE_IN_BLOCK.findall(command)
            commands += [args for span in INLINE_CODE.findall(comment) for args in MAKE_IN_SPAN.findall(span)]
    for span in INLINE_CODE.findall(FENCE.sub("", text)):
        commands += MAKE_IN_SPAN.findall(span.replace("\n", " "))
    return commands


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text without markup, lowercase, punctuation but - and _ dropped, spaces -."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").replace("*", "")
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """The anchors of a Markdown text's headings (a repeated heading gets -1, -2, ... as on GitHub)."""
    seen: dict[str, int] = {}
    found = set()
    for heading in HEADING.findall(FENCE.sub("", text)):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def broken_links(text: str, where: Path) -> list[str]:
    """The relative links of ``text`` (the contents of the file ``where``) that reach no file, or no heading there."""
    broken = []
    for target in LINK.findall(prose(text)):
        if re.match(r"(https?|mailto):", target):
            continue
        file_part, _, anchor = target.partition("#")
        dest = (where.parent / file_part).resolve() if file_part else where
        if file_part and not dest.exists():
            broken.append(f"{target}: no file {dest}")
        elif anchor and dest.suffix == ".md":
            headings = anchors(text if dest == where else dest.read_text())
            if anchor not in headings:
                broken.append(f"{target}: no heading #{anchor} in {dest.name}")
    return broken


def expand(word: str) -> list[str]:
    """A target as the docs write it, as names: {a,b} and <a|b> are alternatives, [x] is optional, <name> any."""
    for pattern, options in (
        (r"\{([^{}]*)\}", lambda m: m.group(1).split(",")),
        (r"<([^<>]*\|[^<>]*)>", lambda m: m.group(1).split("|")),
        (r"\[([^\[\]]*)\]", lambda m: ["", m.group(1)]),
    ):
        match = re.search(pattern, word)
        if match:
            return list(
                itertools.chain.from_iterable(
                    expand(word[: match.start()] + option + word[match.end() :]) for option in options(match)
                )
            )
    return [re.sub(r"<[^<>]+>", "PLACEHOLDER", word)]


def make_targets_named(text: str) -> list[str]:
    """The target names of every `make ...` in the code of ``text`` (options and VAR=value words left out)."""
    names = []
    for args in make_commands(text):
        for word in args.split():
            if not (word.startswith("-") or "=" in word or word == "..."):
                names.extend(expand(word))
    return names


def makefile_targets() -> tuple[set[str], list[re.Pattern]]:
    """The Makefile's explicit targets and its pattern rules (as regexes), the included files' too."""
    files, targets, patterns = [ROOT / "Makefile"], set(), []
    while files:
        text = files.pop().read_text()
        files += [ROOT / name for line in re.findall(r"^include[ \t]+(.+)$", text, re.M) for name in line.split()]
        for line in TARGET_LINE.findall(text):
            for target in line.split():
                if "%" in target:
                    patterns.append(re.compile(re.escape(target).replace("%", ".+") + "$"))
                elif not target.startswith("."):
                    targets.add(target)
    return targets, patterns


def make_knows(target: str) -> bool:
    """`make -n <target>` succeeds, as a user would type it (not as a sub-make of `make test`)."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    result = subprocess.run(["make", "--no-print-directory", "-n", target], cwd=ROOT, env=env, capture_output=True)
    return result.returncode == 0


def unknown_targets(names: list[str]) -> list[str]:
    targets, patterns = makefile_targets()
    unknown = []
    for name in sorted(set(names)):
        if name in targets or any(p.match(name) for p in patterns):
            continue
        if "PLACEHOLDER" in name or not make_knows(name):  # static pattern rules such as ablation-%
            unknown.append(name)
    return unknown


def test_the_readme_is_the_front_door_not_the_manual():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines: move a topic to docs/"


@pytest.mark.parametrize("path", PAGES[1:], ids=page_id)
def test_each_docs_page_opens_with_its_title_and_the_question_it_answers(path):
    lines = path.read_text().splitlines()
    title, blank, question, after = lines[:4]
    assert title.startswith("# ") and blank == after == "" and question and not question.startswith("#"), path.name


@pytest.mark.parametrize("path", PAGES, ids=page_id)
def test_every_relative_link_reaches_a_file_and_its_heading(path):
    assert broken_links(path.read_text(), path) == []


def test_the_link_checker_finds_broken_links_and_anchors():
    text = (
        "# Top\n\n## A heading: with `code`, punctuation and_underscores\n\n"
        "[ok](#a-heading-with-code-punctuation-and_underscores) [ok](README.md) [ok](docs/results.md#table-v) "
        "[web](https://example.org/missing) `[in code](missing.md)`\n"
        "[gone](no/such/file.md) [no anchor](#nowhere) [no heading](docs/results.md#no-such-heading)\n"
        "```\n[in a block](missing.md)\n```\n"
    )
    broken = broken_links(text, ROOT / "page.md")
    assert [entry.split(":")[0] for entry in broken] == [
        "no/such/file.md",
        "#nowhere",
        "docs/results.md#no-such-heading",
    ]


def test_every_make_target_named_in_the_readme_and_docs_exists():
    names = [name for path in PAGES for name in make_targets_named(path.read_text())]
    assert {"quickstart", "test", "clean-runs", "table5-runs/PLACEHOLDER/off", "ablation-arch"} <= set(names)
    assert unknown_targets(names) == []


def test_the_target_finder_reads_code_and_flags_unknown_targets():
    text = (
        "Run `make clean-runs NAME=my_run` or `make -j2 table5-runs/<set>/<off|on>\nsweep/<random|beta>/digits`.\n"
        "```bash\nmake cifar10-{sgd,adabound}[-gal] NPROC=4   # then `make table1`, or make it so\n"
        "make no-such-target\n```\n"
        "To make a table, make sure of it (prose, not code).\n"
    )
    names = make_targets_named(text)
    assert names == [
        "cifar10-sgd", "cifar10-sgd-gal", "cifar10-adabound", "cifar10-adabound-gal", "table1", "no-such-target",
        "clean-runs", "table5-runs/PLACEHOLDER/off", "table5-runs/PLACEHOLDER/on", "sweep/random/digits",
        "sweep/beta/digits",
    ]  # fmt: skip
    assert unknown_targets(names) == ["no-such-target"]
    # a pattern rule, a static pattern rule, an explicit target, one of results/paper/rows.mk's; no row of that name
    others = ["coco-detr-r50-eval", "ablation-policy", "paper-files", "cifar10-sgd-gal", *expand("<row>-gal")]
    assert unknown_targets(others) == ["PLACEHOLDER-gal"]
    assert "cifar10-sgd-gal" in makefile_targets()[0]  # read from the included file, not found by `make -n`

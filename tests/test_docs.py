"""The documentation stays true to the repository: the rule graph picture, the report's captions, the links, the
README's size."""

import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import ROOT

DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [ROOT / "README.md", ROOT / "config" / "README.md", *DOCS]
README_MAX_BYTES = 11_000
# The section numbers code comments cite as "docs/method.md §x.y".
METHOD_SECTIONS = (["0"] + [f"1.{i}" for i in range(1, 9)] + [f"2.{i}" for i in range(1, 6)]
                   + [f"3.{i}" for i in range(1, 8)] + ["4", "5", "6", "7", "8"])
REDRAW = "rerun tools/render-dag and commit docs/dag.dot and docs/dag.svg"
RECAPTION = "run tools/render-captions and commit workflow/report/*.rst"
REPORT = ROOT / "workflow" / "report"


def dot_graph(dot: str) -> tuple[set[str], set[tuple[str, str]]]:
    """Rules and (producer, consumer) edges of `snakemake --rulegraph` DOT, whose nodes are numbered."""
    label = dict(re.findall(r'^\s*(\d+)\[label = "([^"]+)"', dot, re.M))
    edges = {(label[a], label[b]) for a, b in re.findall(r"^\s*(\d+) -> (\d+)\s*$", dot, re.M)}
    return set(label.values()), edges


def svg_graph(svg: Path) -> tuple[set[str], set[tuple[str, str]]]:
    """Rules and edges from the <title> of each node and edge group graphviz wrote."""
    ns = {"svg": "http://www.w3.org/2000/svg"}
    groups = ET.parse(svg).getroot().iterfind(".//svg:g", ns)
    titles = [(g.get("class"), g.find("svg:title", ns).text) for g in groups if g.get("class") in ("node", "edge")]
    nodes = {t for kind, t in titles if kind == "node"}
    edges = {tuple(t.split("->")) for kind, t in titles if kind == "edge"}
    return nodes, edges


@pytest.mark.slow
def test_dag_picture_matches_the_workflow():
    r = subprocess.run([sys.executable, "-m", "snakemake", "--rulegraph"], cwd=ROOT, capture_output=True,
                       text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr[-2000:]
    rules, edges = dot_graph(r.stdout)
    assert {"prepare_dataset", "train", "sample", "evaluate", "tables", "all"} <= rules
    assert ("train", "sample") in edges and ("tables", "all") in edges
    committed = dot_graph((ROOT / "docs" / "dag.dot").read_text())
    assert committed == (rules, edges), f"docs/dag.dot differs from `snakemake --rulegraph`: {REDRAW}"
    assert svg_graph(ROOT / "docs" / "dag.svg") == (rules, edges), f"docs/dag.svg differs: {REDRAW}"


def test_graph_readers_see_a_change():
    # The comparison above can fail: a dropped edge or a renamed rule changes what the reader returns.
    dot = (ROOT / "docs" / "dag.dot").read_text()
    rules, edges = dot_graph(dot)
    line = re.search(r"^\s*\d+ -> \d+\s*$", dot, re.M)[0]
    assert len(edges - dot_graph(dot.replace(line + "\n", "", 1))[1]) == 1
    assert dot_graph(dot.replace('label = "train"', 'label = "fit"'))[0] == rules - {"train"} | {"fit"}


def test_report_captions_are_rendered_from_the_catalogue():
    from aot.report.captions import CAPTIONS, rst

    committed = sorted(p.stem for p in REPORT.glob("*.rst"))
    assert committed == sorted(CAPTIONS), (f"workflow/report/*.rst are {committed}, aot/report/captions.py has "
                                           f"{sorted(CAPTIONS)}: {RECAPTION}")
    stale = [f"workflow/report/{name}.rst" for name in CAPTIONS if (REPORT / f"{name}.rst").read_text() != rst(name)]
    assert not stale, f"{', '.join(stale)}: not what aot/report/captions.py renders; {RECAPTION}"


def test_every_caption_the_workflow_names_is_in_the_catalogue():
    from aot.report.captions import CAPTIONS

    rules = "".join(p.read_text() for p in [ROOT / "Snakefile", *(ROOT / "workflow" / "rules").glob("*.smk")])
    named = set(re.findall(r'report/(\w+)\.rst"', rules))  # caption="../report/x.rst", report: "workflow/report/..."
    tables = re.search(r"^TABLES = \[(.*?)\]", (ROOT / "workflow" / "rules" / "common.smk").read_text(), re.M | re.S)
    named |= set(re.findall(r'"(\w+)"', tables[1]))  # caption=f"../report/{name}.rst" for name in TABLES
    for names in re.findall(r"for name in \(([^)]*)\)", rules):  # caption=f"../report/{name}.rst": the figures
        named |= set(re.findall(r'"(\w+)"', names))
    assert {"workflow", "samples", "table1", "coupling_figures", "score_vs_nfe"} <= named
    missing = sorted(named - set(CAPTIONS))
    assert not missing, f"captions the workflow names but aot/report/captions.py lacks: {missing}"


def test_render_captions_writes_the_catalogue_and_drops_the_rest(tmp_path):
    from aot.report.captions import CAPTIONS, rst

    (tmp_path / "gone.rst").write_text("a caption no rule names any more\n")
    r = subprocess.run([ROOT / "tools" / "render-captions", tmp_path], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert sorted(p.stem for p in tmp_path.iterdir()) == sorted(CAPTIONS)
    assert all((tmp_path / f"{name}.rst").read_text() == rst(name) for name in CAPTIONS)


def test_report_captions_are_clean_restructuredtext():
    """Each caption as the report renders it (Jinja, then docutils): no warning, and ||, * and code spans shown as
    written."""
    from types import SimpleNamespace

    import jinja2
    from docutils.core import publish_parts

    from aot.report.captions import CAPTIONS, rst

    wc = SimpleNamespace(model="aot-uncond", setting="rho7-steps18", tsetting="rho7-steps18")
    snakemake = SimpleNamespace(wildcards=wc, config={"experiment": "demo"})
    html = {}
    for name in CAPTIONS:
        source = jinja2.Template(rst(name)).render(snakemake=snakemake)
        html[name] = publish_parts(source, writer="html", settings_overrides={
            "halt_level": 2, "report_level": 2, "warning_stream": False})["body"]
        assert "render-captions" not in re.sub(r"<!--.*?-->", "", html[name], flags=re.S)  # a comment: not shown
    assert "||y - n||" in html["pairing"] and "<strong>Image-noise pair distance" in html["pairing"]
    assert 'literal">demo</' in html["workflow"] and "aot-uncond at rho7-steps18" in html["samples"]
    assert 'literal">ours_std</' in html["table1"] and "`" not in html["table1"]


def test_the_catalogue_imports_without_torch_or_pandas():
    code = "import sys, aot.report.captions; print(sorted({'torch', 'pandas'} & set(sys.modules)))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr


def slug(heading: str) -> str:
    """GitHub's anchor of a markdown heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The anchors of a page's headings; a repeated heading gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    for heading in re.findall(r"^#{1,6} (.+)$", strip_code(page.read_text()), re.M):
        s = slug(heading)
        seen[s] = seen.get(s, -1) + 1
    return {s if i == 0 else f"{s}-{i}" for s, n in seen.items() for i in range(n + 1)}


def strip_code(text: str) -> str:
    """The text without fenced code blocks (a `#` line there is no heading, a `[x](y)` no link)."""
    return re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)


def links(page: Path) -> list[str]:
    """Relative link targets of a markdown page: [text](target) and ![alt](target), URLs and mail left out."""
    text = re.sub(r"`[^`\n]*`", "", strip_code(page.read_text()))
    return [t for t in re.findall(r"\]\(([^)\s]+)\)", text) if not re.match(r"[a-z]+:", t)]


def test_slug_and_link_readers():
    assert slug("2.3 Architectures (SongUNet, `--arch`)") == "23-architectures-songunet---arch"
    assert slug("Training throughput at paper size (GPU)") == "training-throughput-at-paper-size-gpu"
    assert links(ROOT / "README.md"), "the README links to nothing"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_at_files_and_headings(page):
    broken = []
    for target in links(page):
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target} (no file {dest.relative_to(ROOT) if ROOT in dest.parents else dest})")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target} (no heading #{anchor} in {dest.relative_to(ROOT)})")
    assert not broken, f"{page.relative_to(ROOT)}: broken links: {', '.join(broken)}"


def test_readme_is_a_short_manual_linking_every_docs_page():
    size = len((ROOT / "README.md").read_bytes())
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes; move detail to docs/ (limit {README_MAX_BYTES})"
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in links(ROOT / "README.md")}
    unlinked = [p.name for p in DOCS if p.resolve() not in linked]
    assert DOCS and not unlinked, f"docs pages not linked from README.md: {unlinked}"


def test_method_has_every_section_the_code_cites():
    headings = re.findall(r"^#{2,3} (\d+(?:\.\d+)?) ", (ROOT / "docs" / "method.md").read_text(), re.M)
    assert len(headings) == len(set(headings)), "a section number of docs/method.md is used twice"
    missing = [s for s in METHOD_SECTIONS if s not in headings]
    assert not missing, f"docs/method.md lacks the sections {missing}"
    sources = [ROOT / "README.md", ROOT / "Snakefile"] + [
        p for d in ("aot", "workflow", "config", "tests", "bench", "tools", "docs") for p in (ROOT / d).rglob("*")
        if p.is_file() and p.suffix in (".py", ".md", ".smk", ".yaml", ".rst", ".sh", "") and p != Path(__file__)]
    cited = {s for p in sources for s in re.findall(r"docs/method\.md §(\d+(?:\.\d+)?)", p.read_text(errors="ignore"))}
    assert cited, "nothing cites docs/method.md §x"
    assert not cited - set(headings), f"cited but not in docs/method.md: {sorted(cited - set(headings))}"

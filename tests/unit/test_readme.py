"""The README's commands are all accounted for: each one is run as written by a doc test (or by CI), or
covered by a named test for a stated reason; every `make` target it mentions exists; every local link
resolves; and `gemma-operator render` of the first GemmaServer runs here as written."""

from __future__ import annotations

import re

import yaml

from tests import readme
from tests.unit.packaging import fits

KNOWN = {**readme.RUN, **{prefix: where for prefix, (where, _) in readme.ELSEWHERE.items()}}


def test_every_command_is_run_or_covered_by_exactly_one_entry() -> None:
    found = readme.commands()
    assert len(found) > 20
    for command in found:
        owners = [prefix for prefix in KNOWN if command.text.startswith(prefix)]
        assert len(owners) == 1, (
            f"{command.section}: {command.text!r} matches {owners}; add it to tests/readme.py"
        )


def test_every_entry_names_a_real_command_and_a_real_test() -> None:
    texts = [c.text for c in readme.commands()]
    for prefix, where in KNOWN.items():
        assert any(text.startswith(prefix) for text in texts), f"no README command starts with {prefix!r}"
        assert (readme.REPO / where).is_file(), where
    for prefix, where in readme.RUN.items():
        source = (readme.REPO / where).read_text()
        if where == ".ci/run":
            assert re.search(rf"^{re.escape(prefix)}\b", source, re.MULTILINE), (
                f"{where} does not run {prefix}"
            )
        else:
            assert f'readme.find("{prefix}")' in source, f"{where} does not run {prefix!r}"


def test_the_parser_joins_continuations_and_drops_comments() -> None:
    text = '# Title\n\n```bash\nhelm install a \\\n  --set x=1   # note\ncurl -d \'{"a": "#1"}\'\n```\n'
    assert readme.commands(text) == [
        readme.Command("Title", "helm install a --set x=1"),
        readme.Command("Title", 'curl -d \'{"a": "#1"}\''),
    ]


def test_every_make_target_mentioned_exists() -> None:
    makefile = (readme.REPO / "Makefile").read_text()
    targets = set(re.findall(r"^([a-zA-Z0-9_-]+):", makefile, re.MULTILINE))
    mentioned = set(re.findall(r"`make ([a-z][a-z0-9-]*)", readme.README.read_text()))
    mentioned |= {m for c in readme.commands() for m in re.findall(r"\bmake ([a-z][a-z0-9-]*)", c.text)}
    assert mentioned, "the README names no make target"
    assert mentioned <= targets, f"not in the Makefile: {sorted(mentioned - targets)}"


def test_every_local_link_resolves() -> None:
    text = readme.README.read_text()
    anchors = {_anchor(line) for line in text.splitlines() if line.startswith("#")}
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if target.startswith(("http://", "https://")):
            continue
        path, _, anchor = target.partition("#")
        if path:
            assert (readme.REPO / path).exists(), target
        elif anchor:
            assert anchor in anchors, target


def _anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    title = heading.lstrip("#").strip().lower()
    return re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", title))


def test_render_of_the_first_server_runs_as_written() -> None:
    rendered = readme.run(readme.find("gemma-operator render -f manifests/gemma-server.yaml"), timeout=120)
    children = {doc["kind"]: doc for doc in yaml.safe_load_all(rendered) if doc}
    assert set(children) >= {"ConfigMap", "Deployment", "Service"}
    pod = children["Deployment"]["spec"]["template"]["spec"]
    assert pod["nodeSelector"]["cloud.google.com/gke-tpu-topology"] == "2x4"
    assert pod["containers"][0]["resources"]["limits"]["google.com/tpu"] == 8


def test_the_fits_table_is_the_memory_models() -> None:
    text = (readme.REPO / "README.md").read_text()
    assert fits.readme_with_table(text) == text, "README's what-fits-where table is stale: make manifests"

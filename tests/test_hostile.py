"""Hostile config values: none reaches a shell unquoted, none escapes results/.

Every string-typed key of the schema is found by walking the schema (enums are skipped: the schema already limits
them to a fixed list of plain words, checked below). Each gets each hostile value; then either the config is refused
with one line naming the key (by aot.config.checks.check_config and by the Snakemake dry run), or the dry run's printed
commands (-n -p) hold the value as one argument or one part of an argument, quoted: the same words as with a plain
placeholder in its place, and no shell character outside quotes. Last, a real run of the dataset preparation and the
Inception reference statistics reads a CIFAR-10 archive and Inception weights from a directory named like an attack:
no command runs, nothing is written outside results/.
"""

import functools
import json
import re
import shlex
import subprocess
from collections import Counter
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import yaml
from conftest import ENV, ROOT, SMK, copy_workflow

import aot.config.checks
import aot.data.cifar10_layout
from aot.config.checks import check_config
from aot.config.yamlio import DEFAULT_SCHEMA, ConfigError, load_yaml

pytestmark = pytest.mark.slow  # starts Snakemake, torchrun or a cluster: not in the quick run (-m "not slow")

# The list: word splitting, command separators, command substitution, quotes, and paths out of results/.
HOSTILE = ["a b", "x;touch HACK", "$(touch HACK)", "`touch HACK`", "'q'", '"dq"', "..", "../escape"]
# Refused for every string key: control characters (a newline would split a printed command, a log line).
ALWAYS_REFUSED = ["x\ny", "nul\x00byte", "tab\tx"]
# Refused for path keys too: an option-like leading '-', braces (Snakemake wildcards in input/output paths).
PATH_REFUSED = ["-rf", "a{b}"]
# Path-like keys: any of HOSTILE is a legal path (quoted in every command), so each must be accepted and quoted.
PATH_KEYS = {"dataset.archive", "arms.*.checkpoints.uncond", "arms.*.checkpoints.cond", "evaluate.fid_ref",
             "evaluate.inception_weights", "guidance.extractor_weights"}
# What '*' (any name of a mapping) stands for: names in the base config below.
NAMES = {"arms": "edm", "runs": "edm_dg"}


def string_keys(schema: dict, path: tuple = ()):
    """(key path, subschema) of every string-typed value of the schema; '*' is any name of a mapping."""
    types = schema.get("type")
    if "string" in (types if isinstance(types, list) else [types]):
        yield path, schema
    for key, sub in schema.get("properties", {}).items():
        yield from string_keys(sub, (*path, key))
    if isinstance(schema.get("additionalProperties"), dict):
        yield from string_keys(schema["additionalProperties"], (*path, "*"))
    if isinstance(schema.get("items"), dict):
        yield from string_keys(schema["items"], (*path, "[]"))
    for sub in schema.get("anyOf", []) + schema.get("oneOf", []):
        yield from string_keys(sub, path)


SCHEMA = load_yaml(DEFAULT_SCHEMA)
SCHEMA_STRINGS = list(string_keys(SCHEMA))
KEYS = [".".join(p) for p, sub in SCHEMA_STRINGS if "enum" not in sub]


def concrete(key: str) -> list[str]:
    parts = key.split(".")
    return [NAMES[parts[i - 1]] if p == "*" else p for i, p in enumerate(parts)]


def base_config() -> dict:
    """config/smoke.yaml with every string key read: CIFAR-10 (its archive key), Inception FID (fid_ref,
    inception_weights) and DG's ADM classifier as the extractor (extractor_weights)."""
    cfg = load_yaml(ROOT / "config" / "smoke.yaml")
    cfg["dataset"] = {"source": "cifar10"}
    cfg["evaluate"].update(metrics=["featnet", "inception"], fid_block=32)
    cfg["guidance"].update(extractor="adm32", extractor_weights="resources/dg/32x32_classifier.pt")
    return cfg


def with_values(values: dict[str, object]) -> dict:
    """The base config with each key (dotted, '*' allowed) set to its value."""
    cfg = base_config()
    for key, value in values.items():
        *parents, last = concrete(key)
        node = cfg
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
        if parents[-1:] == ["checkpoints"]:  # one network per conditioning, or the config is refused for the other
            for cond in cfg["conditioning"]:
                node.setdefault(cond, "released/network.pkl")
    return cfg


def _load_yaml_schema_once(path):
    return SCHEMA if Path(path) == DEFAULT_SCHEMA else load_yaml(path)


@functools.cache
def refusal(key: str, value: str) -> str | None:
    """check_config's one-line error for the base config with ``key`` set to ``value``; None if accepted."""
    # check_config re-reads the schema each call (60 ms of YAML); read it once for the few hundred calls here
    with mock.patch.object(aot.config.checks, "load_yaml", _load_yaml_schema_once):
        try:
            check_config(with_values({key: value}))
        except ConfigError as e:
            return str(e)
    return None


def accepted_keys(value: str) -> list[str]:
    return [k for k in KEYS if refusal(k, value) is None]


def test_schema_walk_finds_every_string_key():
    assert PATH_KEYS | {"experiment", "arms.*.label", "guidance.runs.*.arm", "train.device"} <= set(KEYS)
    assert not [k for k in KEYS if "[]" in k], "a free-text list item: extend with_values() to set it"
    # Skipped: enums, whose values are a fixed list of plain words that the schema enforces.
    enums = [(p, sub["enum"]) for p, sub in SCHEMA_STRINGS if "enum" in sub]
    assert len(enums) >= 8 and all(re.fullmatch(r"[a-z0-9][a-z0-9-]*", v) for _, e in enums for v in e)


@pytest.mark.parametrize("key", KEYS)
def test_check_config_refuses_or_accepts_each_hostile_value(key):
    for value in HOSTILE + ALWAYS_REFUSED + PATH_REFUSED:
        err = refusal(key, value)
        if err is not None:  # one line that names the key
            assert "\n" not in err and err.startswith(f"config error: {'.'.join(concrete(key))}: "), (value, err)
    assert all(refusal(key, v) is not None for v in ALWAYS_REFUSED), key
    if key in PATH_KEYS:  # legal paths: accepted, so the dry runs below check that they are quoted
        assert all(refusal(key, v) is None for v in HOSTILE), key
        assert all(refusal(key, v) is not None for v in PATH_REFUSED), key
    if key == "experiment":  # a directory name under results/: nothing but a plain name
        assert all(refusal(key, v) is not None for v in HOSTILE)


def test_experiment_is_a_plain_name():
    for good in ["digits", "cifar10-uncond", "v1.2_b", "_x"]:
        assert refusal("experiment", good) is None, good
    for bad in [".", "..", ".hidden", "a..b", "a.", "a/b", "-x", "", "x y"]:
        assert refusal("experiment", bad) is not None, bad


# ----------------------------------------------------------------------------
# The Snakemake dry run.


@pytest.fixture(scope="module")
def wf(tmp_path_factory):
    """A copy of the workflow (Snakefile, workflow/, config/) in wf/ of a temporary directory."""
    top = tmp_path_factory.mktemp("hostile")
    wf = top / "wf"
    copy_workflow(wf)
    yield wf
    assert not hacked(top), "a command ran"


def hacked(*dirs: Path) -> list[Path]:
    """Files named HACK (what `touch HACK` would make) under the given directories and in the checkout."""
    return [p for d in (*dirs, ROOT) for p in d.rglob("HACK")]


def smk(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(SMK + args, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=300)


def write_config(wf: Path, name: str, cfg: dict) -> str:
    (wf / name).write_text(yaml.safe_dump(cfg, sort_keys=False))
    return name


def refused_cases():
    """One Snakemake refusal per key that refuses values (the commonest attack), the issue's escapes of experiment,
    and a newline in a path key; the rest are covered by check_config above (Snakemake runs it as well)."""
    keys = [k for k in KEYS if refusal(k, "$(touch HACK)") is not None]
    return ([(k, "$(touch HACK)") for k in keys] + [("experiment", ".."), ("experiment", "../escape"),
                                                   ("dataset.archive", "x\ny")])


@pytest.mark.parametrize("key,value", refused_cases(), ids=repr)
def test_snakemake_refuses_with_one_line_naming_the_key(wf, key, value):
    if key == "experiment":  # on the command line, as the example
        r = smk(["-n", "--configfile", write_config(wf, "base.yaml", base_config()), "--config", f"experiment={value}"],
                cwd=wf)
    else:
        r = smk(["-n", "--configfile", write_config(wf, "refused.yaml", with_values({key: value}))], cwd=wf)
    assert r.returncode != 0
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.startswith("config error:")]
    assert len(lines) == 1 and lines[0].startswith(f"config error: {'.'.join(concrete(key))}: "), r.stderr[-2000:]
    assert lines[0] == refusal(key, value)


SAFE_BARE = re.compile(r"[\w@%+=:,./-]")  # the characters shlex.quote leaves unquoted
REDIRECTS = {">", "2>&1"}  # the log redirection of every rule, the only shell syntax of the commands


def shell_words(cmd: str) -> list[tuple[str, list[str]]]:
    """Split ``cmd`` as a POSIX shell does (blanks, '...', "...", backslashes), keeping for each character of each
    word how it was written: 'bare', 'single' (in '...'), 'double' (in "...") or 'escaped' (after a backslash)."""
    words, text, how, i, in_word = [], [], [], 0, False
    while i < len(cmd):
        c = cmd[i]
        if c in " \t":
            if in_word:
                words.append(("".join(text), how))
                text, how, in_word = [], [], False
            i += 1
            continue
        in_word = True
        if c == "'":
            end = cmd.index("'", i + 1)
            text += cmd[i + 1 : end]
            how += ["single"] * (end - i - 1)
            i = end + 1
        elif c == '"':
            i += 1
            while cmd[i] != '"':
                if cmd[i] == "\\" and cmd[i + 1] in '$`"\\':
                    i += 1
                    text.append(cmd[i])
                    how.append("escaped")
                else:
                    text.append(cmd[i])
                    how.append("double")
                i += 1
            i += 1
        elif c == "\\":
            text.append(cmd[i + 1])
            how.append("escaped")
            i += 2
        else:
            text.append(c)
            how.append("bare")
            i += 1
    if in_word:
        words.append(("".join(text), how))
    assert [w for w, _ in words] == shlex.split(cmd), cmd
    return words


def unquoted(cmd: str) -> list[str]:
    """Characters the shell would interpret: outside quotes and not plain, or $ ` \\ ! inside double quotes."""
    return [ch for word, how in shell_words(cmd) if word not in REDIRECTS for ch, h in zip(word, how, strict=True)
            if (h == "bare" and not SAFE_BARE.fullmatch(ch)) or (h == "double" and ch in "$`\\!")]


def dry_run_commands(wf: Path, cfg: dict, name: str) -> list[str]:
    r = smk(["-n", "-p", "--forceall", "--configfile", write_config(wf, name, cfg)], cwd=wf)
    assert r.returncode == 0, r.stderr[-3000:]
    cmds = [ln[len("Shell command: "):] for ln in r.stdout.splitlines()
            if ln.startswith("Shell command: ") and ln != "Shell command: None"]  # None: a run: block, rule all
    assert len(cmds) > 50, r.stdout[-2000:]
    return cmds


def placeholder(i: int) -> str:
    return f"ph{i}ph"


@pytest.fixture(scope="module")
def placeholder_run(wf):
    """The dry run's commands with a plain placeholder in each key that accepts the hostile values, and which keys
    reach a command."""
    keys = accepted_keys(HOSTILE[0])
    assert all(accepted_keys(v) == keys for v in HOSTILE) and PATH_KEYS <= set(keys), keys
    for i in range(len(keys)):
        (wf / placeholder(i)).write_text("")  # dataset.archive is a declared input: it must exist
    cmds = dry_run_commands(wf, with_values({k: placeholder(i) for i, k in enumerate(keys)}), "placeholder.yaml")
    assert not [c for c in cmds if unquoted(c)]
    reached = {k for i, k in enumerate(keys) if any(placeholder(i) in c for c in cmds)}
    # Every path key reaches a command; arms.*.label only the resolved config (a YAML file the tables read).
    assert reached == PATH_KEYS, reached
    return keys, cmds


def substitute(word: str, n: int, value: str) -> str:
    """``word`` with placeholders 0..n-1 replaced by ``value`` (JSON-escaped inside a JSON spec)."""
    as_json = word.startswith("{")
    for i in range(n):
        word = word.replace(placeholder(i), json.dumps(value)[1:-1] if as_json else value)
    return word


@pytest.mark.parametrize("value", HOSTILE, ids=repr)
def test_dry_run_quotes_each_hostile_value(wf, placeholder_run, value):
    keys, plain = placeholder_run
    target = (wf / value).resolve()
    if not target.exists():
        target.write_text("")  # dataset.archive must exist
    if target.is_dir():  # '..': a dataset.archive folder must hold CIFAR-10's batches
        for name in aot.data.cifar10_layout.CIFAR10_BATCHES:
            (target / name).touch()
    cmds = dry_run_commands(wf, with_values({k: value for k in keys}), "hostile.yaml")
    # No character of the value (or of anything else) is left to the shell: quoted, or plain.
    assert not [(c, unquoted(c)) for c in cmds if unquoted(c)]
    # The same words as with the placeholders, the value inside the very words the placeholders were in.
    expected = Counter(tuple(substitute(w, len(keys), value) for w, _ in shell_words(c)) for c in plain)
    got = Counter(tuple(w for w, _ in shell_words(c)) for c in cmds)
    assert got == expected, ([shlex.join(c) for c in got - expected][:2], [shlex.join(c) for c in expected - got][:2])
    assert any(value in w for c in cmds for w, _ in shell_words(c))
    assert not hacked(wf.parent)


# ----------------------------------------------------------------------------
# A real run: a hostile archive path and a hostile weights path, read by real jobs.

ATTACK_DIR = "in $(touch HACK) `touch HACK`;touch HACK 'q' \"dq\""


def tree(top: Path) -> dict[str, tuple[int, int]]:
    """path -> (size, mtime) of every file under ``top`` except Snakemake's own .snakemake/."""
    return {str(p.relative_to(top)): (p.stat().st_size, p.stat().st_mtime_ns) for p in top.rglob("*")
            if p.is_file() and ".snakemake" not in p.relative_to(top).parts}


def test_real_run_with_hostile_paths(tmp_path):
    from cifar_archive import write_cifar10_archive
    from fakes import write_fake_inception

    from aot.core.download import sha256_file

    wf = tmp_path / "wf"
    copy_workflow(wf)
    attack = tmp_path / ATTACK_DIR  # beside the workflow: the config reaches it through '..'
    write_cifar10_archive(attack / "cifar 10 $(touch HACK).tar.gz", per_batch=20)
    write_fake_inception(attack / "inception `touch HACK`.pt")
    cfg = load_yaml(ROOT / "config" / "smoke.yaml")
    cfg["experiment"] = "hostile"
    cfg["dataset"] = {"source": "cifar10", "archive": f"../{ATTACK_DIR}/cifar 10 $(touch HACK).tar.gz"}
    cfg["evaluate"] = {"metrics": ["inception"], "fid_ref": "dataset", "fid_block": 32, "device": "cpu",
                       "inception_weights": f"../{ATTACK_DIR}/inception `touch HACK`.pt",
                       "inception_sha256": sha256_file(attack / "inception `touch HACK`.pt")}
    write_config(wf, "hostile.yaml", cfg)
    before = tree(tmp_path)

    r = smk(["--cores", "1", "results/hostile/fid/ref_stats.npz", "--configfile", "hostile.yaml"], cwd=wf)
    assert r.returncode == 0, r.stderr[-3000:]
    assert not hacked(tmp_path, Path.cwd())
    after = tree(tmp_path)
    assert {p: s for p, s in after.items() if not p.startswith("wf/results/")} == before  # nothing else touched
    assert {p for p in after if p not in before} >= {"wf/results/hostile/data/dataset.npz",
                                                     "wf/results/hostile/fid/ref_stats.npz"}
    info = json.loads((wf / "results/hostile/data/dataset.json").read_text())
    assert info["train"][0] == 5 * 20  # the 5 training batches of the archive at the hostile path
    with np.load(wf / "results/hostile/fid/ref_stats.npz") as stats:
        assert stats["mu"].shape == (2048,)  # the fake Inception's features, read from the hostile weights path

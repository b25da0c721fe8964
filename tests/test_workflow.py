"""The real Snakefile: dry runs of every shipped config, lint, fast config errors, and a full smoke run."""

import json
import re
import shutil
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch
from conftest import ENV, ROOT, SMK, copy_workflow, job_settings

pytestmark = pytest.mark.slow  # starts Snakemake, torchrun or a cluster: not in the quick run (-m "not slow")

CONFIGS = sorted((ROOT / "config").glob("*.yaml"))


def run(args, cwd=ROOT, **kw):
    return subprocess.run(SMK + args, cwd=cwd, env=ENV, capture_output=True, text=True, **kw)


def job_counts(stdout: str) -> dict[str, int]:
    """Parse Snakemake's 'Job stats' table of a dry run."""
    table = stdout.split("Job stats:")[1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)
            if m.group(1) != "total"}


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_dry_run_every_config(config):
    r = run(["-n", "--forceall", "--configfile", str(config.relative_to(ROOT))])
    assert r.returncode == 0, r.stderr[-2000:]
    jobs = job_counts(r.stdout)
    assert {"sample", "evaluate", "trajectory", "tables", "figures", "all"} <= set(jobs)
    made = "import_checkpoint" if "released" in config.name else "train"
    assert jobs[made] == 4 if "released" in config.name else jobs[made] >= 2


def test_default_dry_run_has_every_model_and_setting():
    r = run(["-n", "--forceall"])
    assert r.returncode == 0, r.stderr[-2000:]
    jobs = job_counts(r.stdout)
    assert jobs["train"] == 4 and jobs["trajectory"] == 4
    # 4 models x 4 settings, plus Discriminator Guidance: generated images of 4 (model, setting) pairs for
    # 6 discriminators (3 runs x 2 conditionings), 6 guided sample sets, each scored.
    assert jobs["sample"] == 16 + 4 and jobs["train_discriminator"] == 6 and jobs["sample_guided"] == 6
    assert jobs["evaluate"] == 16 + 6


def test_nested_config_override_on_the_command_line():
    # Snakemake leaves nested --config scalars as text ('false', '1'); the workflow reads them as YAML.
    r = run(["-n", "--forceall", "--config", "guidance={enabled: false}", "sample={num_images: 100}"])
    assert r.returncode == 0, r.stderr[-2000:]
    jobs = job_counts(r.stdout)
    assert "train_discriminator" not in jobs and "sample_guided" not in jobs
    assert jobs["sample"] == 16 and jobs["evaluate"] == 16
    assert "--seeds 000000-000099 " in run(["-n", "-p", "--forceall", "--config", "sample={num_images: 100}"]).stdout


def train_specs(stdout: str) -> dict[str, dict]:
    """model -> the --spec JSON of each `aot train` command a dry run prints (-p)."""
    out = {}
    for m in re.finditer(r"-m aot train --data \S+ --spec '(\{.*?\})' .*?--model (\S+)", stdout):
        out[m.group(2)] = json.loads(m.group(1))
    return out


@pytest.mark.parametrize("cond", ["uncond", "cond"])
def test_paper_dry_run_trains_ncsnpp_without_dg_classifier(cond):
    """A fresh clone: no DG classifier, no --config. The printed train commands carry EDM-AOT's recipe, and the
    classifier is a job of the DAG (fetched on the login node), not a missing input."""
    r = run(["-n", "-p", "--forceall", "--configfile", f"config/cifar10-{cond}.yaml"])
    assert r.returncode == 0, r.stderr[-2000:]
    specs = train_specs(r.stdout)
    assert set(specs) == {f"edm-{cond}", f"aot-{cond}"}
    for s in specs.values():
        net = s["network"]
        assert s["arch"] == "ncsnpp" and net["dropout"] == 0.13 and net["model_channels"] == 128
        assert net["channel_mult"] == [2, 2, 2] and net["num_blocks"] == 4 and net["attn_resolutions"] == [16]
        assert net["embedding_type"] == "fourier" and net["encoder_type"] == "residual"
        assert s["augment_p"] == 0.12 and s["batch"] == 256 and s["pool"] == (512 if cond == "uncond" else 2048)
        assert s["lr"] == 0.001 and s["lr_rampup_kimg"] == 10000 and s["ema_halflife_kimg"] == 500
        assert s["kimg"] == 200000 and s["cond"] == (cond == "cond")
    assert r.stdout.count("torchrun --standalone --nnodes=1 --nproc_per_node=4 -m aot train") == 2  # 64 per GPU
    assert job_counts(r.stdout)["fetch_dg_classifier"] == 1
    assert "python -m aot fetch-dg-classifier --extractor adm32 --out resources/dg/32x32_classifier.pt" in r.stdout
    epochs = {json.loads(m)["epochs"] for m in re.findall(r"-m aot train-disc .*?--spec '(\{.*?\})'", r.stdout)}
    assert epochs == {60 if cond == "uncond" else 250}


def test_64x64_dry_run_with_guidance_fetches_the_adm64_classifier():
    """The FFHQ 64x64 config with guidance switched on: one fetch of guided-diffusion's 64x64 classifier on the login
    node, three discriminators reading it (extractor adm64), and their guided samples."""
    r = run(["-n", "-p", "--forceall", "--configfile", "config/ffhq64-uncond.yaml", "--config",
             "guidance={enabled: true}"])
    assert r.returncode == 0, r.stderr[-2000:]
    counts = job_counts(r.stdout)
    assert counts["fetch_dg_classifier"] == 1 and counts["train_discriminator"] == 3
    assert "python -m aot fetch-dg-classifier --extractor adm64 --out resources/dg/64x64_classifier.pt" in r.stdout
    specs = [json.loads(m) for m in re.findall(r"-m aot train-disc .*?--spec '(\{.*?\})'", r.stdout)]
    assert len(specs) == 3 and all(s["extractor"] == "adm64" for s in specs)
    assert {s["pairing"] for s in specs} == {"none", "aot"}


def test_no_embedded_default_key_reaches_a_config_file(tmp_path):
    """The workflow's resolved config (rule resolved_config, run for real) of each shipped config file equals that
    file validated alone, and equals what `python -m aot check-config`/`show-config` resolve (aot.config.resolve), with and
    without --config overrides."""
    from aot.config.checks import check_config
    from aot.config.resolve import resolve_config
    from aot.config.yamlio import load_yaml, parse_cli_config

    copy_workflow(tmp_path)
    cases = [(None, []), (None, ["experiment=other", "guidance={enabled: false}"])]
    cases += [(p.name, []) for p in CONFIGS if p.name != "config.yaml"]
    cases += [("cifar10-cond.yaml", ["train={kimg: 8, batch: 64}", "dataset={subset: 100}"])]
    for name, extra in cases:
        expected = resolve_config([ROOT / "config" / name] if name else None, parse_cli_config(extra))
        if name and not extra:
            assert expected == check_config(load_yaml(ROOT / "config" / name))
        target = f"results/{expected['experiment']}/config.yaml"  # before the flags: they take several values
        args = ["--cores", "1", target] + (["--configfile", f"config/{name}"] if name else [])
        r = run(args + ([] if not extra else ["--config", *extra]), cwd=tmp_path)
        assert r.returncode == 0, (name, r.stderr[-2000:])
        written = load_yaml(tmp_path / target)
        assert written == expected, (name, extra)
        assert resolve_config([tmp_path / target]) == expected  # the written file is itself the experiment


def paper_cells(cond: str) -> set[tuple[str, str]]:
    """(arm, setting) of every cell of the paper's Tables 1/2, 4 (uncond) and 5, from aot/report/paper.py."""
    from aot.config.experiment import setting_name
    from aot.report.paper import TABLE1_ROWS, TABLE2_ROWS, TABLE4, TABLE4_RHOS, TABLE5, TABLE5_NFES, TABLE5_RHOS

    cells = {(arm, setting_name(rho, steps)) for _, arm, rho, steps, _, _ in
             (TABLE1_ROWS if cond == "uncond" else TABLE2_ROWS) if arm}
    if cond == "uncond":
        cells |= {(arm, setting_name(rho, steps)) for arm, steps in TABLE4 for rho in TABLE4_RHOS}
    cells |= {(arm, setting_name(rho, (n + 1) // 2)) for arm, c in TABLE5 if c == cond for n in TABLE5_NFES
              for rho in TABLE5_RHOS}
    return cells


@pytest.mark.parametrize("cond", ["uncond", "cond"])
def test_paper_configs_list_fid50k_jobs_for_every_cell(cond):
    r = run(["-n", "-p", "--forceall", "--configfile", f"config/cifar10-{cond}.yaml"])
    assert r.returncode == 0, r.stderr[-2000:]
    # The scoring commands as Snakemake would run them (-p), one per (model, setting).
    evaluated = {(m.group(1), m.group(2)) for m in
                 re.finditer(r"python -m aot evaluate .*--out results/[\w.-]+/metrics/(\w+)-\w+/(\S+)\.json", r.stdout)}
    missing = paper_cells(cond) - evaluated
    assert not missing, sorted(missing)
    jobs = job_counts(r.stdout)
    # Each (model, setting) is scored on 3 disjoint blocks of 50k seeds, sampled in one job per block; the 3 DG
    # runs add 50k generated images (1 job) per (base model, setting) and 3 guided models of 3 jobs each.
    guided = jobs["train_discriminator"]
    assert guided == 3 and jobs["sample_guided"] == 3 * guided
    assert jobs["sample"] == 3 * (jobs["evaluate"] - guided) + 1 * 2 and jobs["fid_ref"] == 1
    assert jobs["fetch_inception"] == 1  # the weights come to resources/ on the submitting machine
    scoring = [job_settings(ln) for ln in r.stdout.splitlines() if "python -m aot evaluate " in ln]
    assert scoring and all(s["fid_block"] == 50000 and s["metrics"] == ["inception"] for s in scoring)


@pytest.mark.parametrize("cfg", [None, "config/cifar10-uncond.yaml"])
def test_sampling_job_count_is_snakemakes(cfg):
    """aot.config.checks.sampling_jobs (what the bound on sampling jobs counts) is the dry run's sample + sample_guided."""
    from aot.config.checks import sampling_jobs
    from aot.config.resolve import resolve_config
    from aot.config.yamlio import parse_cli_config

    extra = ["sample={shard_size: 250}"] if cfg is None else []  # 4 shards per setting, 6 per set of fakes
    r = run(["-n", "--forceall"] + (["--configfile", cfg] if cfg else []) + (["--config", *extra] if extra else []))
    assert r.returncode == 0, r.stderr[-2000:]
    jobs = job_counts(r.stdout)
    assert sampling_jobs(resolve_config([cfg] if cfg else None, parse_cli_config(extra)))[0] == (
        jobs["sample"] + jobs["sample_guided"])


@pytest.mark.parametrize("sample, line", [
    ("{num_images: 100000000, shard_size: 500}", "config error: sample.num_images: 100000000 is more than 1,000,000 "),
    ("{num_images: 1000000, shard_size: 50}", "config error: sample.shard_size: the config makes 440,120 sampling "),
])
def test_a_huge_sample_count_stops_the_dry_run_at_once(sample, line):
    """The issue's case kept `snakemake -n` silent past 150 s (a DAG of millions of jobs): now one line in seconds."""
    r = run(["-n", "--config", f"sample={sample}", "guidance={fakes: {seed_start: 900000000}}",
             "trajectory={seed_start: 800000000}"], timeout=120)
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.startswith("config error")]
    assert r.returncode != 0 and len(lines) == 1 and lines[0].startswith(line), r.stderr[-2000:]


def test_slurm_profile_dry_run(tmp_path):
    """The README's way: the profile copied to ~/.config/snakemake/slurm, then `--profile slurm` from the checkout."""
    pytest.importorskip("snakemake_executor_plugin_slurm")
    shutil.copytree(ROOT / "profiles/slurm", tmp_path / "snakemake/slurm")
    r = subprocess.run([sys.executable, "-m", "snakemake", "--profile", "slurm", "-n", "--forceall", "--configfile",
                        "config/cifar10-uncond.yaml"], cwd=ROOT, env={**ENV, "XDG_CONFIG_HOME": str(tmp_path)},
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Using profile slurm" in r.stdout + r.stderr
    # Unset partition/account never reach sbatch as literal text; a 4-GPU training asks for one node, 24 h, and
    # SLURM's signal 10 min before the limit (it saves and resumes); every cluster job's log keeps its attempts.
    assert "slurm_partition" not in r.stdout and "slurm_account" not in r.stdout and "$SLURM" not in r.stdout
    blocks = r.stdout.split("\n\n")
    train = [b for b in blocks if re.search(r"^rule train:", b, re.M)]
    want = r"resources: .*gpu=4, nodes=1, slurm_extra=--signal=TERM@600, runtime=1440, cpus_per_gpu=4, mem_mb=128000"
    assert len(train) == 2 and all(re.search(want, b) for b in train), train[0]
    sample = [b for b in blocks if re.search(r"^rule sample:", b, re.M)]
    assert sample and all(re.search(r"resources: .*gpu=1, runtime=240, cpus_per_gpu=4, mem_mb=32000", b)
                          for b in sample), sample[0]
    cmds = [ln for ln in r.stdout.splitlines() if ln.startswith("Shell command: ") and "aot train " in ln]
    assert len(cmds) == 2 and all(re.match(r"Shell command: \S+/workflow/scripts/with-attempt-log "
                                           r"results/cifar10-uncond/logs/train/\S+\.log torchrun ", c) for c in cmds)


def test_lint_is_clean():
    r = run(["--lint"])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]


def test_bad_config_fails_fast_with_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"  # a config file is the whole experiment: the embedded default with one bad value
    bad.write_text((ROOT / "config/config.yaml").read_text().replace("kimg: 40 ", "kimg: -3 "))
    t0 = time.perf_counter()
    r = run(["-n", "--configfile", str(bad)])
    assert time.perf_counter() - t0 < 10
    assert r.returncode != 0
    lines = [line for line in (r.stdout + r.stderr).splitlines() if "config error" in line]
    assert lines == ["config error: train.kimg: -3 is less than or equal to the minimum of 0 (see config/README.md)"]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """Copy the workflow into a temp dir and run the whole DAG on config/smoke.yaml."""
    d = tmp_path_factory.mktemp("wf")
    copy_workflow(d)
    r = run(["--cores", "2", "--configfile", "config/smoke.yaml"], cwd=d)
    assert r.returncode == 0, r.stderr[-4000:]
    return d


@pytest.mark.slow
def test_smoke_run_produces_tables(smoke):
    tables = smoke / "results/tables/smoke"
    all_scores = pd.read_csv(tables / "scores.csv")
    scores = all_scores[all_scores["guidance"] == "none"]
    assert len(scores) == 8  # 2 arms x 2 conditionings x 2 settings
    assert set(scores["arm"]) == {"edm", "aot"} and set(scores["conditioning"]) == {"uncond", "cond"}
    assert scores["ours"].notna().all() and (scores["ours"] > 0).all()
    assert (scores["ours_std"] > 0).all()  # jackknife std of each FD (evaluate.fd_jackknife: 8)
    assert set(scores["NFE"]) == {7, 5} and (scores["samples"] == 64).all()
    assert scores["metric"].str.startswith("FD (featnet").all()
    pairs = pd.read_csv(tables / "pairing.csv").set_index(["arm", "conditioning"])
    for cond in ("uncond", "cond"):
        assert pairs.loc[("aot", cond), "mean_dist_paired"] < pairs.loc[("edm", cond), "mean_dist_paired"]
    md = (tables / "scores.md").read_text()
    assert "paper" in md and "comparable" in md
    # The paper's tables keep every row; ours are missing where the smoke grid has no such setting.
    t1 = pd.read_csv(tables / "table1.csv")
    assert list(t1["paper_fid"]) == [1.97, 1.91, 1.90, 1.95, 1.88] and t1["ours"].isna().all()
    assert len(pd.read_csv(tables / "table4.csv")) == 50 and len(pd.read_csv(tables / "table5.csv")) == 32
    assert (tables / "table2.tex").read_text().startswith("\\begin{table}")
    traj = pd.read_csv(tables / "trajectory.csv")
    assert len(traj) == 4 and (traj["straightness"] >= 0).all() and traj["global_error"].notna().all()
    for png in ("score_vs_nfe", "score_vs_rho", "loss", "trajectory-rho7-steps4"):
        assert (smoke / f"results/smoke/figures/{png}.png").read_bytes()[:4] == b"\x89PNG"
    assert (smoke / "results/smoke/samples/aot-cond/rho7-steps4.png").exists()


@pytest.mark.slow
def test_smoke_run_discriminator_guidance(smoke):
    """Table 3 filled: 3 guidance runs x 2 conditionings, each beside its unguided model at the same seeds."""
    tables = smoke / "results/tables/smoke"
    scores = pd.read_csv(tables / "scores.csv")
    g = scores[scores["guidance"] != "none"]
    assert len(g) == 6 and set(g["arm"]) == {"edm_dg", "aot_dg", "aot_dgaot"} and (g["ours"] > 0).all()
    assert set(g["disc_pairing"]) == {"none", "aot"} and set(g["dg_weight"]) == {2.0, 1.0}
    comp = pd.read_csv(tables / "comparisons.csv")  # paired differences at the same seeds
    for cond in ("uncond", "cond"):
        pairs = set(zip(*comp[comp.conditioning == cond][["model", "baseline"]].values.T, strict=True))
        assert {("aot", "edm"), ("edm_dg", "edm"), ("aot_dg", "aot"), ("aot_dgaot", "aot"),
                ("aot_dgaot", "aot_dg")} <= pairs, pairs
    assert (comp.difference_std > 0).all()
    assert ((comp.model_score - comp.baseline_score - comp.difference).abs() < 1e-6).all()
    t3 = pd.read_csv(tables / "table3.csv")
    for col in ("ours_uncond", "ours_cond", "ours_unguided_uncond", "ours_unguided_cond"):
        assert t3[col].notna().all(), col
    assert list(t3["paper_fid_uncond"]) == [1.77, 1.70, 1.68]
    # Guidance changed the samples (same seeds, same score model): the scores differ from the unguided ones.
    assert (t3["ours_uncond"] != t3["ours_unguided_uncond"]).all()
    discs = pd.read_csv(tables / "discriminators.csv")
    assert len(discs) == 6 and discs["final_accuracy"].between(0, 1).all() and (discs["epochs"] == 2).all()
    aot = discs[discs["disc_pairing"] == "aot"]
    assert len(aot) == 2 and (aot["pair_dist_reduction_pct"] > 0).all()
    assert discs[discs["disc_pairing"] == "none"]["pair_dist_reduction_pct"].isna().all()
    # Two discriminators with the same spec but different fakes are different networks.
    a, b = (torch.load(smoke / f"results/smoke/discriminators/{m}-uncond/discriminator.pt", weights_only=True)
            for m in ("edm_dg", "aot_dg"))
    assert any(not torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    meta = json.loads((smoke / "results/smoke/metrics/aot_dgaot-cond/rho90-steps3.json").read_text())
    assert meta["guidance"]["weight"] == 1.0 and meta["guidance"]["discriminator_config"]["pairing"] == "aot"
    assert meta["guidance"]["boosting"] is True  # smoke.yaml: boosting for cond only, as DG
    assert "boosting" in t3["setting"].iloc[2] and "boosting" not in t3["setting"].iloc[2].split(";")[0]
    assert (smoke / "results/smoke/samples/aot_dgaot-cond/rho90-steps3.png").exists()


@pytest.mark.slow
def test_report_builds_with_tables_and_figures(smoke):
    r = run(["--configfile", "config/smoke.yaml", "--report", "results/report.html"], cwd=smoke)
    assert r.returncode == 0, r.stderr[-3000:]
    html = (smoke / "results/report.html").read_text(errors="replace")
    for name in ("table1.csv", "table4.csv", "pairing.csv", "score_vs_nfe.png", "trajectory-rho7-steps4.png",
                 "rho90-steps3.png"):
        assert name in html, name


@pytest.mark.slow
def test_smoke_noop_rerun_and_single_stage_rerun(smoke):
    r = run(["--cores", "2", "--configfile", "config/smoke.yaml"], cwd=smoke)
    assert r.returncode == 0 and "Nothing to be done" in (r.stdout + r.stderr)
    r = run(["-n", "--configfile", "config/smoke.yaml", "-R", "sample"], cwd=smoke)
    jobs = job_counts(r.stdout)
    # 16 samples of the grid + 8 shards of generated images for the discriminators (4 base models x 2)
    assert "train" not in jobs and "prepare_dataset" not in jobs and jobs["sample"] == 24
    before = (smoke / "results/smoke/models/aot-cond/network.pt").stat().st_mtime_ns
    r = run(["--cores", "2", "--configfile", "config/smoke.yaml", "-R", "tables"], cwd=smoke)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (smoke / "results/smoke/models/aot-cond/network.pt").stat().st_mtime_ns == before


DEFAULT_TEXT = (ROOT / "config/config.yaml").read_text()
PARITY = [  # (config file text or None = no --configfile, --config entries); each is valid or not in both
    (None, ["guidance={enabled: false}"]),
    (None, ["train={kimg: .nan}"]),
    (None, ["sample={grid: [{rho: 7, steps: 18.0}]}"]),
    (None, ["experiment=2024"]),  # Snakemake types a top-level value: an int, not a name
    (None, ["dataset={subset: 15}"]),
    (DEFAULT_TEXT.replace("experiment: digits ", "experiment: '2024' "), []),  # quoted in a file: a name
    (DEFAULT_TEXT.replace("lr: 0.002", "lr: 1e-4"), []),  # YAML 1.1 reads 1e-4 as text, in a file
    (DEFAULT_TEXT.replace("batch: 128 ", "batch: '64' "), []),
    (DEFAULT_TEXT.replace("  kimg: 40 ", "  kimg: 40\n  kimg: 80 "), []),  # a duplicated key
    (DEFAULT_TEXT.replace("source: digits ", "source: cifar10 "), []),  # test_fraction is unused there
    ("train: {kimg: -3}\n", []),  # a partial file: every missing top-level key, and how to merge it
    (DEFAULT_TEXT.replace("\ntrain:\n", "\ntrain:\n  <<: {seed: 3}\n", 1), []),  # a YAML merge key is YAML
]


def test_check_config_and_the_workflow_agree(tmp_path):
    """One typing rule for every entry point: the same verdict and the same line from both."""
    for i, (text, extra) in enumerate(PARITY):
        files = []
        if text is not None:
            (tmp_path / f"c{i}.yaml").write_text(text)
            files = ["--configfile", str(tmp_path / f"c{i}.yaml")]
        flags = files + (["--config", *extra] if extra else [])
        cli = subprocess.run([sys.executable, "-m", "aot", "check-config", *flags], cwd=ROOT, env=ENV,
                             capture_output=True, text=True)
        smk = run(["-n"] + flags)
        ours = [line.removeprefix("error: ") for line in cli.stderr.splitlines() if "config error" in line]
        theirs = [line for line in (smk.stdout + smk.stderr).splitlines() if line.startswith("config error")]
        assert (cli.returncode == 0) == (smk.returncode == 0) == (not ours), (text, extra, cli.stderr, theirs)
        assert ours == theirs, (i, ours, theirs)
    assert i == len(PARITY) - 1


def test_conda_env_pins_what_pyproject_pins():
    """workflow/envs/aot.yaml (--sdm conda) installs the very requirements of pyproject.toml, then this checkout."""
    import tomllib

    import yaml

    env = yaml.safe_load((ROOT / "workflow/envs/aot.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert pip == [*project["dependencies"], "-e ../.."]
    assert f"python={project['requires-python'].removeprefix('>=')}" in env["dependencies"]
    assert project["license"] == {"text": "MIT"} and (ROOT / "LICENSE").read_text().startswith("MIT License\n")


def test_imagenet_dry_run_samples_with_edms_stochastic_sampler():
    """config/imagenet64-cond.yaml: the 256-step setting runs EDM's stochastic sampler (its keys in the job's
    --settings), every deterministic setting without them; the ADM networks train with fp16."""
    r = run(["-n", "-p", "--forceall", "--configfile", "config/imagenet64-cond.yaml"])
    assert r.returncode == 0, r.stderr[-2000:]
    samples = [ln for ln in r.stdout.splitlines() if "-m aot sample " in ln]
    stochastic = [ln for ln in samples if "/rho7-steps256-churn40/" in ln]
    assert len(samples) == 2 * 11 * 3 and len(stochastic) == 2 * 3  # 2 models x 11 settings x 3 FID-50k shards
    churn = dict(S_churn=40, S_min=0.05, S_max=50, S_noise=1.003)
    assert all(job_settings(ln).items() >= churn.items() for ln in stochastic)
    assert all(not job_settings(ln).keys() & churn.keys() and "--S-" not in ln
               for ln in samples if ln not in stochastic)
    specs = train_specs(r.stdout)
    assert set(specs) == {"edm-cond", "aot-cond"}
    assert all(s["arch"] == "adm" and s["fp16"] and s["loss_scaling"] == 100 for s in specs.values())

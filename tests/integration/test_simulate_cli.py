"""``variant-autoscaler simulate`` and ``profiles`` as processes: the JSON the issue specifies, the PNGs, both
trace formats recognised from content, malformed rows reported with their line, bad flags refused."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from autoscaler import traces

SHIPPED = Path(traces.__file__).parent / "data" / "traces"
AZURE = SHIPPED / "azure_llm_2023_conv.csv"
MOONCAKE = SHIPPED / "mooncake_conversation_trace.jsonl"


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "autoscaler.cli", *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd, check=False)


def test_simulate_prints_one_json_object_with_every_policy_asked_for_and_writes_the_plots(tmp_path):
    proc = cli("simulate", "--trace", str(AZURE), "--duration", "120", "--policy", "clairvoyant-model",
               "--policy", "static-peak,hpa-tuned", "--json", "--out", str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["trace"] == str(AZURE)
    assert list(report["policies"]) == ["clairvoyant-model", "static-peak", "hpa-tuned"]
    for entry in report["policies"].values():
        assert {"gpu_hours", "cost", "ttft_attainment", "itl_attainment", "rejected", "scale_actions"} <= set(entry)
        assert 0.0 <= entry["ttft_attainment"] <= 1.0
    assert report["policies"]["clairvoyant-model"]["interval_s"] == 15.0
    scenario = report["scenario"]
    assert (scenario["profile"], scenario["slo_ttft_s"], scenario["slo_itl_s"]) == ("llama-3.1-8b/h100", 1.0, 0.05)
    for png in report["plots"].values():
        assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_simulate_reads_mooncake_jsonl_and_applies_the_scenario_flags(tmp_path):
    proc = cli("simulate", "--trace", str(MOONCAKE), "--duration", "120", "--policy", "clairvoyant-model", "--json",
               "--no-plots", "--slo-ttft", "10", "--slo-itl", "0.1", "--speed-up", "2", "--node-delay", "30",
               "--pod-delay", "5", "--profile", "llama-3.1-70b/h100-tp8", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    scenario = report["scenario"]
    assert scenario["profile"] == "llama-3.1-70b/h100-tp8" and scenario["gpus_per_replica"] == 8
    assert (scenario["slo_ttft_s"], scenario["slo_itl_s"], scenario["speed_up"]) == (10.0, 0.1, 2.0)
    assert (scenario["node_delay_s"], scenario["pod_delay_s"]) == (30.0, 5.0)
    assert report["duration_s"] <= 60.0  # two minutes at twice the rate
    assert "plots" not in report and not list(tmp_path.glob("*.png"))


def test_simulate_without_json_prints_a_table(tmp_path):
    proc = cli("simulate", "--trace", str(AZURE), "--duration", "60", "--policy", "static-peak", "--no-plots",
               cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "static-peak" in proc.stdout and "GPU-h" in proc.stdout


@pytest.mark.parametrize(("content", "suffix", "where"), [
    pytest.param('{"timestamp": 0, "input_length": 10, "output_length": 5}\n'
                 '{"timestamp": 10, "input_length": 10, "output_length": 5}\n'
                 '{"timestamp": 20, "input_length": "ten", "output_length": 5}\n', ".jsonl", ":3:", id="mooncake"),
    pytest.param("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.0000000,374,44\n"
                 "yesterday,10,1\n", ".csv", ":3:", id="azure"),
])
def test_a_malformed_row_is_reported_with_its_line(tmp_path, content, suffix, where):
    path = tmp_path / f"bad{suffix}"
    path.write_text(content)
    proc = cli("simulate", "--trace", str(path), "--policy", "clairvoyant-model", "--no-plots", cwd=tmp_path)
    assert proc.returncode == 2
    assert f"{path}{where}" in proc.stderr


@pytest.mark.parametrize(("args", "message"), [
    pytest.param(("--policy", "magic"), "unknown policy 'magic'", id="unknown-policy"),
    pytest.param(("--profile", "gpt-9/tpu"), "unknown profile 'gpt-9/tpu'", id="unknown-profile"),
    pytest.param(("--slo-ttft", "0"), "slo_ttft_s", id="zero-slo"),
    pytest.param(("--speed-up", "-1"), "speed_up", id="negative-speed-up"),
    pytest.param(("--load-scale", "0"), "load_scale must be a finite number > 0", id="zero-load-scale"),
    pytest.param(("--resample", "-1"), "resample must be >= 0", id="negative-resample"),
    pytest.param(("--engine-error", "prefill=-1"), "--engine-error", id="negative-engine-error"),
])
def test_bad_flags_are_refused_in_one_line_with_exit_2(tmp_path, args, message):
    proc = cli("simulate", "--trace", str(AZURE), "--duration", "30", "--no-plots", *args, cwd=tmp_path)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_rate_scale_is_refused_naming_speed_up_and_load_scale(tmp_path):
    proc = cli("simulate", "--trace", str(AZURE), "--duration", "30", "--no-plots", "--rate-scale", "2",
               cwd=tmp_path)
    assert proc.returncode == 2
    assert "--speed-up" in proc.stderr and "--load-scale" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_load_scale_multiplies_the_requests_and_keeps_the_duration(tmp_path):
    first_minute = traces.window(traces.read_trace(AZURE), start_s=0.0, end_s=60.0)
    proc = cli("simulate", "--trace", str(AZURE), "--duration", "60", "--policy", "static-peak", "--json",
               "--no-plots", "--load-scale", "4", "--node-delay", "0", "--pod-delay", "0", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["requests"] == 4 * len(first_minute)
    assert report["duration_s"] == pytest.approx(first_minute.duration_s, abs=1e-3)
    assert (report["scenario"]["load_scale"], report["scenario"]["speed_up"]) == (4.0, 1.0)


def test_a_gzip_compressed_azure_trace_is_replayed_like_the_plain_one(tmp_path):
    packed = tmp_path / "azure.csv.gz"
    packed.write_bytes(gzip.compress(AZURE.read_bytes()))
    runs = [cli("simulate", "--trace", str(path), "--duration", "60", "--policy", "static-peak", "--json",
                "--no-plots", "--node-delay", "0", "--pod-delay", "0", cwd=tmp_path) for path in (AZURE, packed)]
    assert all(run.returncode == 0 for run in runs), [run.stderr for run in runs]
    plain, gz = (json.loads(run.stdout) for run in runs)
    assert gz["requests"] == plain["requests"] > 0
    assert gz["policies"]["static-peak"]["attainment"] == plain["policies"]["static-peak"]["attainment"]


def test_a_truncated_gzip_trace_is_refused_in_one_line_with_exit_2(tmp_path):
    data = gzip.compress(AZURE.read_bytes())
    cut = tmp_path / "cut.csv.gz"
    cut.write_bytes(data[: len(data) // 2])
    proc = cli("simulate", "--trace", str(cut), "--duration", "60", "--no-plots", cwd=tmp_path)
    assert proc.returncode == 2
    assert f"{cut}: truncated or corrupt gzip file" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


@pytest.mark.parametrize("as_json", [pytest.param(True, id="json"), pytest.param(False, id="table")])
def test_resample_reports_each_policys_mean_and_90_percent_interval(tmp_path, as_json):
    proc = cli("simulate", "--trace", str(AZURE), "--duration", "180", "--policy", "static-peak", "--no-plots",
               "--resample", "3", "--seed", "1", "--slo-ttft", "0.25", "--node-delay", "0", "--pod-delay", "0",
               *(("--json",) if as_json else ()), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    if not as_json:
        assert "3 block-bootstrap resamples" in proc.stdout and "GPU-h 90%" in proc.stdout
        return
    report = json.loads(proc.stdout)
    assert (report["scenario"]["resample"], report["scenario"]["seed"]) == (3, 1)
    spread = report["policies"]["static-peak"]["resample"]
    assert set(spread) == {"gpu_hours", "attainment", "ttft_attainment", "itl_attainment"}
    for value in spread.values():
        assert value["p5"] <= value["mean"] <= value["p95"]
    # Three different draws of three minutes: the attainment (TTFT 0.25 s is tight) differs between them.
    assert spread["attainment"]["p5"] < spread["attainment"]["p95"]


def test_then_splices_sped_up_traces_after_the_first_into_a_surge(tmp_path):
    base = cli("simulate", "--trace", str(AZURE), "--duration", "60", "--policy", "clairvoyant-model", "--json",
               "--no-plots",
               cwd=tmp_path)
    part = tmp_path / "minute.csv"
    # The same minute, as a file of its own: the spliced parts are read whole.
    lines = AZURE.read_text().splitlines()
    header, rows = lines[0], lines[1:]
    first = json.loads(base.stdout)["requests"]
    part.write_text("\n".join([header, *rows[:first]]) + "\n")
    surge = cli("simulate", "--trace", str(part), "--policy", "clairvoyant-model", "--json", "--no-plots",
                "--then", f"{part}@3", "--then", str(part), cwd=tmp_path)
    assert surge.returncode == 0, surge.stderr
    report = json.loads(surge.stdout)
    assert report["requests"] == 3 * first
    # The middle part arrives three times as fast: the whole lasts about 1 + 1/3 + 1 of the part.
    assert report["duration_s"] == pytest.approx(json.loads(base.stdout)["duration_s"] * (2 + 1 / 3), rel=0.05)
    assert report["scenario"]["then"] == [f"{part}@3", f"{part}@1"]


@pytest.mark.parametrize(("value", "message"), [
    pytest.param("x.csv@fast", "the speed-up N after '@' must be a number", id="speed-up-not-a-number"),
    pytest.param("x.csv@0", "the speed-up N must be a finite number > 0", id="zero-speed-up"),
])
def test_a_bad_spliced_part_is_refused_naming_the_flag(tmp_path, value, message):
    proc = cli("simulate", "--trace", str(AZURE), "--duration", "30", "--no-plots", "--then", value, cwd=tmp_path)
    assert proc.returncode == 2
    assert "--then" in proc.stderr and message in proc.stderr


def test_a_missing_trace_file_is_refused(tmp_path):
    proc = cli("simulate", "--trace", str(tmp_path / "nope.csv"), "--no-plots", cwd=tmp_path)
    assert proc.returncode == 2 and "nope.csv" in proc.stderr


def test_profiles_lists_the_profile_names_one_a_line(tmp_path):
    proc = cli("profiles", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    names = proc.stdout.splitlines()
    assert names == sorted(names)
    assert {"llama-3.1-8b/h100", "llama-3.1-70b/h100-tp4"} <= set(names)
    assert all(" " not in name for name in names)

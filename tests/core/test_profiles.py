"""Performance profiles on disk: the repository's files load, and broken files fail naming file and field."""

from pathlib import Path

import pytest
import yaml

from autoscaler.errors import ConfigError
from autoscaler.perf.profile import PerformanceProfile
from autoscaler.perf.profiles import (
    COEFFICIENT_PATHS,
    MODELS_DIR_ENV,
    default_models_dir,
    default_profiles,
    load_profile,
    load_profiles,
)

REPO_PROFILES = Path(__file__).resolve().parents[2] / "models" / "profiles"

REQUIRED = [
    "llama-3.1-8b/h100",
    "llama-3.1-8b/a100",
    "llama-3.1-8b/l40s",
    "llama-3.1-70b/h100-tp4",
    "llama-3.1-70b/h100-tp8",
    "llama-3.1-70b/a100-tp4",
    "llama-3.1-70b/a100-tp8",
]


def valid_document() -> dict:
    return yaml.safe_load((REPO_PROFILES / "llama-3.1-8b_h100.yaml").read_text())


def write(tmp_path: Path, document: dict | str, name: str = "x.yaml") -> Path:
    path = tmp_path / name
    path.write_text(document if isinstance(document, str) else yaml.safe_dump(document))
    return path


def set_path(document: dict, dotted: str, value) -> dict:
    *parents, leaf = dotted.split(".")
    node = document
    for key in parents:
        node = node[key]
    if value is _DELETE:
        del node[leaf]
    else:
        node[leaf] = value
    return document


_DELETE = object()


# --- the repository's profiles -----------------------------------------------------------------------------------


def test_repository_profiles_cover_the_required_models_and_accelerators():
    profiles = default_profiles(environ={})
    assert set(REQUIRED) <= set(profiles)
    assert all(isinstance(p, PerformanceProfile) for p in profiles.values())


@pytest.mark.parametrize("name", REQUIRED)
def test_repository_profile_is_physically_plausible(name):
    p = default_profiles(environ={})[name]
    # A decode step for one sequence lies between 3 ms and 60 ms on these GPUs; prefill of 1k tokens under 1 s.
    assert 0.003 < p.decode_step_time(1, 1000) < 0.060
    assert p.prefill_time(1024) < 1.0
    # Batching helps: 64 sequences cost far less than 64 single steps.
    assert p.decode_step_time(64, 1000) < 0.5 * 64 * p.decode_step_time(1, 1000)
    assert p.kv_capacity_tokens >= p.max_num_batched_tokens
    assert p.cost_per_replica_hour == pytest.approx(p.cost_per_gpu_hour * p.gpus_per_replica)


def test_more_tensor_parallelism_is_faster_per_step_and_costs_more():
    profiles = default_profiles(environ={})
    for gpu in ("h100", "a100"):
        tp4, tp8 = profiles[f"llama-3.1-70b/{gpu}-tp4"], profiles[f"llama-3.1-70b/{gpu}-tp8"]
        assert tp8.decode_step_time(32, 2000) < tp4.decode_step_time(32, 2000)
        assert tp8.kv_capacity_tokens > tp4.kv_capacity_tokens
        assert tp8.cost_per_replica_hour == pytest.approx(2 * tp4.cost_per_replica_hour)


def test_h100_is_faster_than_a100_which_is_faster_than_l40s():
    p = default_profiles(environ={})
    steps = [p[f"llama-3.1-8b/{g}"].decode_step_time(16, 1000) for g in ("h100", "a100", "l40s")]
    assert steps == sorted(steps)


def test_every_repository_file_gives_a_provenance_for_every_number():
    for path in sorted(REPO_PROFILES.glob("*.yaml")):
        provenance = yaml.safe_load(path.read_text())["source"]["provenance"]
        assert set(COEFFICIENT_PATHS) <= set(provenance), path.name


# --- where the profiles are found -------------------------------------------------------------------------------


def test_models_dir_defaults_to_the_repository():
    assert default_models_dir(environ={}) == REPO_PROFILES.parent


def test_env_override_points_at_another_models_dir(tmp_path):
    (tmp_path / "profiles").mkdir()
    document = set_path(valid_document(), "name", "tiny/gpu")
    write(tmp_path / "profiles", document)
    profiles = default_profiles(environ={MODELS_DIR_ENV: str(tmp_path)})
    assert list(profiles) == ["tiny/gpu"]


def test_env_override_to_a_missing_dir_names_the_variable(tmp_path):
    with pytest.raises(ConfigError) as info:
        default_profiles(environ={MODELS_DIR_ENV: str(tmp_path / "nowhere")})
    assert MODELS_DIR_ENV in str(info.value) and "nowhere" in str(info.value)


# --- broken files ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        pytest.param("decode.alpha", 0, "decode.alpha: Input should be greater than 0", id="zero-alpha"),
        pytest.param("decode.gamma", -1e-8, "decode.gamma: Input should be greater than or equal to 0",
                     id="negative-gamma"),
        pytest.param("prefill.b", "fast", "prefill.b: Input should be a valid number", id="non-numeric"),
        pytest.param("kv_cache.capacity_tokens", _DELETE, "kv_cache.capacity_tokens: Field required",
                     id="missing-kv"),
        pytest.param("decode.alfa", 0.01, "decode.alfa: Extra inputs are not permitted", id="typo"),
        pytest.param("name", "Llama 8B", "name: String should match pattern", id="bad-name"),
        pytest.param("gpus_per_replica", 0, "gpus_per_replica: Input should be greater than 0", id="no-gpus"),
        pytest.param("cost.usd_per_gpu_hour", -2, "cost.usd_per_gpu_hour: Input should be greater than 0",
                     id="negative-price"),
        pytest.param("source.references", [], "source.references: List should have at least 1 item",
                     id="no-references"),
        pytest.param("source.provenance.decode.alpha", _DELETE, "source.provenance: Value error, no provenance",
                     id="number-without-provenance"),
        pytest.param("kv_cache.capacity_tokens", 1000, "kv_cache: Value error, capacity_tokens (1000) is below", id="kv-below-batch"),
    ],
)
def test_broken_profile_fails_naming_file_and_field(tmp_path, path, value, message):
    document = valid_document()
    if path.startswith("source.provenance."):
        del document["source"]["provenance"][path.removeprefix("source.provenance.")]
    else:
        set_path(document, path, value)
    file = write(tmp_path, document)
    with pytest.raises(ConfigError) as info:
        load_profile(file)
    assert str(info.value).startswith(f"{file}: ")
    assert message in str(info.value)


def test_provenance_must_say_how_a_number_was_obtained(tmp_path):
    document = valid_document()
    document["source"]["provenance"]["decode.alpha"] = "I think so"
    with pytest.raises(ConfigError) as info:
        load_profile(write(tmp_path, document))
    assert "decode.alpha must start with one of measured/fitted/derived/assumed" in str(info.value)


def test_invalid_yaml_names_the_line(tmp_path):
    file = write(tmp_path, "name: a/b\ndecode:\n  alpha: [1,\n")
    with pytest.raises(ConfigError) as info:
        load_profile(file)
    assert str(info.value).startswith(f"{file}:4: invalid YAML")


def test_a_list_at_the_top_level_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_profile(write(tmp_path, "- 1\n- 2\n"))


def test_duplicate_names_fail_naming_both_files(tmp_path):
    write(tmp_path, valid_document(), "a.yaml")
    write(tmp_path, valid_document(), "b.yaml")
    with pytest.raises(ConfigError) as info:
        load_profiles(tmp_path)
    assert "b.yaml: name:" in str(info.value) and "a.yaml" in str(info.value)


def test_an_empty_directory_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="no \\*.yaml profiles"):
        load_profiles(tmp_path)


def test_loaded_profile_carries_every_coefficient(tmp_path):
    document = valid_document()
    document["name"] = "m/g"
    p = load_profiles(write(tmp_path, document).parent)["m/g"]
    assert (p.prefill_a, p.prefill_b, p.prefill_c) == tuple(document["prefill"][k] for k in "abc")
    assert (p.decode_alpha, p.decode_beta, p.decode_gamma) == tuple(
        document["decode"][k] for k in ("alpha", "beta", "gamma"))
    assert (p.kv_capacity_tokens, p.max_num_seqs, p.max_num_batched_tokens) == (
        document["kv_cache"]["capacity_tokens"], document["scheduler"]["max_num_seqs"],
        document["scheduler"]["max_num_batched_tokens"])
    assert (p.startup_s, p.node_startup_s, p.cost_per_gpu_hour) == (
        document["startup"]["pod_s"], document["startup"]["node_s"], document["cost"]["usd_per_gpu_hour"])

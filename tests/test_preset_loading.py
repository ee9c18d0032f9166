"""Loading a damaged preset: one ValueError naming the file, before anything in it is parsed.

Each test copies the shipped mlp_quick into tmp_path and damages it one way (issue 18's cases).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from exphil_cli import exphil

from exphil_keras import policy, zoo

DUMMY = Path(zoo.__file__).resolve().parent / "datasets" / "slippi_windows" / "dummy_data"


@pytest.fixture(autouse=True)
def no_hang():
    """A load that opened /dev/zero or a FIFO would block or read forever: fail instead."""

    def hung(*_):
        raise TimeoutError("loading the preset hung")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(120)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def preset(tmp_path):
    folder = tmp_path / "mlp_quick"
    shutil.copytree(zoo.SHIPPED / "mlp_quick", folder)
    return folder


def edit_metadata(folder, change):
    metadata = json.loads((folder / "metadata.json").read_text())
    change(metadata)
    (folder / "metadata.json").write_text(json.dumps(metadata))


def rehash(folder):
    """Damage that metadata.json was updated for: the hashes match, the file is still bad."""

    def update(metadata):
        metadata["sha256"] = {name: zoo.sha256(folder / name) for name in metadata["sha256"]}

    edit_metadata(folder, update)


def refused(handle, *phrases, load=zoo.load):
    with pytest.raises(ValueError) as error:
        load(handle)
    message = str(error.value)
    assert "\n" not in message, message  # the CLI prints it as one line
    for phrase in phrases:
        assert phrase in message, message
    return message


def test_the_copy_loads_and_equals_the_shipped_preset(preset):
    inputs, _ = policy.example_batch(zoo.load("mlp_quick"), 2)
    shipped = zoo.load("mlp_quick", compile=False).predict(inputs, verbose=0)
    copy = policy.PolicyModel.from_preset(str(preset)).predict(inputs, verbose=0)
    for head, logits in shipped.items():
        np.testing.assert_array_equal(logits, copy[head])
    assert zoo.markov1(preset).counts.keys() == shipped.keys()


def test_a_fifo_is_refused_without_being_opened(preset):
    (preset / "model.weights.h5").unlink()
    os.mkfifo(preset / "model.weights.h5")
    refused(preset, f"{preset / 'model.weights.h5'}: a FIFO, not a regular file")


def test_a_link_out_of_the_folder_is_refused(preset):
    (preset / "model.weights.h5").unlink()
    (preset / "model.weights.h5").symlink_to("/dev/zero")
    refused(preset, "model.weights.h5: a link to /dev/zero, outside the preset folder")


def test_a_link_inside_the_folder_is_followed(preset):
    (preset / "model.weights.h5").rename(preset / "weights.h5")
    (preset / "model.weights.h5").symlink_to("weights.h5")
    assert zoo.load(preset).count_params() == zoo.info(preset)["parameters"]


def test_a_dangling_link_or_a_folder_is_refused(preset):
    (preset / "model.weights.h5").unlink()
    (preset / "model.weights.h5").symlink_to("gone.h5")
    refused(preset, "model.weights.h5: cannot be read")
    (preset / "model.weights.h5").unlink()
    (preset / "model.weights.h5").mkdir()
    refused(preset, "model.weights.h5: a folder, not a regular file")


def test_a_missing_file_is_named(preset):
    (preset / "config.json").unlink()
    refused(preset, f"{preset / 'config.json'}: missing from the preset folder")


@pytest.mark.parametrize("name", ["/dev/zero", "../../outside.txt", "notes.txt"])
def test_a_hash_list_naming_other_files_is_refused(preset, name):
    outside = preset.parent.parent / "outside.txt"
    outside.write_text("not part of the preset")
    (preset / "notes.txt").write_text("not part of the preset either")
    edit_metadata(preset, lambda m: m["sha256"].update({name: zoo.sha256(outside)}))
    message = refused(preset, "metadata.json: sha256 names", name, load=zoo.info)
    assert zoo.sha256(outside) not in message  # nothing outside the preset was hashed or shown


def test_an_empty_hash_list_is_refused(preset):
    edit_metadata(preset, lambda m: m.update(sha256={}))
    refused(preset, "sha256 does not cover config.json, model.weights.h5", load=zoo.info)


def test_a_partial_hash_list_is_refused(preset):
    edit_metadata(preset, lambda m: m["sha256"].pop("markov1.json"))
    refused(preset, "sha256 does not cover markov1.json", load=zoo.info)


def test_invalid_json_is_named(preset):
    (preset / "metadata.json").write_text('{"name": "mlp_quick",')
    refused(preset, f"{preset / 'metadata.json'}: not valid JSON", load=zoo.info)
    shutil.copy(zoo.SHIPPED / "mlp_quick" / "metadata.json", preset)
    (preset / "config.json").write_bytes(b"\xff\xfe not json")
    rehash(preset)
    refused(preset, f"{preset / 'config.json'}: not valid JSON")


def test_a_missing_key_is_named(preset):
    edit_metadata(preset, lambda m: m.pop("window"))
    refused(preset, "metadata.json: missing key(s) window", load=zoo.info)
    shutil.copy(zoo.SHIPPED / "mlp_quick" / "metadata.json", preset)
    config = json.loads((preset / "config.json").read_text())
    del config["registered_name"]
    (preset / "config.json").write_text(json.dumps(config))
    rehash(preset)
    refused(preset, "config.json: not a PolicyModel config")


def test_a_changed_file_is_refused_before_it_is_parsed(preset):
    (preset / "markov1.json").write_text('{"buttons": "no tables"}')
    refused(preset, "markov1.json: sha256", "does not match metadata.json", load=zoo.markov1)
    rehash(preset)
    refused(preset, f"{preset / 'markov1.json'}: not Markov-1 tables", load=zoo.markov1)


@pytest.mark.parametrize("damage", ["truncated", "corrupt", "another model's"])
def test_bad_weights_whose_hash_matches_are_named(preset, damage):
    weights = preset / "model.weights.h5"
    data = weights.read_bytes()
    if damage == "truncated":
        weights.write_bytes(data[: len(data) // 2])
    elif damage == "corrupt":
        weights.write_bytes(bytes(4096) + data[4096:])
    else:
        shutil.copy(zoo.SHIPPED / "gru_standard" / "model.weights.h5", weights)
    rehash(preset)
    refused(preset, f"{weights}: not readable as this model's weights")


def test_hf_handles_load_from_the_hub_cache_and_name_the_missing_file(preset, tmp_path):
    """hf:// through huggingface_hub itself, offline, from a cache laid out as it lays one out
    (snapshot links into blobs/); nothing can be downloaded here."""
    repo = tmp_path / "hub" / "models--exphil--mlp_quick"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "blobs").mkdir()
    (repo / "snapshots" / commit).mkdir(parents=True)
    for file in preset.iterdir():
        blob = repo / "blobs" / zoo.sha256(file)
        shutil.copy(file, blob)
        (repo / "snapshots" / commit / file.name).symlink_to(f"../../blobs/{blob.name}")
    script = (
        "from exphil_keras import zoo; print(zoo.load('hf://exphil/mlp_quick').count_params());"
        "zoo.info('hf://exphil/not_uploaded')"
    )
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=300)  # fmt: skip
    assert done.stdout.split() == [str(zoo.info(preset)["parameters"])], done.stderr[-2000:]
    assert "ValueError: hf://exphil/not_uploaded/metadata.json: cannot fetch it" in done.stderr


def test_a_malformed_kaggle_handle_is_named():
    refused("kaggle://exphil/mlp_quick", "kaggle://exphil/mlp_quick/metadata.json", load=zoo.info)


def test_save_replaces_a_preset_and_leaves_no_unhashed_file(preset, tmp_path):
    model = zoo.load(preset, compile=False)
    metadata = zoo.info(preset)
    written = zoo.save(model, preset, metadata, zoo.training(preset))  # no Markov-1 tables now
    assert not (preset / "markov1.json").exists() and zoo.markov1(preset) is None
    assert written == zoo.info(preset) and set(written["sha256"]) == {
        "config.json",
        "model.weights.h5",
        "training.json",
    }
    assert sorted(p.name for p in preset.iterdir()) == [
        "config.json", "metadata.json", "model.weights.h5", "training.json"
    ]  # fmt: skip


def test_a_trained_model_is_saved_without_its_optimizer_state(preset):
    """A compiled, trained model's weights file would hold Adam's slots too (3x the weights)."""
    model = zoo.load(preset)  # compiled
    inputs, targets = policy.example_batch(model, 2)
    model.train_on_batch(inputs, targets)
    weights = model.get_weights()
    zoo.save(model, preset, zoo.info(preset), zoo.training(preset))
    with h5py.File(preset / "model.weights.h5") as saved:
        assert "optimizer" not in saved and "layers" in saved
    for saved, trained in zip(zoo.load(preset).get_weights(), weights, strict=True):
        np.testing.assert_array_equal(saved, trained)


def test_the_cli_names_the_file_in_one_line_and_exits_2(preset):
    (preset / "model.weights.h5").unlink()
    os.mkfifo(preset / "model.weights.h5")
    done = exphil("eval", "--model", preset, "--replays", DUMMY, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.splitlines() == [
        f"exphil eval: error: {preset / 'model.weights.h5'}: a FIFO, not a regular file; "
        "refusing to open it (--debug shows more)"
    ]

"""Training configs (trajbench.run.config): presets and ``--set`` overrides, the text sequence a config sets,
and bad formulations or datasets refused before training starts."""

import json

import numpy as np
import pytest

from trajbench.cli import main
from trajbench.run.config import RunError, resolve_config
from trajbench.train import train


def test_presets_resolve_and_set_overrides():
    config = resolve_config("smoke", ["lr=3e-4", "depth=3"], formulation="rf/lognorm(0.3, 0.8)", dataset="synth-imagenet")
    assert config.lr == 3e-4 and config.depth == 3 and config.formulation == "rf/lognorm(0.30, 0.80)"
    assert resolve_config("study").lr == 1e-4 and resolve_config("study").warmup_steps == 1000
    for bad, message in [(["lr=fast"], "expected float"), (["nope=1"], "key one of"), (["eval_every=7"], "multiple")]:
        with pytest.raises(RunError, match=message):
            resolve_config("smoke", bad)
    with pytest.raises(RunError, match="unknown preset"):
        resolve_config("huge")


def test_text_words_sets_the_text_sequence_and_older_run_folders_still_match(finished_run, tiny_run):
    from trajbench.run.build import build_text_encoders
    from trajbench.run.config import model_config

    short = tiny_run(text_words=5)
    assert model_config(short).max_text_tokens == 10
    tokens, _ = build_text_encoders(short).encode(["a photo of a circle", "a red star to the left of a ring"])
    assert tokens.shape[1] == 10 and np.any(tokens[1, 4]) and np.any(tokens[1, 9])  # long caption cut at 5 words
    # a config.json written before text_words existed is the same config (the field had its default)
    run, summary = finished_run
    path = run / "config.json"
    record = json.loads(path.read_text())
    saved = path.read_text()
    try:
        del record["config"]["text_words"]
        path.write_text(json.dumps(record))
        assert train(tiny_run(), run, progress=False) == summary
    finally:
        path.write_text(saved)


def test_unknown_formulation_or_dataset_fails_before_training(tmp_path, capsys):
    code = main(["train", "--formulation", "rf/lognorm(0.0)", "--dataset", "synth-cc12m", "--out", str(tmp_path / "a")])
    assert code == 2 and "takes 2 parameter" in capsys.readouterr().err
    code = main(["train", "--formulation", "rf", "--dataset", "imagenet", "--out", str(tmp_path / "b")])
    assert code == 2 and "unknown dataset" in capsys.readouterr().err

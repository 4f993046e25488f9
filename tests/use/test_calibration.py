"""`ftcompare calibrate` (ftcompare.use.calibration): a study's throughput measured on this
device, stored with the device's name for ftcompare.plan.cost."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
import yaml
from specs import make_spec

from ftcompare.contract import hardware
from ftcompare.plan import cost
from ftcompare.use import calibration

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_a_few_steps_give_training_and_evaluation_tokens_per_second(tiny_roberta):
    spec = make_spec(tiny_roberta, "lora")
    train, step_s, evaluate = calibration.time_one(spec, length=32, steps=2, device=torch.device("cpu"))
    assert train > 0 and step_s >= 0 and evaluate > 0


def test_each_model_and_method_family_of_the_study_is_stored_with_the_device(tiny_roberta, tmp_path, monkeypatch):
    study = tmp_path / "study"
    shutil.copytree(REPO_ROOT / ".test", study, ignore=shutil.ignore_patterns("results", ".snakemake"))
    config = yaml.safe_load((study / "config" / "config.yaml").read_text())
    config["tasks"] = {"sst2": config["tasks"]["sst2"]}
    config["model"]["name_or_path"] = str(tiny_roberta)
    config["training"]["max_length"] = 64
    (study / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.chdir(tmp_path)
    out = calibration.calibrate(study, steps=1, device="cpu")
    assert out == study / "results" / "calibration.json"
    found = cost.read_calibration(out)
    assert {(f.model, f.family, f.stage) for f in found} == {
        (str(tiny_roberta), family, stage) for family in ("full fine-tuning", "low-rank") for stage in cost.STAGES
    }
    assert {f.device for f in found} == {hardware(torch.device("cpu"))["device"]}
    # The plan now reads them for this device, in place of the assumed figures.
    costs = cost.StudyCosts({}, seeds=[0], settings={}, results=study / "results")
    assert costs.device == hardware(torch.device("cpu"))["device"]
    assert costs.throughput.rate(
        model=str(tiny_roberta), family="low-rank", device=costs.device, stage="train"
    ).source == ("calibrated")

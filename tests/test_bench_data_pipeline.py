"""bench/data_pipeline.py on the first examples of the real training files: it runs, and cnbert's
features and the Hugging Face baseline's are of the sizes the two preprocessings must give."""
import json
import subprocess
import sys

from conftest import REPO, data_file


def test_benchmark_builds_both_sides_features_for_every_task(tmp_path):
    data = data_file("lcqmc/lcqmc_train.tsv").parents[1]
    out = tmp_path / "pipeline.json"
    proc = subprocess.run([sys.executable, "bench/data_pipeline.py", f"--data={data}", "--limit=200", "--repeats=1",
                           f"--json={out}"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = {r["task"]: r for r in json.loads(out.read_text())["results"]}
    assert set(results) == {"cmrc2018", "msra_ner", "lcqmc"} and "| baseline / cnbert |" in proc.stdout
    for result in results.values():
        assert result["examples"] == 200 and result["cnbert"]["seconds"] > 0 and result["baseline"]["seconds"] > 0
    # one row per pair, padded alike to the longest; one per sentence unless cnbert windows a long one
    assert results["lcqmc"]["cnbert"]["rows"] == results["lcqmc"]["baseline"]["rows"] == 200
    assert results["lcqmc"]["cnbert"]["width"] == results["lcqmc"]["baseline"]["width"] <= 128
    assert results["msra_ner"]["baseline"]["rows"] == 200 <= results["msra_ner"]["cnbert"]["rows"]
    # CMRC 2018 passages overflow 512 pieces: windows, the two strides set to advance about alike
    cmrc = results["cmrc2018"]
    assert cmrc["cnbert"]["width"] == cmrc["baseline"]["width"] == 512
    assert 200 < cmrc["baseline"]["rows"] and abs(cmrc["cnbert"]["rows"] - cmrc["baseline"]["rows"]) < 0.1 * 200

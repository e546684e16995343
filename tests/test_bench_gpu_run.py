"""bench/gpu_run.sh runs once per GPU lease, where a mistake costs device time: its step handling
and its compute-sanitizer step are run here against a stand-in sanitizer that records how it was
called and answers as the real one does (exit 3 on errors, given --error-exitcode 3), or exits as
EXIT_<tool> says (a check that could not run)."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_run.sh"

STAND_IN = """#!/usr/bin/env bash
tool=memcheck
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do [ "${args[i]}" = --tool ] && tool=${args[i + 1]}; done
echo "$*" >> "$CALLS"
exit_var=EXIT_$tool
[ -z "${!exit_var:-}" ] || exit "${!exit_var}"
rc_var=RC_$tool
echo "========= ERROR SUMMARY: ${!rc_var:-0} errors"
[ "${!rc_var:-0}" = 0 ] || exit 3
"""


def run_script(tmp_path: Path, *steps: str, **env: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    sanitizer = tmp_path / "compute-sanitizer"
    sanitizer.write_text(STAND_IN)
    sanitizer.chmod(0o755)
    calls = tmp_path / "calls.txt"
    out = tmp_path / "out"
    # The script calls python3: let that be this interpreter (make test runs .venv/bin/python unactivated).
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    environment = {**os.environ, "PATH": path, "OUT": str(out), "COMPUTE_SANITIZER": str(sanitizer),
                   "CALLS": str(calls), **env}
    run = subprocess.run(["bash", str(SCRIPT), *steps], cwd=ROOT, env=environment, capture_output=True, text=True,
                         timeout=120)
    return run, calls.read_text().splitlines() if calls.exists() else []


def test_sanitize_runs_each_tool_on_cnbert_kernels_and_fails_on_errors(tmp_path):
    run, calls = run_script(tmp_path, "sanitize", RC_racecheck="2")
    assert run.returncode == 1, run.stdout + run.stderr
    assert [call.split()[1] for call in calls] == ["memcheck", "racecheck", "initcheck", "synccheck"]
    for call in calls:
        assert "--kernel-name kns=cnbert --error-exitcode 3" in call
        assert call.endswith("python3 bench/gpu_kernels.py --sections check --check-set paths "
                             f"--json {tmp_path / 'out'}/sanitize_{call.split()[1]}.json")  # comes back with $OUT
    assert ("--padding 512" in calls[0]) and not any("--padding" in call for call in calls[1:])
    assert "memcheck: no errors" in run.stdout and "racecheck: ERRORS" in run.stdout
    assert "synccheck: no errors" in run.stdout and "4 of 4 tools ran to the end" in run.stdout
    log = (tmp_path / "out" / "sanitize.log").read_text()
    assert "== racecheck\n========= ERROR SUMMARY: 2 errors" in log
    assert run.stdout.rstrip().endswith("sanitize exit 1")


def test_sanitize_skips_tools_that_cannot_finish_before_the_deadline(tmp_path):
    run, calls = run_script(tmp_path, "sanitize", GPU_RUN_SECONDS="60")
    assert run.returncode == 0, run.stdout + run.stderr
    assert calls == []
    assert run.stdout.count("skipped") == 4
    assert "next: GPU_RUN_SECONDS=<the call's limit - 30> bash bench/gpu_run.sh build sanitize" in run.stdout
    assert "0 of 4 tools ran to the end" in run.stdout and run.stderr == ""


def test_unknown_step_is_refused_before_anything_runs(tmp_path):
    run, calls = run_script(tmp_path, "sanitize", "benchmark")
    assert run.returncode == 2
    assert "unknown step 'benchmark'" in run.stdout
    assert calls == []


def test_a_failed_build_stops_the_steps_after_it(tmp_path):
    # With no GPU visible, reading the card's compute capability (the build's first act) fails.
    run, calls = run_script(tmp_path, "build", "sanitize", TORCH_CUDA_ARCH_LIST="", CUDA_VISIBLE_DEVICES="")
    assert run.returncode == 1
    assert run.stdout.rstrip().endswith("build exit 1")
    assert calls == []


def test_tests_step_fails_without_cuda_kernels_instead_of_passing_on_skips(tmp_path):
    run, _ = run_script(tmp_path, "tests", CUDA_VISIBLE_DEVICES="")
    assert run.returncode == 1
    assert "no CUDA kernels: " in run.stderr
    assert run.stdout.rstrip().endswith("tests exit 1")
    assert not (tmp_path / "out" / "cuda_tests.log").exists()


def test_sanitize_stops_when_a_tool_could_not_run_the_check(tmp_path):
    # e.g. a device or driver the tool refuses: the next tool would fail the same way
    run, calls = run_script(tmp_path, "sanitize", EXIT_memcheck="255")
    assert run.returncode == 1
    assert [call.split()[1] for call in calls] == ["memcheck"]
    assert "memcheck: exit 255 (sanitize.log); the other tools are not run" in run.stdout


def test_sanitize_goes_on_after_a_failed_value_check(tmp_path):
    # the check exits 1 on a wrong value, and the tool passes that on when it finds nothing itself:
    # the other tools still run, as they may explain the wrong value
    run, calls = run_script(tmp_path, "sanitize", EXIT_memcheck="1")
    assert run.returncode == 1
    assert [call.split()[1] for call in calls] == ["memcheck", "racecheck", "initcheck", "synccheck"]
    assert "memcheck: no sanitizer errors, but the check failed" in run.stdout
    assert "4 of 4 tools ran to the end" in run.stdout


def test_a_benchmark_that_cannot_import_what_it_times_fails_before_the_build(tmp_path):
    # the GPU machine's own packages: here transformers is made unimportable
    fake = tmp_path / "site" / "transformers"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('no transformers on this machine')\n")
    run, _ = run_script(tmp_path, "build", "bench", PYTHONPATH=str(tmp_path / "site"))
    assert run.returncode == 1
    assert "the benchmark cannot import what it times" in run.stdout and "no transformers" in run.stdout
    assert not (tmp_path / "out" / "build.log").exists()  # nothing was built


def test_tests_step_runs_the_kernel_tests_on_a_machine_without_tensorflow(tmp_path):
    """The GPU machine has no TensorFlow, which the suite's conftest otherwise insists on. Here
    TensorFlow is hidden from every python3 the step starts, and python3 -c (the step's check for
    CUDA kernels) is answered yes: the CUDA tests must be collected (and, without a GPU, skip)."""
    hide = tmp_path / "hide_tensorflow"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text("import sys\nsys.modules['tensorflow'] = None  # import fails, find_spec is None\n")
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "python3").write_text(f'#!/usr/bin/env bash\n[ "$1" = -c ] && exit 0\nexec {sys.executable} "$@"\n')
    (fake_bin / "python3").chmod(0o755)
    run, _ = run_script(tmp_path, "tests", PYTHONPATH=f"{hide}{os.pathsep}{ROOT}",
                        PATH=f"{fake_bin}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    log = (tmp_path / "out" / "cuda_tests.log").read_text()
    assert run.returncode == 0, run.stdout + log
    assert "needs TensorFlow" not in log and " skipped" in log

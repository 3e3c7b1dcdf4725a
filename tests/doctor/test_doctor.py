"""bevctl doctor: the runner (isolation, timeouts), the report (JSON schema 1, exit codes) and the CLI surface."""

import json
import subprocess
import sys
import time

import pytest

from bevctl import doctor
from bevctl.doctor import Check
from bevctl.doctor.checks_python import arch_supported
from bevctl.errors import UsageError
from tests.conftest import ROOT, run_cli


def test_hanging_check_is_timed_out_and_others_still_report():
    def hang(ctx):
        time.sleep(60)

    def fine(ctx):
        return "ok", "fine", None

    start = time.monotonic()
    report = doctor.run_checks(None, checks=[Check("x.hang", hang, "hangs", timeout=0.5), Check("x.fine", fine, "ok")])
    assert time.monotonic() - start < 5
    hung = report.get("x.hang")
    assert hung.status == "fail" and "timed out after 0.5s" in hung.message and hung.fix
    assert report.get("x.fine").status == "ok"
    assert report.exit_code == 1 and not report.ok and [r.id for r in report.failed] == ["x.hang"]


def test_crashing_check_is_one_failed_line():
    def boom(ctx):
        raise RuntimeError("driver exploded\nwith a second line")

    report = doctor.run_checks(None, checks=[Check("x.boom", boom, "crashes")])
    result = report.get("x.boom")
    assert result.status == "fail"
    assert result.message == "check crashed: RuntimeError: driver exploded with a second line"
    assert "\n" not in result.message


def test_unusable_failure_exits_3():
    report = doctor.run_checks(None, checks=[Check("x.dead", lambda ctx: ("fail", "no docker", "start it"), "d",
                                                   unusable_on_fail=True)])
    assert report.unusable and report.exit_code == 3


def test_report_round_trips_through_json():
    report = doctor.run_checks(None, checks=[Check("x.w", lambda ctx: ("warn", "careful", "do this"), "w")])
    data = json.loads(report.to_json())
    assert data["schema"] == 1 and data["ok"] is True and data["exit_code"] == 0
    again = doctor.Report.from_dict(data)
    assert again.results == report.results


def test_select_by_id_category_glob_and_unknown():
    ids = [c.id for c in doctor.select(doctor.CHECKS, ["docker.daemon", "data", "weights.*"])]
    assert ids[0] == "docker.daemon" and "data.tables" in ids and "weights.pretrained" in ids
    with pytest.raises(UsageError) as caught:
        doctor.select(doctor.CHECKS, ["dokcer"])
    assert "did you mean 'docker'" in caught.value.one_line()


def test_checks_do_not_import_torch_in_process():
    code = ("import sys; from bevctl import doctor\n"
            "r = doctor.run_checks('demo', ids=['python', 'gpu', 'launcher'])\n"
            "print('TORCH=' + str('torch' in sys.modules), r.get('python.torch').status)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert "TORCH=False ok" in result.stdout, result.stdout + result.stderr


@pytest.mark.parametrize("cap,archs,ok", [
    ((9, 0), ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86"], False),  # H100 on a cu113-era build
    ((9, 0), ["sm_80", "sm_86", "sm_90"], True),
    ((8, 9), ["sm_80", "sm_86"], True),  # same major, lower minor cubin runs
    ((9, 0), ["sm_80", "compute_80"], True),  # PTX JIT
    ((8, 0), ["sm_86"], False),
])
def test_arch_supported(cap, archs, ok):
    assert arch_supported(cap, archs) is ok


def test_cli_json_schema_and_check_selection():
    result = run_cli("doctor", "--phase", "demo", "--check", "disk", "--check", "python.version", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["schema"] == 1 and data["kind"] == "doctor" and data["phase"] == "demo"
    assert [c["id"] for c in data["checks"]] == ["python.version", "disk.runs", "disk.space"]
    for item in data["checks"]:
        assert set(item) == {"id", "category", "status", "message", "fix", "seconds", "unusable"}
        assert item["status"] in ("ok", "warn", "fail", "skipped")


def test_cli_list_checks():
    result = run_cli("doctor", "--list-checks")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert len(lines) == len(doctor.CHECKS)
    assert lines[0].startswith("python.version")
    data = json.loads(run_cli("doctor", "--list-checks", "--json").stdout)
    assert data["schema"] == 1 and {c["id"] for c in data["checks"]} == {c.id for c in doctor.CHECKS}


def test_cli_unknown_check_is_usage_error():
    result = run_cli("doctor", "--check", "dokcer")
    assert result.returncode == 2
    assert "did you mean 'docker'" in result.stderr and "Traceback" not in result.stderr


def test_demo_is_green_for_a_new_user(tmp_path):
    """As after the README set-up: the demo's synthetic data does not exist yet, no GPU, no docker daemon."""
    # cwd is an empty folder: like a fresh clone where nobody ran the demo yet (data/ and runs/ do not exist)
    result = run_cli("doctor", "--phase", "demo", "-v", cwd=tmp_path,
                     env={"DOCKER_HOST": f"unix://{tmp_path}/no.sock", "BEVCTL_IN_CONTAINER": "0"})
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "will be generated" in out
    assert "✗" not in out
    assert "[" in out and "s]" in out  # -v shows timings
    assert "docker.daemon" in out and "the phase runs locally" in out

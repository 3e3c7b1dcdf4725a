import subprocess
import sys

from tests.conftest import ROOT, run_cli

COMMANDS = ["build", "shell", "doctor", "check-ckpt", "start", "stop", "runs", "watch", "tb", "data"]


def test_help_lists_every_command():
    result = run_cli("--help")
    assert result.returncode == 0
    for name in COMMANDS:
        assert name in result.stdout


def test_every_command_has_help():
    for name in COMMANDS:
        result = run_cli(name, "--help")
        assert result.returncode == 0, (name, result.stderr)
        assert "Usage" in result.stdout


def test_version():
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("bevctl ")


def test_help_does_not_import_heavy_modules():
    code = (
        "import sys; from bevctl.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'pydantic', 'docker', 'numpy', 'spconv') if m in sys.modules]\n"
        "print('HEAVY=' + ','.join(heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert "HEAVY=\n" in result.stdout, result.stdout


def test_unknown_command_is_a_usage_error():
    result = run_cli("no-such-command")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def test_click_usage_errors_are_one_line_with_a_fix():
    for args, says in ((["stop", "-rf"], "No such option"), (["data", "synth", "--scenes", "abc"], "--scenes"),
                       (["stop"], "Missing argument")):
        result = run_cli(*args)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, (args, result.stderr)
        assert says in lines[0] and "fix: see `bevctl" in lines[0] and "Traceback" not in result.stderr


def test_help_keeps_bracketed_words_and_labels_no_flag_with_its_type():
    texts = {name: run_cli(name, "--help").stdout for name in COMMANDS}
    assert "[y/N]" in texts["start"]  # rich markup used to eat "[y/N]" as a tag
    assert "[default: the phase's, bevctl:latest]" in texts["shell"] and "HOST:CONTAINER[:ro]" in texts["shell"]
    assert "KEY=VALUE" in texts["build"] and "[default: bevctl:latest]" in texts["build"]
    for name, text in texts.items():
        assert "<bool>" not in text, name
        assert "<list[str]>" not in text and "<str>" not in text.split("Options:")[0], name  # arguments: metavar only


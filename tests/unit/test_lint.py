"""The linter and the type checker, clean: part of the fast loop, so that
a change that breaks either fails before it is committed (``ruff.toml``,
``mypy.ini``)."""
import os
import subprocess
import sys

from tests.support.paths import ROOT

BIN = os.path.dirname(sys.executable)


def _run(tool: str, *args: str) -> subprocess.CompletedProcess:
  return subprocess.run([os.path.join(BIN, tool), *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=600)


def test_ruff_finds_nothing():
  result = _run('ruff', 'check', '--no-cache', '.')
  assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_finds_nothing_in_the_product_code():
  result = _run('mypy')
  assert result.returncode == 0, result.stdout + result.stderr
  assert 'Success: no issues found' in result.stdout

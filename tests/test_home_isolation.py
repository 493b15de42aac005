"""The suite runs in a temporary $STILTS_HOME that shares only the user's default model (issue 26):
what the tests install, measure or download never lands in the user's own cache."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from conftest import USER_HOME_ENV, changed, snapshot

from stilts.home import models_dir, stilts_home


def _user_home() -> Path:
    return Path(os.environ[USER_HOME_ENV])


def test_the_session_home_is_temporary_and_not_the_users():
    home = stilts_home()
    assert home != _user_home()
    assert home.resolve().is_relative_to(Path(tempfile.gettempdir()).resolve())


def test_the_default_model_is_the_users_own(default_model_dir):
    assert default_model_dir == models_dir() / "default"
    assert default_model_dir.resolve() == (_user_home() / "models" / "default").resolve()


def test_route_records_of_test_models_land_in_the_session_home():
    from stilts.encoding import autoroute
    from stilts.manifest import Manifest

    path = autoroute.record_path(Manifest(name="a-test-model", dim=4, max_len=8))
    assert path.parent == stilts_home() / autoroute.RECORD_DIR
    assert not path.resolve().is_relative_to(_user_home().resolve())


def test_child_processes_inherit_the_session_home():
    out = subprocess.run(
        [sys.executable, "-c", "from stilts.home import stilts_home; print(stilts_home())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(out) == stilts_home()


def test_the_check_at_the_end_sees_writes_outside_the_default_model(tmp_path):
    home = tmp_path / "home"
    (home / "models" / "default").mkdir(parents=True)
    (home / "cpu-routes").mkdir()
    before = snapshot(home)
    (home / "models" / "default" / "model.onnx").write_bytes(b"shared")  # allowed
    assert changed(before, snapshot(home)) == []
    (home / "cpu-routes" / "tiny-0123.json").write_text("{}")
    assert "cpu-routes/tiny-0123.json" in changed(before, snapshot(home))
    (home / "models" / "tiny").mkdir()
    assert "models/tiny" in changed(before, snapshot(home))

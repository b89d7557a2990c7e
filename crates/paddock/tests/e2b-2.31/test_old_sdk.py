"""E2B Python SDK 2.31: it validates the API key's form (`e2b_` and lowercase hex) before
sending anything, so a Paddock key must be usable in that form.

Run by crates/paddock/tests/e2b.rs with `E2B_API_KEY` set to the `e2b_` form of a key.
"""

import os

import pytest

from e2b import Sandbox


def test_this_sdk_refuses_keys_that_are_not_e2b_hex():
    key = os.environ["E2B_API_KEY"]
    assert key.startswith("e2b_")
    with pytest.raises(Exception, match="API key"):
        Sandbox.create(api_key="pdk_" + key[4:], timeout=60)


def test_create_run_files_and_kill_with_the_e2b_form_of_a_key():
    sbx = Sandbox.create(timeout=120, metadata={"sdk": "2.31"})
    try:
        r = sbx.commands.run("echo hi; id -un")
        assert (r.exit_code, r.stdout) == (0, "hi\nuser\n")
        sbx.files.write("/home/user/x.txt", "data")
        assert sbx.files.read("/home/user/x.txt") == "data"
        assert sbx.is_running()
    finally:
        sbx.kill()

"""hwsim.util.memory.keep_freed_memory: a freed large buffer is reused without page faults."""

import subprocess
import sys

import pytest

PROBE = """
import resource, sys, torch
from hwsim.util.memory import keep_freed_memory
applied = keep_freed_memory()
def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.empty(10_000_000).fill_(1.0)  # a 40 MB feature map, freed at once
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
for _ in range(10):  # glibc's aligned allocations settle into a reused block after a few
    faults()
print(applied, sum(faults() for _ in range(3)))
"""


def _probe(env_value):
    import os

    env = dict(os.environ)
    env.pop("HWSIM_MALLOC", None)
    if env_value is not None:
        env["HWSIM_MALLOC"] = env_value
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         check=True, env=env).stdout.split()
    return out[0] == "True", int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_a_freed_feature_map_is_reused_without_page_faults():
    applied, faults = _probe(None)
    if not applied:
        pytest.skip("not glibc")
    assert faults < 1000  # 3 x 40 MB reused from the heap, already mapped
    default, faults_default = _probe("default")
    assert not default
    assert faults_default > 15000  # mapped afresh: a fault per 4 KiB page


def test_the_command_tunes_the_allocator(monkeypatch):
    import hwsim.cli as cli

    calls = []
    monkeypatch.setattr(cli, "keep_freed_memory", lambda: calls.append(1) or True)
    monkeypatch.setattr(cli, "cli", lambda: None)
    cli.main()
    assert calls == [1]

"""The sweep on a two-node Ray cluster started with `ray start` inside a private network
namespace (only its own loopback exists there), trials spread over both nodes. The run uses a
plug-in package that only the driver can import (the nodes were started without it): Ray ships
it to the workers (``resources.ship_plugins``)."""

import csv
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import TINY_RUN
from test_plugins import MODULES_FILE, PLUGIN

ROOT = Path(__file__).resolve().parent.parent

SWEEP = "name: tiny_cluster\nplugins: [tilt_plugin]\n" + TINY_RUN.replace(
    "roles: [system]}", "roles: [system], user: {choice_model: tilted}}"
).replace("type: mlp", "type: narrow_mlp") + """\
resources: {num_env_runners: 0, num_envs_per_env_runner: 1, ship_plugins: true}
stop: {training_iteration: 2}
checkpoint_every: 1
tune:
  search_space:
    algorithm.training.lr: {grid: [0.001, 0.0003]}
  max_concurrent_trials: 2
"""

# Both nodes get one CPU, so two concurrent one-CPU trials must land on different nodes. The
# namespace is the isolation (nothing outside it reaches its loopback), so Ray's token auth,
# which a second `ray start` on one machine trips over, is off inside it.
SCRIPT = """
set -e
# written with $A so that this script's own command line never matches the pkill patterns
A=127.0.0.1:{port}
trap 'pkill -9 -f "address=$A"; pkill -9 -f "server_port=$(echo {port})"; rm -f {temp}/ray_current_cluster' EXIT
export RAY_AUTH_MODE=disabled
unset RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER  # (set by marl-rec's local mode) it would forbid a second node
ip link set lo up
ray start --head --port={port} --num-cpus=1 --include-dashboard=false --disable-usage-stats --temp-dir={temp} \
    >{logs}/head.log 2>&1 || {{ cat {logs}/head.log; exit 1; }}
for try in 1 2 3; do  # a loaded machine can be slow to accept the second node
    ray start --address=$A --num-cpus=1 --disable-usage-stats >{logs}/worker.log 2>&1 && break
    [ $try = 3 ] && {{ cat {logs}/worker.log; exit 1; }}; sleep 3
done
PYTHONPATH={site} {python} -m marl_rec.cli sweep {experiment} --address $A --set results_dir={results}
echo LISTENING; ss -ltn | awk 'NR > 1 {{print $4}}'
"""


def read_default_address():
    path = Path("/tmp/ray/ray_current_cluster")
    return path.read_text() if path.exists() else None


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("unshare") is None or shutil.which("ip") is None, reason="needs unshare and ip")
def test_sweep_on_a_two_node_cluster_in_a_private_network_namespace(tmp_path):
    experiment = tmp_path / "cluster.yaml"
    experiment.write_text(SWEEP)
    package = tmp_path / "site" / "tilt_plugin"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(PLUGIN)
    (package / "modules.py").write_text(MODULES_FILE)
    address_before = read_default_address()
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths have a length limit
    script = SCRIPT.format(port=random.randint(20000, 40000), python=sys.executable, experiment=experiment,
                           results=tmp_path, temp=temp, logs=tmp_path, site=tmp_path / "site")
    try:
        run = subprocess.run(["unshare", "-n", "bash", "-c", script], cwd=ROOT, capture_output=True, text=True,
                             timeout=600)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    # the namespace's cluster wrote its address under its own temp dir, so a later plain
    # ray.init() on this machine does not try to join a cluster that no longer exists
    assert read_default_address() == address_before
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    listening = run.stdout.split("LISTENING", 1)[1].split()
    assert listening and all(addr.rsplit(":", 1)[0] in ("127.0.0.1", "[::ffff:127.0.0.1]", "[::1]")
                             for addr in listening)
    rows = list(csv.DictReader((tmp_path / "tiny_cluster" / "sweep.csv").open()))
    assert len(rows) == 2 and all(r["training_iteration"] == "2" for r in rows)
    assert len({r["node_id"] for r in rows}) == 2  # one trial on each node
